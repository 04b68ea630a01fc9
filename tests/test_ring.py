"""The binding and the Ring: set-up, batched fixed/readv/plain requests,
error mapping, registration fallbacks, and counters that match strace."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import as_nobody, run, run_cat, stats_json, write
from uringtools import ring as ringmod
from uringtools.ring import (OP_READ, OP_READ_FIXED, OP_READV, OP_WRITE_FIXED,
                             Arena, Ring, UringUnavailable, check)
from uringtools.stats import Stats


def reap_all(ring: Ring, n: int) -> dict:
    """Wait until ``n`` completions arrived: user_data -> result."""
    results = {}
    while len(results) < n:
        got = ring.wait(1)
        for i in range(got):
            results[int(ring.cqe_user_data[i])] = int(ring.cqe_res[i])
    return results


def test_binding_smoke() -> None:
    from uringtools._uring import ffi, lib

    assert ffi.sizeof("struct ut_sqe") >= 48
    assert lib.IORING_OP_READ_FIXED != lib.IORING_OP_READ
    with Ring(8) as ring:
        assert ring.entries >= 8 and ring.cq_entries >= ring.entries
        assert ring.fd >= 0
        assert ring.features & lib.IORING_FEAT_NODROP
        assert isinstance(ring.setup_flag_names, list)
        assert ring.stats.setup_flags == ring.setup_flag_names
        assert ring.room == ring.entries


def test_read_fixed_batch(tmp_path: Path) -> None:
    data = os.urandom(4 * 4096 + 100)
    f = write(tmp_path / "f", data)
    fd = os.open(f, os.O_RDONLY)
    try:
        with Ring(16) as ring:
            arena = Arena(5, 4096)
            assert ring.register_arena(arena)
            assert ring.register_file_table(4)
            ref = ring.attach_file(fd)
            assert ref.slot >= 0
            for slot in range(5):
                ring.prep(OP_READ_FIXED, ref.target, arena.addr(slot), 4096,
                          slot * 4096, slot, flags=ref.sqe_flags)
            results = reap_all(ring, 5)
            assert results == {0: 4096, 1: 4096, 2: 4096, 3: 4096, 4: 100}
            got = b"".join(bytes(arena.slot_view(s, results[s])) for s in range(5))
            assert got == data
            ring.flush_op_counts()
            assert ring.stats.ops == {"read_fixed": 5}
            assert ring.stats.sqes == ring.stats.cqes == 5
            assert 1 <= ring.stats.enters <= 5
            ring.detach_file(ref)
    finally:
        os.close(fd)


def test_write_fixed_then_readv(tmp_path: Path) -> None:
    from uringtools._uring import ffi

    out = tmp_path / "out"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with Ring(8) as ring:
            arena = Arena(3, 1000)
            assert ring.register_arena(arena)
            for slot in range(3):
                arena.view[slot * 1000:(slot + 1) * 1000] = bytes([65 + slot]) * 1000
            for slot in (2, 0, 1):   # out of order, explicit offsets
                ring.prep(OP_WRITE_FIXED, fd, arena.addr(slot), 1000, slot * 1000,
                          slot)
            assert reap_all(ring, 3) == {0: 1000, 1: 1000, 2: 1000}
            assert out.read_bytes() == b"A" * 1000 + b"B" * 1000 + b"C" * 1000
            # readv into two buffers of another arena
            dest = Arena(2, 1500)
            iov = ffi.new("struct iovec[2]")
            for i in range(2):
                iov[i].iov_base = ffi.cast("void *", dest.addr(i))
                iov[i].iov_len = 1500
            ring.keep(iov)
            ring.prep(OP_READV, fd, int(ffi.cast("uintptr_t", iov)), 2, 0, 77)
            assert reap_all(ring, 1) == {77: 3000}
            assert bytes(dest.view) == out.read_bytes()
    finally:
        os.close(fd)


def test_plain_read_short_and_eof(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"0123456789")
    fd = os.open(f, os.O_RDONLY)
    try:
        with Ring(8) as ring:
            arena = Arena(2, 8)   # not registered: plain reads
            ring.prep(OP_READ, fd, arena.addr(0), 8, 4, 1)
            ring.prep(OP_READ, fd, arena.addr(1), 8, 100, 2)
            assert reap_all(ring, 2) == {1: 6, 2: 0}
            assert bytes(arena.slot_view(0, 6)) == b"456789"
            # offset -1: the file position, which moves
            ring.prep(OP_READ, fd, arena.addr(0), 3, -1, 3)
            assert reap_all(ring, 1) == {3: 3}
            assert os.lseek(fd, 0, os.SEEK_CUR) == 3
    finally:
        os.close(fd)


@pytest.mark.parametrize("code,exc", [(errno.ENOENT, FileNotFoundError),
                                      (errno.EISDIR, IsADirectoryError),
                                      (errno.EAGAIN, BlockingIOError),
                                      (errno.EACCES, PermissionError)])
def test_check_maps_errno(code: int, exc: type) -> None:
    with pytest.raises(exc) as info:
        check(-code, "some/name")
    assert info.value.errno == code
    assert info.value.filename == "some/name"
    assert info.value.strerror == os.strerror(code)
    assert check(0) == 0 and check(12345, "x") == 12345


def test_cqe_errors_through_check(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    r, w = os.pipe()
    try:
        with Ring(8) as ring:
            arena = Arena(2, 64)
            ring.prep(OP_READ, dfd, arena.addr(0), 64, 0, 1)
            # an empty pipe with RWF_NOWAIT: -EAGAIN instead of waiting
            ring.prep(OP_READ, r, arena.addr(1), 64, -1, 2,
                      op_flags=os.RWF_NOWAIT)
            results = reap_all(ring, 2)
            with pytest.raises(IsADirectoryError) as info:
                check(results[1], str(d))
            assert info.value.filename == str(d)
            with pytest.raises(BlockingIOError):
                check(results[2], "pipe")
    finally:
        os.close(dfd)
        os.close(r)
        os.close(w)


def test_setup_refused_raises_unavailable() -> None:
    with pytest.raises(UringUnavailable) as info:
        Ring(8, setup_flags=0xFFFFFFFF)
    assert isinstance(info.value, OSError)
    assert info.value.hint().startswith("io_uring unavailable")


def test_submit_counts_without_wait() -> None:
    from uringtools.ring import OP_NOP

    stats = Stats()
    with Ring(4, stats=stats) as ring:
        for i in range(10):   # more than the SQ holds: prep submits on its own
            ring.prep(OP_NOP, -1, 0, 0, 0, i)
        results = reap_all(ring, 10)
        assert sorted(results) == list(range(10))
        assert set(results.values()) == {0}
        assert stats.sqes == stats.cqes == 10
        assert ring.in_flight == 0
        assert stats.max_in_flight <= 10
    ring.close()   # twice is fine


@pytest.mark.parametrize("call", ["_queue", "_reap"])
def test_signal_right_after_a_ring_call_keeps_the_count(
        monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """A KeyboardInterrupt raised the moment the C call that queues (or
    reaps) returns, where a signal's handler runs: the count in flight still
    matches the kernel, so a clean-up that submits and drains gets every CQE
    once and then stops (it used to send the SQEs again, or wait forever)."""
    from uringtools.ring import OP_NOP

    real = getattr(ringmod, call)
    raised = []

    def interrupted(*args: object) -> int:
        n = real(*args)
        if not raised:
            raised.append(n)
            raise KeyboardInterrupt
        return n

    stats = Stats()
    with Ring(16, stats=stats) as ring:
        for i in range(6):
            ring.prep(OP_NOP, -1, 0, 0, 0, i)
        monkeypatch.setattr(ringmod, call, interrupted)
        with pytest.raises(KeyboardInterrupt):
            ring.wait(6)
        assert raised
        lost = raised[0] if call == "_reap" else 0   # reaped, never seen
        assert ring.in_flight == 6 - lost
        assert ring.room == ring.entries
        # the clean-up: submit what is queued, drain what is in flight
        ring.submit()
        seen = []
        while ring.in_flight:
            n = ring.wait(1)
            seen += [int(ring.cqe_user_data[i]) for i in range(n)]
        assert len(seen) == 6 - lost and len(set(seen)) == len(seen)
        ring.prep(OP_NOP, -1, 0, 0, 0, 99)   # no stray CQE comes before it
        assert ring.wait(1) == 1 and ring.cqe_user_data[0] == 99
        assert ring.in_flight == 0


# -- registration fallbacks ---------------------------------------------------

def test_register_arena_fallback_as_nobody(shared_tmp: Path) -> None:
    data = os.urandom(300000)
    f = write(shared_tmp / "f", data)
    f.chmod(0o644)
    res = run(as_nobody(["cat", "--stats-format", "json", "--engine", "uring", str(f)],
                        prefix=["prlimit", "--memlock=65536"]))
    assert res.returncode == 0, res.stderr
    assert res.stdout == data
    stats = stats_json(res.stderr)
    assert stats["registered_buffers"] is False
    assert "Cannot allocate memory" in stats["registered_buffers_note"]
    # without registered buffers no *_fixed request may be made
    assert stats["ops"].get("read_fixed", 0) == stats["ops"].get("write_fixed", 0) == 0
    assert stats["sqes"] == stats["cqes"] > 0
    assert stats["bytes_read"] == stats["bytes_written"] == len(data)


def test_register_arena_fallback_without_ipc_lock(tmp_path: Path) -> None:
    """Root without CAP_IPC_LOCK is accounted like anyone else."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    f = write(tmp_path / "f", os.urandom(200000))
    res = run(["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock",
               "prlimit", "--memlock=65536", sys.executable, "-m", "uringtools",
               "cat", "--stats-format", "json", "--block-size", "64K", str(f)])
    assert res.stdout == f.read_bytes() and res.returncode == 0
    stats = stats_json(res.stderr)
    assert stats["registered_buffers"] is False
    assert "RLIMIT_MEMLOCK" in stats["registered_buffers_note"]


def test_large_arena_on_huge_pages() -> None:
    """An arena of 2 MiB or more (uring-hash's 4 x 1 MiB) is private memory
    advised for transparent huge pages: registering it pins a few huge
    pages, not a page fault per 4 KiB. Smaller arenas are left alone."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = re.search(r"\[(\w+)\]", thp.read_text()).group(1) if thp.exists() else "never"
    big, small = Arena(4, 1 << 20), Arena(4, 128 << 10)
    ring = Ring(8)
    try:
        assert ring.register_arena(big)
        smaps = Path("/proc/self/smaps").read_text()
        for arena, want in ((big, mode != "never"), (small, False)):
            at = smaps.index(f"{arena.base:x}-")
            entry = smaps[at:smaps.index("VmFlags", at)]
            assert " rw-p " in entry.splitlines()[0]       # private, not shmem
            eligible = int(re.search(r"THPeligible:\s+(\d)", entry).group(1))
            assert eligible == want, entry
        # the kernel fills the huge pages like any others
        assert big.view[:4] == b"\0\0\0\0"
    finally:
        ring.close()


def test_register_file_table_fallback_low_nofile(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"payload" * 100)
    code = f"""
import os, sys
from uringtools.ring import Ring, Arena, OP_READ
ring = Ring(8)
ok = ring.register_file_table(64)
fd = os.open({str(f)!r}, os.O_RDONLY)
ref = ring.attach_file(fd)
arena = Arena(1, 4096)
ring.prep(OP_READ, ref.target, arena.addr(0), 4096, 0, 1, flags=ref.sqe_flags)
n = ring.wait(1)
print(ok, ref.slot, ring.cqe_res[0], ring.stats.registered_files_note)
sys.stdout.write(bytes(arena.slot_view(0, ring.cqe_res[0])).decode() + "\\n")
"""
    res = run(["prlimit", "--nofile=32", sys.executable, "-c", code])
    assert res.returncode == 0, res.stderr
    first, payload = res.stdout.decode().splitlines()
    assert first == "False -1 700 Too many open files"
    assert payload == "payload" * 100


def test_uring_cat_under_low_nofile(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"abc\n" * 5000)
    res = run(["prlimit", "--nofile=16", *run_cat.__globals__["cat_cmd"](
        ["--stats-format", "json", str(f), str(f)], "uring")])
    assert res.returncode == 0 and res.stdout == f.read_bytes() * 2
    assert stats_json(res.stderr)["bytes_written"] == 40000


# -- counters -----------------------------------------------------------------

@pytest.mark.parametrize("opts", [["--block-size", "4K", "--queue-depth", "2"],
                                  ["--queue-depth", "8"], ["-n", "--block-size", "8K"]])
def test_enters_match_strace(tmp_path: Path, opts: list) -> None:
    f = write(tmp_path / "f", os.urandom(600000))
    trace = tmp_path / "trace"
    res = run(["strace", "-f", "-c", "-o", str(trace), "-e", "trace=io_uring_enter",
               *run_cat.__globals__["cat_cmd"](["--stats-format", "json", *opts,
                                                str(f), "-"], "uring")],
              input=b"tail\n" * 1000)
    assert res.returncode == 0, res.stderr
    stats = stats_json(res.stderr)
    match = re.search(rb"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?io_uring_enter",
                      trace.read_bytes(), re.M)
    assert match, trace.read_text()
    assert stats["enters"] == int(match.group(1))
    assert stats["sqes"] == stats["cqes"] == sum(stats["ops"].values())
    assert stats["sqes"] >= stats["enters"] - stats["enter_retries"] - 2


def test_queue_packed_matches_prep(tmp_path: Path) -> None:
    import struct

    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 64)
    fd = os.open(src, os.O_RDONLY)
    try:
        with Ring(8) as ring:
            arena = Arena(2, 4096)
            packed = b"".join(
                struct.pack(ringmod.PACKED_SQE, OP_READ, 0, 0, fd, 4096, 0,
                            arena.addr(slot), slot * 4096, 0, 0, 0, 100 + slot)
                for slot in range(2))
            ring.queue_packed(packed, 2)
            results = reap_all(ring, 2)
            ring.flush_op_counts()
            assert results == {100: 4096, 101: 4096}
            assert bytes(arena.slot_view(1, 4096)) == src.read_bytes()[4096:8192]
            assert ring.stats.ops == {"read": 2} and ring.stats.sqes == 2
            with pytest.raises(ValueError):
                ring.queue_packed(packed[:-1], 2)
    finally:
        os.close(fd)


def test_helper_ring_does_not_describe_shared_stats() -> None:
    stats = Stats()
    with Ring(8, stats=stats) as main:
        with Ring(8, stats=stats, setup_flags=0, describe=False) as helper:
            assert helper.register_file_table(4)
            helper.prep(ringmod.OP_NOP, 0, 0, 0, 0, 1)
            helper.wait(1)
        assert stats.setup_flags == main.setup_flag_names
        assert stats.registered_files_note == ""   # only the helper registered
        assert stats.sqes == 1 and stats.cqes == 1   # its counters still add up


@pytest.mark.parametrize("spec", ["read:short", "read:bogus:2", "nope:eio:1",
                                  "read:eio:0", "write:short:x"])
def test_fault_plan_rejects_bad_rules(spec: str) -> None:
    with pytest.raises(ValueError):
        ringmod.FaultPlan(spec)


def test_fault_plan_injects_errors_and_short_requests(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 8192)
    fd = os.open(src, os.O_RDONLY)
    stats = Stats()
    try:
        with Ring(8, stats=stats) as ring:
            ring._faults = ringmod.FaultPlan("read:eio:@1,read:short:@2")
            arena = Arena(2, 4096)
            ring.prep(OP_READ, fd, arena.addr(0), 4096, 0, 1)
            ring.prep(OP_READ, fd, arena.addr(1), 4096, 0, 2)
            results = reap_all(ring, 2)
    finally:
        os.close(fd)
    assert results == {1: -errno.EIO, 2: 2048}
    assert stats.extra["faults_injected"] == 2
    with pytest.raises(OSError) as info:
        check(results[1], "src")
    assert info.value.errno == errno.EIO


def _iowq_bounded(ring: Ring) -> int:
    """The calling thread's io-wq cap for bounded work, as the kernel has it
    (zeros ask without changing it)."""
    from uringtools._uring import ffi, lib

    values = ffi.new("unsigned[2]", [0, 0])
    assert lib.io_uring_register_iowq_max_workers(ring._ring, values) == 0
    return values[0]


def test_worker_cap_follows_the_ring_that_asks_last() -> None:
    """The cap belongs to the thread's io-wq, shared by its rings (cp -r's
    chain ring wants 1 per other core, the splicer 2): each ring asks
    before use and gets its own again, and a cap already set costs no
    call. In a new thread: a new io-wq, nothing cached."""
    import threading

    failures: list = []

    def body() -> None:
        try:
            _worker_caps()
        except BaseException as exc:   # reported in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(60)
    if failures:
        raise failures[0]


def _worker_caps() -> None:
    chains, splicer = Ring(8, stats=Stats()), Ring(8, stats=Stats())
    try:
        assert chains.limit_workers(1) and _iowq_bounded(chains) == 1
        assert splicer.limit_workers(2) and _iowq_bounded(chains) == 2
        assert chains.limit_workers(1) and _iowq_bounded(splicer) == 1
        calls = []
        real = ringmod.lib

        class Spy:
            def __getattr__(self, name: str):
                if name == "io_uring_register_iowq_max_workers":
                    calls.append(name)
                return getattr(real, name)

        ringmod.lib = Spy()
        try:
            assert chains.limit_workers(1) and splicer.limit_workers(1)
        finally:
            ringmod.lib = real
        assert calls == []
    finally:
        chains.close()
        splicer.close()

"""`uringtools bench`: runs the workloads and reports real measurements."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

URINGTOOLS = str(Path(sys.executable).parent / "uringtools")


def bench(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([URINGTOOLS, "bench", "--dir", str(tmp), *args],
                          capture_output=True, timeout=300)


def test_json_rows_for_every_contender(tmp_path: Path) -> None:
    res = bench("--size", "4M", "--files", "30", "--runs", "2", "--format", "json",
                "--workload", "cat-null", "--workload", "cp-tree",
                "--workload", "hash-big", tmp=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["rows"]
    by = {(r["workload"], r["command"]): r for r in rows}
    assert set(w for w, _ in by) == {"cat-null", "cp-tree", "hash-big"}
    assert ("cat-null", "GNU cat") in by and ("cp-tree", "GNU cp -r") in by
    for (workload, command), row in by.items():
        assert row["runs"] == 2 and row["wall_s"] > 0 and row["cpu_s"] >= 0
        if command.startswith("uring-"):
            # our syscalls come from our own counters: enters for the ring
            assert row["syscalls"] is not None and row["syscalls"] > 0
    assert by[("cat-null", "GNU cat")]["wall_vs_peer"] == 1.0
    # the data directory is removed afterwards
    assert list(tmp_path.iterdir()) == []


def test_markdown_and_cold(tmp_path: Path) -> None:
    res = bench("--size", "2M", "--runs", "1", "--format", "markdown", "--cold",
                "--workload", "cat-pipe", tmp=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout.decode()
    assert "page cache cold" in text
    assert "| cat-pipe | uring-cat |" in text and "| cat-pipe | GNU cat |" in text


def test_bad_size_is_one_line(tmp_path: Path) -> None:
    res = bench("--size", "lots", tmp=tmp_path)
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr and b"--size" in res.stderr


def test_big_copies_are_dropped_after_each_run_trees_kept(tmp_path: Path) -> None:
    """A copy of the big file is removed right after its run (its dirty
    pages would throttle the next runs with write-back); copied trees stay
    until the end (creating files where many were just deleted is slow on
    ext4), then everything goes."""
    from uringtools import benchmark as bm

    workloads, cleanup, _ = bm.build_workloads(str(tmp_path), 2 << 20, 20,
                                               ["cp-big", "cp-tree"])
    try:
        assert [w.name for w in workloads] == ["cp-big", "cp-tree"]
        for workload in workloads:
            bm.run_workload(workload, 1)
            assert all(len(c.runs) == 1 for c in workload.commands)
        left = sorted(p.is_dir() for p in (tmp_path / "dst").iterdir())
        # 3 contenders x (warm-up + 1 run), trees only
        assert left == [True] * 6
    finally:
        cleanup()
    assert not (tmp_path / "dst").exists()


def _one_line(res: subprocess.CompletedProcess) -> str:
    assert b"Traceback" not in res.stderr, res.stderr.decode(errors="replace")
    lines = res.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_unusable_dir_is_one_line(tmp_path: Path) -> None:
    """--dir that does not exist, or lies under a file: GNU's
    'prog: NAME: reason', status 1, nothing made."""
    (tmp_path / "file").write_bytes(b"")
    for bad, reason in ((tmp_path / "nope", "No such file or directory"),
                        (tmp_path / "file" / "sub", "Not a directory")):
        res = subprocess.run([URINGTOOLS, "bench", "--dir", str(bad), "--size", "1M",
                              "--workload", "cat-null", "--runs", "1"],
                             capture_output=True, timeout=60)
        assert res.returncode == 1
        assert _one_line(res) == f"uringtools bench: {bad}: {reason}"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_unwritable_dir_as_nobody(shared_tmp: Path) -> None:
    from conftest import as_nobody

    locked = shared_tmp / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    res = subprocess.run(as_nobody(["bench", "--dir", str(locked), "--size", "1M",
                                    "--workload", "cat-null", "--runs", "1"]),
                         capture_output=True, timeout=60)
    assert res.returncode == 1
    assert _one_line(res) == f"uringtools bench: {locked}: Permission denied"


def test_a_failing_contender_shows_its_own_error() -> None:
    """The message names the command and its error line, not the tail of
    its --stats JSON."""
    from uringtools import benchmark as bm

    code = ("import sys\n"
            "sys.stderr.write('uring-cp: cannot create regular file x: '"
            "'No space left on device\\n')\n"
            "sys.stderr.write('{\"enters\": 3, \"syscalls\": {}, \"pad\": \"' + "
            "'y' * 600 + '\"}\\n')\n"
            "sys.exit(1)\n")
    cmd = bm.Command("uring-cp", [sys.executable, "-c", code], ours=True)
    try:
        bm.run_once(cmd)
    except RuntimeError as exc:
        text = str(exc)
    else:
        raise AssertionError("a failing command was measured")
    assert "\n" not in text
    assert text.endswith("uring-cp: cannot create regular file x: "
                         "No space left on device")
    assert "enters" not in text


def test_out_of_space_while_making_data(tmp_path: Path) -> None:
    """ENOSPC while the data is made (here: no inodes left for the tree):
    one line, and nothing left in --dir."""
    import os

    if os.geteuid() != 0:
        raise AssertionError("this test mounts a tmpfs: run the suite as root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=40", "tmpfs",
                    str(mnt)], check=True)
    try:
        res = bench("--size", "64K", "--files", "100", "--runs", "1",
                    "--workload", "cp-tree", tmp=mnt)
        assert res.returncode == 1
        line = _one_line(res)
        assert line.startswith(f"uringtools bench: {mnt}/")
        assert line.endswith(": No space left on device")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_dir_clean(tmp_path: Path, sig: int) -> None:
    """Ctrl-C or SIGTERM in the middle: the contender running is stopped,
    the data removed, and bench dies of the signal as GNU tools do (130 /
    143 in a shell), without a message."""
    proc = subprocess.Popen(
        [URINGTOOLS, "bench", "--dir", str(tmp_path), "--size", "4M", "--files", "300",
         "--runs", "100", "--workload", "cp-tree"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # wait until the contenders run (a copy of the tree has begun)
        for _ in range(600):
            if any(tmp_path.glob("*/dst/dst*")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no run started")
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -sig, err
    assert err == b"" and out == b""
    assert list(tmp_path.iterdir()) == []
    # no contender goes on writing after bench is gone
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit()
            and str(tmp_path).encode() in _cmdline(p)]
    assert left == []


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_gnu_tools_missing_from_path(tmp_path: Path) -> None:
    """Without GNU cat, cp and sha256sum on PATH, ours are still measured
    (the GNU rows left out, said once each on stderr), not a traceback."""
    import os

    data = tmp_path / "data"
    data.mkdir()
    empty = tmp_path / "bin"
    empty.mkdir()
    res = subprocess.run(
        [URINGTOOLS, "bench", "--dir", str(data), "--size", "1M", "--files", "10",
         "--runs", "1", "--format", "json", "--workload", "cat-pipe",
         "--workload", "cp-big", "--workload", "cp-tree", "--workload", "hash-big"],
        capture_output=True, timeout=120, env=dict(os.environ, PATH=str(empty)))
    assert b"Traceback" not in res.stderr, res.stderr.decode(errors="replace")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["rows"]
    got = {(r["workload"], r["command"]) for r in rows}
    assert got == {("cat-pipe", "uring-cat"), ("cat-pipe", "uring-cat --engine sync"),
                   ("cp-big", "uring-cp"), ("cp-big", "uring-cp --engine sync"),
                   ("cp-tree", "uring-cp -r"), ("cp-tree", "uring-cp -r --engine sync"),
                   ("hash-big", "uring-hash"), ("hash-big", "uring-hash --engine sync"),
                   ("hash-big", "hashlib.file_digest")}
    assert all(r["wall_vs_peer"] is None for r in rows)
    notes = res.stderr.decode().splitlines()
    assert sorted(notes) == sorted(f"uringtools bench: {tool}: not found in PATH; "
                                   f"{label} left out"
                                   for tool, label in (("cat", "GNU cat"),
                                                       ("cp", "GNU cp"),
                                                       ("cp", "GNU cp -r"),
                                                       ("sha256sum", "sha256sum")))
    assert list(data.iterdir()) == []


def _fincore_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                          str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def test_cold_evicts_data_just_written(tmp_path: Path) -> None:
    """--cold's eviction holds right after the data is made: dirty pages
    are written back first (DONTNEED skips them), as fincore confirms, and
    bench's own residency count agrees."""
    from uringtools import benchmark as bm

    big = tmp_path / "big"
    bm.write_file(str(big), 4 << 20)
    bm.make_tree(str(tmp_path / "tree"), 20)
    assert _fincore_bytes(big) > 0 and bm.cached_bytes([str(big)]) > 0
    bm.evict([str(big), str(tmp_path / "tree")])
    assert _fincore_bytes(big) == 0
    assert _fincore_bytes(tmp_path / "tree" / "d0000" / "f000007") == 0
    assert bm.cached_bytes([str(big), str(tmp_path / "tree")]) == 0
    bm.warm([str(big)])
    assert bm.cached_bytes([str(big)]) == _fincore_bytes(big) == 4 << 20


def test_cold_where_the_cache_cannot_be_dropped() -> None:
    """tmpfs keeps its files in the page cache: --cold there would report
    warm numbers as cold, so it is refused in one line."""
    import os
    import shutil
    import tempfile

    shm = Path(tempfile.mkdtemp(prefix="uringtools-test-", dir="/dev/shm"))
    try:
        res = bench("--size", "1M", "--runs", "1", "--cold", "--workload",
                    "cat-null", tmp=shm)
        assert res.returncode == 1
        line = _one_line(res)
        assert line.startswith(f"uringtools bench: --cold: {shm}/"), line
        assert line.endswith("stays in the page cache after eviction "
                             "(tmpfs?); use --dir on a disk file system")
        assert list(shm.iterdir()) == []
    finally:
        shutil.rmtree(shm)
    assert not os.path.exists(shm)


def test_table_into_a_file_is_not_cut(tmp_path: Path) -> None:
    """The rich table written to a file or pipe keeps every label and number
    whole (it was cut to 80 columns: 'uring…' for both our commands)."""
    data = tmp_path / "data"
    data.mkdir()
    res = bench("--size", "1M", "--runs", "1", "--workload", "cat-null", tmp=data)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    assert "…" not in res.stdout.decode()
    row = next(line for line in lines if "uring-cat --engine sync" in line)
    assert "cat-null" in row and " ms " in row and "MiB/s" in row



@pytest.mark.parametrize("size", ["8M", "99999999999999999999G"])
def test_size_beyond_free_space_is_refused_up_front(tmp_path: Path, size: str) -> None:
    """A --size the file system cannot hold is refused before anything is
    written (it wrote until the disk was full)."""
    import os
    import re

    if os.geteuid() != 0:
        raise AssertionError("this test mounts a tmpfs: run the suite as root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                   check=True)
    try:
        res = bench("--size", size, "--runs", "1", "--workload", "hash-big", tmp=mnt)
        assert res.returncode == 1
        line = _one_line(res)
        m = re.fullmatch(f"uringtools bench: {re.escape(str(mnt))}: not enough "
                         r"free space for the data: ([\d,]+) bytes needed, "
                         r"([\d,]+) available", line)
        assert m, line
        needed, available = (int(g.replace(",", "")) for g in m.groups())
        assert needed >= int(size[:-1]) << 20 > available
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_hash_many_has_the_sync_engine_too(tmp_path: Path) -> None:
    """Every workload runs ours with both engines (issue 5): hash-many
    lacked the sync engine's row."""
    res = bench("--size", "4M", "--runs", "1", "--format", "json",
                "--workload", "hash-many", tmp=tmp_path)
    assert res.returncode == 0, res.stderr
    commands = {r["command"] for r in json.loads(res.stdout)["rows"]}
    assert commands == {"uring-hash (4 files)", "uring-hash --engine sync (4 files)",
                        "sha256sum (4 files)", "hashlib.file_digest (4 files)"}


def test_nothing_to_measure_is_an_error(tmp_path: Path) -> None:
    res = bench("--files", "0", "--runs", "1", "--workload", "cp-tree", tmp=tmp_path)
    assert res.returncode == 1 and res.stdout == b""
    assert _one_line(res) == ("uringtools bench: nothing to measure: "
                              "cp-tree needs --files 1 or more")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["table", "json", "markdown"])
def test_report_that_cannot_be_written(tmp_path: Path, fmt: str) -> None:
    """stdout full: GNU's 'write error', status 1 (the table was a
    traceback); stdout closed: refused before measuring (was status 0 and
    the report silently lost)."""
    argv = [URINGTOOLS, "bench", "--dir", str(tmp_path), "--size", "1M", "--runs", "1",
            "--workload", "cat-null", "--format", fmt]
    with open("/dev/full", "w") as full:
        res = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert res.returncode == 1
    assert _one_line(res) == "uringtools bench: write error: No space left on device"
    res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         timeout=120, preexec_fn=lambda: __import__("os").close(1))
    assert res.returncode == 1
    assert _one_line(res) == "uringtools bench: standard output: Bad file descriptor"
    assert list(tmp_path.iterdir()) == []


def test_our_syscalls_count_what_the_peers_count() -> None:
    """A peer's count is /proc/PID/io's syscr + syscw (read- and write-family
    calls only); ours is io_uring_enter plus the same families from our
    counters, not also openat/close/fstatat (which the peers' count lacks)."""
    from uringtools import benchmark as bm

    stats = {"enters": 5, "syscalls": {"openat": 100, "close": 100, "newfstatat": 7,
                                       "read": 3, "write": 2, "pread": 1, "pwrite": 1}}
    assert bm._our_calls(b"uring-cp: x\n" + json.dumps(stats).encode() + b"\n") == 12


@pytest.mark.parametrize("argv", [
    ["cat", "DATA"], ["sha256sum", "DATA"], ["cp", "DATA", "COPY"],
    [sys.executable, "-c", "import hashlib; hashlib.file_digest(open('DATA', 'rb'), 'sha256')"],
], ids=lambda a: Path(a[0]).name)
def test_peer_syscalls_without_reading_its_proc_io(tmp_path: Path, argv) -> None:
    """Another user may not read a finished peer's /proc/PID/io; its count
    is then our own /proc/self/io across its reaping. Both ways, in one
    run (as root, where both can be read), give the same number."""
    from uringtools import benchmark as bm

    data = tmp_path / "data"
    data.write_bytes(b"x" * (3 << 20))
    argv = [str(data) if a == "DATA" else str(tmp_path / "copy") if a == "COPY"
            else a.replace("DATA", str(data)) for a in argv]
    seen = []
    real = bm._proc_io_calls

    def closed(pid: int):
        seen.append(real(pid))    # what root reads, then refuse as for others
        return None

    bm._proc_io_calls = closed
    try:
        got = bm.run_once(bm.Command("peer", argv, ours=False)).syscalls
    finally:
        bm._proc_io_calls = real
    if seen[0] is None:
        pytest.skip("needs root to read a finished child's /proc/PID/io")
    assert got == seen[0] and got > 0


def test_peer_syscalls_as_nobody(shared_tmp: Path) -> None:
    from conftest import as_nobody

    res = subprocess.run(as_nobody(["bench", "--dir", str(shared_tmp), "--size", "2M",
                                    "--workload", "cat-null", "--runs", "1",
                                    "--format", "json"]),
                         capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = {r["command"]: r for r in json.loads(res.stdout)["rows"]}
    # GNU cat reads 2 MiB in 128 KiB reads and writes each: about 32 calls
    assert 30 <= rows["GNU cat"]["syscalls"] < 100, rows["GNU cat"]


def test_stdin_a_directory(tmp_path: Path) -> None:
    """The contenders do not inherit bench's stdin: a directory there
    stopped the Python peer (Python cannot start with one)."""
    import os

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        res = subprocess.run([URINGTOOLS, "bench", "--dir", str(tmp_path), "--size", "1M",
                              "--workload", "hash-big", "--runs", "1", "--format", "json"],
                             stdin=fd, capture_output=True, timeout=120)
    finally:
        os.close(fd)
    assert res.returncode == 0, res.stderr
    commands = {r["command"] for r in json.loads(res.stdout)["rows"]}
    assert "hashlib.file_digest" in commands

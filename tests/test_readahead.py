"""ReadAhead on its own: blocks in file order, re-reads after a short read,
the EOF probe, growth, streams, errors, and a caller's own completions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from uringtools.readahead import K_CALLER, K_READ, KIND_MASK, ReadAhead
from uringtools.ring import OP_NOP, Arena, Ring
from uringtools.stats import Stats

BS = 4096
#: what a drive handed out, the ReadAhead, the counters, blocks per take
Result = Tuple[bytes, ReadAhead, Stats, List[int]]


def read_all(fd: int, *, depth: int = 4, bounded: bool = True,
             run: bool = False, faults: Optional[str] = None,
             monkeypatch: Optional[pytest.MonkeyPatch] = None,
             ) -> Result:
    """Drive a ReadAhead to the end as cat does; return what it handed out."""
    if faults is not None:
        assert monkeypatch is not None
        monkeypatch.setenv("URINGTOOLS_FAULTS", faults)
    stats = Stats()
    out = bytearray()
    counts: List[int] = []
    with Ring(16, stats=stats) as ring:
        arena = Arena(depth, BS)
        ring.register_arena(arena)
        ring.register_file_table(1)
        src = ring.attach_file(fd)
        ra = ReadAhead(ring, arena, src, os.fstat(fd), stats, bounded=bounded)
        while True:
            ra.fill()
            while True:
                first, n, nbytes = ra.take(run)
                if not n:
                    break
                out += arena.slot_view(first, nbytes)
                counts.append(n)
                ra.release(first, n)
            if ra.done and ra.reads == 0:
                break
            ring.prep(OP_NOP, -1, 0, 0, 0, K_CALLER)   # a caller's request
            for i in range(ring.wait(1)):
                ud, res = ring.cqe_user_data[i], ring.cqe_res[i]
                if ud & KIND_MASK == K_READ:
                    ra.complete(ud, res)
                else:
                    assert ud == K_CALLER and res == 0
        ring.detach_file(src)
    return bytes(out), ra, stats, counts


def read_path(path: Path, **kw: Any) -> Result:
    """read_all on a file opened for the purpose."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_all(fd, **kw)
    finally:
        os.close(fd)


@pytest.fixture
def data(tmp_path: Path) -> bytes:
    data = os.urandom(10 * BS + 123)
    (tmp_path / "f").write_bytes(data)
    return data


def test_in_order_with_eof_probe(tmp_path: Path, data: bytes) -> None:
    got, ra, stats, _ = read_path(tmp_path / "f")
    assert got == data and ra.taken == len(data) == stats.bytes_read
    assert ra.failure == 0 and ra.positional and ra.start == 0
    # 11 blocks (the last one short), then the read at the size sees EOF
    assert stats.ops == {"read_fixed": 12, "nop": stats.ops["nop"]}
    assert stats.short_reads == 1


def test_runs_of_full_adjacent_blocks(tmp_path: Path, data: bytes) -> None:
    got, _, _, counts = read_path(tmp_path / "f", run=True)
    assert got == data and max(counts) > 1 and sum(counts) == 11


def test_short_reads_discard_and_reread(
        tmp_path: Path, data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    got, _, stats, _ = read_path(tmp_path / "f", faults="read:short:2",
                                 monkeypatch=monkeypatch)
    assert got == data
    assert stats.short_reads >= 5 and stats.extra["faults_injected"] >= 5


def test_retry_and_error(tmp_path: Path, data: bytes,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    got, _, stats, _ = read_path(tmp_path / "f", faults="read:eintr:3",
                                 monkeypatch=monkeypatch)
    assert got == data and stats.resubmissions >= 3
    got, ra, _, _ = read_path(tmp_path / "f", faults="read:eio:@3",
                              monkeypatch=monkeypatch)
    assert ra.failure == 5 and ra.done     # EIO; the blocks before it came out
    assert data.startswith(got) and len(got) <= 2 * BS


def test_growth_past_the_size(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "g"
    path.write_bytes(data[:BS])
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        path.write_bytes(data)                  # grows after the fstat
        stats = Stats()
        with Ring(16, stats=stats) as ring:
            arena = Arena(4, BS)
            ring.register_arena(arena)
            ra = ReadAhead(ring, arena, ring.attach_file(fd), st, stats)
            out = bytearray()
            while not (ra.done and ra.reads == 0):
                ra.fill()
                first, n, nbytes = ra.take()
                if n:
                    out += arena.slot_view(first, nbytes)
                    ra.release(first)
                    continue
                if ra.done:
                    continue
                for i in range(ring.wait(1)):
                    ra.complete(ring.cqe_user_data[i], ring.cqe_res[i])
    finally:
        os.close(fd)
    assert bytes(out) == data


def test_stream_reads_one_at_a_time() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"a" * 5000)
        os.close(w)
        got, ra, stats, _ = read_all(r, bounded=False)
    finally:
        os.close(r)
    assert got == b"a" * 5000 and not ra.positional and ra.start == -1
    assert stats.max_in_flight <= 2        # one read (and the caller's nop)

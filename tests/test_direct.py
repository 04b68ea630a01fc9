"""uring-cat --direct: O_DIRECT reads into the aligned arena, with clean
fallbacks for unaligned tails and filesystems that refuse O_DIRECT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_cat, stats_json, write

SIZES = [0, 1, 4095, 4096, 4097, 3 * 131072, 3 * 131072 + 17, 1_000_003]


def _data(n: int) -> bytes:
    return (os.urandom(4096) * (n // 4096 + 1))[:n]


@pytest.mark.parametrize("size", SIZES)
def test_direct_bytes_equal_on_ext4(tmp_path: Path, size: int) -> None:
    src = write(tmp_path / "f", _data(size))
    out = tmp_path / "out"
    with open(out, "wb") as f:
        res = run_cat(["--direct", "--stats-format", "json", str(src)], stdout=f)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == src.read_bytes()
    extra = stats_json(res.stderr)["extra"]
    assert extra.get("data_path") in ("read_fixed/write_fixed", "read/write")
    if extra.get("direct_files"):
        # an unaligned end (or an empty file, read as a stream) goes
        # through the cache, and the stats say so
        expected = 1 if size % 4096 or size == 0 else 0
        assert extra.get("direct_fallbacks", 0) == expected
    else:
        assert extra.get("direct_refused") == 1


def test_direct_into_pipe_and_several_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a", _data(300_001))
    b = write(tmp_path / "b", _data(8192))
    res = run_cat(["--direct", "--block-size", "64K", "--queue-depth", "3",
                   str(a), str(b), str(a)])
    assert res.returncode == 0, res.stderr
    assert res.stdout == a.read_bytes() + b.read_bytes() + a.read_bytes()


def test_direct_unaligned_block_size_falls_back(tmp_path: Path) -> None:
    src = write(tmp_path / "f", _data(100_000))
    res = run_cat(["--direct", "--block-size", "1000", "--stats-format", "json",
                   str(src)])
    assert res.returncode == 0, res.stderr
    assert res.stdout == src.read_bytes()
    extra = stats_json(res.stderr)["extra"]
    if extra.get("direct_files"):
        assert extra["direct_fallbacks"] == 1


@pytest.mark.parametrize("engine", ["sync", "uring"])
def test_direct_stdin_and_sync_engine(tmp_path: Path, engine: str) -> None:
    src = write(tmp_path / "f", _data(50_000))
    res = run_cat(["--direct", "-", str(src)], engine=engine, stdin=src)
    assert res.returncode == 0, res.stderr
    assert res.stdout == src.read_bytes() * 2


def test_direct_on_tmpfs(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this machine")
    src = shm / f"uringtools-direct-{os.getpid()}"
    try:
        src.write_bytes(_data(200_003))
        res = run_cat(["--direct", "--stats-format", "json", str(src)])
        assert res.returncode == 0, res.stderr
        assert res.stdout == src.read_bytes()
        extra = stats_json(res.stderr)["extra"]
        # tmpfs either refuses O_DIRECT at open or accepts it: both are noted
        assert extra.get("direct_refused") == 1 or extra.get("direct_files") == 1
    finally:
        src.unlink(missing_ok=True)


def test_direct_missing_file_message(tmp_path: Path) -> None:
    res = run_cat(["--direct", str(tmp_path / "nope")])
    assert res.returncode == 1
    assert res.stderr == f"uring-cat: {tmp_path / 'nope'}: No such file or directory\n".encode()


def _cached(path: Path) -> int:
    import subprocess

    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                          str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_direct_bypasses_the_page_cache(tmp_path: Path, engine: str) -> None:
    """--direct reads past the page cache with either engine (the sync
    engine ignored it: the whole file came into the cache, and --stats
    said nothing); only the unaligned tail goes through it."""
    data = _data(2 * 1048576 + 1)
    src = write(tmp_path / "f", data)
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert _cached(src) == 0
    out = tmp_path / "out"
    with open(out, "wb") as f:
        res = run_cat(["--direct", "--stats-format", "json", str(src)],
                      engine=engine, stdout=f)
    assert res.returncode == 0, res.stderr
    assert _cached(src) <= 131072
    assert out.read_bytes() == data
    extra = stats_json(res.stderr)["extra"]
    assert extra.get("direct_files") == 1 and extra.get("direct_fallbacks") == 1

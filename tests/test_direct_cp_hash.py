"""uring-cp --direct (source side) and uring-hash --direct: O_DIRECT reads
into the aligned buffers, with clean fallbacks for unaligned tails, block
sizes that are not multiples of 4096 and filesystems that refuse O_DIRECT."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

BIN = Path(sys.executable).parent
URING_CP = str(BIN / "uring-cp")
URING_HASH = str(BIN / "uring-hash")
ENV = dict(os.environ, LC_ALL="C")
SIZES = [0, 1, 4095, 4096, 4097, 3 * 131072, 3 * 131072 + 17, 1_000_003]


def _data(n: int) -> bytes:
    return (os.urandom(4096) * (n // 4096 + 1))[:n]


def _run(argv: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, env=ENV, timeout=60)


def _extra(stderr: bytes) -> Dict:
    for line in stderr.splitlines():
        if line.startswith(b"{"):
            return json.loads(line)["extra"]
    raise AssertionError(f"no --stats-format json line in {stderr!r}")


def _check_counters(extra: Dict, size: int) -> None:
    """A regular file that claims a size is read O_DIRECT (or refused at
    open); an unaligned end goes through the cache, once."""
    if size == 0:   # read as a stream (it may be a /proc-like file)
        return
    if extra.get("direct_refused"):
        assert extra["direct_refused"] == 1 and not extra.get("direct_files")
        return
    assert extra.get("direct_files") == 1
    assert extra.get("direct_fallbacks", 0) == (1 if size % 4096 else 0)


@pytest.fixture(params=["ext4", "shm"])
def where(request, tmp_path: Path):
    if request.param == "ext4":
        yield tmp_path
        return
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this machine")
    d = shm / f"uringtools-direct-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


@pytest.mark.parametrize("engine", ["uring", "sync"])
@pytest.mark.parametrize("size", SIZES)
def test_cp_direct_bytes_equal(where: Path, engine: str, size: int) -> None:
    src = where / "src"
    src.write_bytes(_data(size))
    dst = where / "dst"
    res = _run([URING_CP, "--engine", engine, "--direct", "--stats-format",
                "json", str(src), str(dst)])
    assert res.returncode == 0, res.stderr
    assert dst.read_bytes() == src.read_bytes()
    _check_counters(_extra(res.stderr), size)


@pytest.mark.parametrize("engine", ["uring", "sync"])
@pytest.mark.parametrize("size", SIZES)
def test_hash_direct_digest_equal(where: Path, engine: str, size: int) -> None:
    src = where / "src"
    data = _data(size)
    src.write_bytes(data)
    res = _run([URING_HASH, "--engine", engine, "--direct", "--stats-format",
                "json", str(src)])
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{hashlib.sha256(data).hexdigest()}  {src}\n".encode()
    _check_counters(_extra(res.stderr), size)


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_direct_several_files_and_a_tree(tmp_path: Path, engine: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i, size in enumerate(SIZES):
        (tree / f"f{i}").write_bytes(_data(size))
    out = tmp_path / "out"
    res = _run([URING_CP, "-r", "--engine", engine, "--direct",
                "--block-size", "64K", "--queue-depth", "3", str(tree), str(out)])
    assert res.returncode == 0, res.stderr
    for p in tree.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes()
    names = sorted(str(p) for p in tree.iterdir())
    res = _run([URING_HASH, "--engine", engine, "--direct", *names])
    gnu = _run(["sha256sum", *names])
    assert res.returncode == 0, res.stderr
    assert res.stdout == gnu.stdout


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_direct_unaligned_block_size_falls_back(tmp_path: Path, engine: str) -> None:
    src = tmp_path / "src"
    data = _data(100_000)
    src.write_bytes(data)
    res = _run([URING_CP, "--engine", engine, "--direct", "--block-size", "1000",
                "--stats-format", "json", str(src), str(tmp_path / "dst")])
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dst").read_bytes() == data
    extra = _extra(res.stderr)
    if extra.get("direct_files"):
        assert extra["direct_fallbacks"] == 1
    res = _run([URING_HASH, "--engine", engine, "--direct", "--block-size", "1000",
                "--stats-format", "json", str(src)])
    assert res.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    extra = _extra(res.stderr)
    if extra.get("direct_files"):
        assert extra["direct_fallbacks"] == 1


def test_hash_direct_stdin_and_missing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _data(50_000)
    src.write_bytes(data)
    with open(src, "rb") as f:
        res = subprocess.run([URING_HASH, "--direct", "-", str(src)], stdin=f,
                             capture_output=True, env=ENV, timeout=60)
    digest = hashlib.sha256(data).hexdigest()
    assert res.stdout == f"{digest}  -\n{digest}  {src}\n".encode()
    res = _run([URING_HASH, "--direct", str(tmp_path / "nope")])
    assert res.returncode == 1
    assert res.stderr == (f"uring-hash: {tmp_path / 'nope'}: "
                          "No such file or directory\n").encode()

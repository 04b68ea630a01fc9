"""uring-cp's splice path: files of 1 MiB and more go file -> private pipe
-> temporary as linked splice pairs on the ring (by default when the source
is on tmpfs; --splice here, so the path is tested wherever the tests run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

URING_CP = str(Path(sys.executable).parent / "uring-cp")


def ucp(*args: str, cwd: Path, env=None,
        splice: str = "--splice") -> subprocess.CompletedProcess:
    flags = [splice] if splice else []
    return subprocess.run([URING_CP, "--stats-format", "json", *flags, *args],
                          cwd=cwd,
                          capture_output=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def stats_of(res: subprocess.CompletedProcess) -> dict:
    return json.loads(res.stderr.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 1, 5 * (1 << 20) - 3])
@pytest.mark.parametrize("shape", [[], ["--block-size", "64K", "--queue-depth", "2"]])
def test_large_files_are_spliced_identically(tmp_path: Path, size: int,
                                             shape: list) -> None:
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    res = ucp(*shape, "src", "dst", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dst").read_bytes() == data
    stats = stats_of(res)
    assert stats["extra"]["files_spliced"] == 1
    assert stats["ops"].get("splice", 0) >= 2 and "write_fixed" not in stats["ops"]
    assert stats["bytes_read"] == stats["bytes_written"] == size
    assert [p.name for p in tmp_path.iterdir() if ".ucp-" in p.name] == []


def test_spliced_copy_keeps_holes_and_replaces_destination(tmp_path: Path) -> None:
    src = tmp_path / "sparse"
    with open(src, "wb") as f:
        f.truncate(64 << 20)
        f.seek(7 << 20)
        f.write(b"island" * 1000)
        f.seek((64 << 20) - 5)
        f.write(b"end!\n")
    (tmp_path / "dst").write_bytes(b"old")
    res = ucp("sparse", "dst", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()
    assert os.stat(tmp_path / "dst").st_blocks <= os.stat(src).st_blocks + 64
    assert stats_of(res)["extra"]["holes_skipped"] == 1


#: pairs of a pipe's size (1 MiB) whatever the block size; one chain at a
#: time, and two in flight (3 MiB: one chain of three pairs)
SHAPES = [["--block-size", "256K", "--queue-depth", "1"],
          ["--block-size", "64K", "--queue-depth", "4"]]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec,message", [
    ("splice:eio:@2", b"error writing 'dst'"),    # a pair's writing half
    ("splice:eio:@3", b"error reading 'src'"),    # the next pair's reading half
    ("splice:enospc:@6", b"error writing 'dst': No space left on device"),
    ("splice:eio:@5", b"error reading 'src'"),    # the third pair's reading half
])
def test_spliced_copy_fault_keeps_old_destination(tmp_path: Path, spec: str,
                                                  message: bytes,
                                                  shape: list) -> None:
    (tmp_path / "src").write_bytes(os.urandom(3 << 20))
    (tmp_path / "dst").write_bytes(b"precious")
    res = ucp(*shape, "src", "dst",
              cwd=tmp_path, env={"URINGTOOLS_FAULTS": spec})
    assert res.returncode == 1
    assert message in res.stderr and b"Traceback" not in res.stderr
    assert (tmp_path / "dst").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if ".ucp-" in p.name] == []


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("spec", ["splice:eintr:3", "splice:eagain:@2",
                                  "splice:ecanceled:5", "splice:short:2",
                                  # the first chain's last write (four
                                  # pairs, the last of 77 bytes: only a
                                  # chain's tail can be shortened)
                                  "splice:short:@8", "splice:eagain:@5"])
def test_spliced_copy_survives_transient_faults(tmp_path: Path, spec: str,
                                                shape: list) -> None:
    data = os.urandom((3 << 20) + 77)
    (tmp_path / "src").write_bytes(data)
    res = ucp(*shape, "src", "dst",
              cwd=tmp_path, env={"URINGTOOLS_FAULTS": spec})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dst").read_bytes() == data
    assert stats_of(res)["extra"]["faults_injected"] >= 1


#: chains of 16 pairs of 1 MiB (32 splices) on two pipes: 40 MiB is three
#: chains, the first two in flight together
TWO_CHAINS = ["--queue-depth", "4"]
BIG = 40 << 20


@pytest.mark.parametrize("spec,message", [
    ("splice:eio:@40", b"error writing 'dst'"),   # 2nd chain, 4th pair's write
    ("splice:eio:@37", b"error reading 'src'"),   # 2nd chain, 3rd pair's read
    ("splice:enospc:@2", b"error writing 'dst': No space left on device"),
])
def test_two_chains_in_flight_fault_keeps_old_destination(
        tmp_path: Path, spec: str, message: bytes) -> None:
    (tmp_path / "src").write_bytes(os.urandom(BIG))
    (tmp_path / "dst").write_bytes(b"precious")
    res = ucp(*TWO_CHAINS, "src", "dst", cwd=tmp_path,
              env={"URINGTOOLS_FAULTS": spec})
    assert res.returncode == 1
    assert message in res.stderr and b"Traceback" not in res.stderr
    assert (tmp_path / "dst").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if ".ucp-" in p.name] == []


@pytest.mark.parametrize("spec", ["splice:eintr:@40", "splice:eagain:@37",
                                  "splice:short:@64",  # the 2nd chain's tail
                                  "splice:short:@32", "splice:ecanceled:7"])
def test_two_chains_in_flight_survive_transient_faults(tmp_path: Path,
                                                       spec: str) -> None:
    data = os.urandom(BIG + 5)
    (tmp_path / "src").write_bytes(data)
    res = ucp(*TWO_CHAINS, "src", "dst", cwd=tmp_path,
              env={"URINGTOOLS_FAULTS": spec})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dst").read_bytes() == data
    stats = stats_of(res)
    assert stats["extra"]["faults_injected"] >= 1
    # two chains of 32 splices: the first in flight, and the second sent
    assert 33 <= stats["max_in_flight"] <= 64
    # a chain that finished past the short one is copied again, and
    # counted once
    assert stats["bytes_read"] == stats["bytes_written"] == len(data)


@pytest.mark.parametrize("spec,first,shape", [
    ("splice:eio:@2", 3 << 20, ["--queue-depth", "1"]),
    ("splice:enospc:@4", (3 << 20) // 2, ["--queue-depth", "1"]),
    ("splice:eio:@6", 5 << 20, ["--queue-depth", "1"]),
    # a retry sends the rest one chain at a time, then the write fails
    ("splice:eintr:@1,splice:eio:@66", 35 << 20, []),
    ("splice:eio:@40", 40 << 20, []),       # two chains in flight
])
def test_write_error_leaves_nothing_for_the_next_file(
        tmp_path: Path, spec: str, first: int, shape: list) -> None:
    """A write that fails inside a chain leaves bytes in the private pipe;
    cp goes on to the next operand, which must not start with them (it
    did: a copy that hung on the full pipe, or a next file shifted by the
    leftover bytes)."""
    a = os.urandom(first)
    b = os.urandom((1 << 20) + 3)
    (tmp_path / "a").write_bytes(a)
    (tmp_path / "b").write_bytes(b)
    (tmp_path / "d").mkdir()
    res = ucp(*shape, "a", "b", "d", cwd=tmp_path,
              env={"URINGTOOLS_FAULTS": spec})
    assert res.returncode == 1
    lines = [x for x in res.stderr.splitlines() if not x.startswith(b"{")]
    assert len(lines) == 1 and lines[0].startswith(b"uring-cp: error writing 'd/a'")
    assert not (tmp_path / "d" / "a").exists()
    assert (tmp_path / "d" / "b").read_bytes() == b
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["b"]


def test_a_source_that_shrinks_leaves_a_prefix(tmp_path: Path) -> None:
    """The source cut short while two chains are in flight: a later chain
    may already have written past the point where an earlier one came up
    short. The copy is what the source still had up to there (it left a
    run of zeros, then later bytes). Timing decides where the cut falls;
    whatever it is, the copy must be a prefix."""
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        data = os.urandom(256 << 20)
        for attempt in range(3):
            src, dst = shm / f"src{attempt}", shm / f"dst{attempt}"
            src.write_bytes(data)
            proc = subprocess.Popen([URING_CP, "--splice", str(src), str(dst)],
                                    stderr=subprocess.PIPE)
            # mid-copy: once the temporary holds 64 MiB
            while proc.poll() is None and not any(
                    p.name.startswith(f".dst{attempt}.ucp-")
                    and p.stat().st_size >= 64 << 20 for p in shm.iterdir()):
                pass
            os.truncate(src, 1 << 20)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            got = dst.read_bytes()
            assert len(got) >= 1 << 20
            assert got == data[:len(got)], (attempt, len(got))
    finally:
        subprocess.run(["rm", "-rf", str(shm)])


def test_a_low_descriptor_limit_copies_through_the_arena(tmp_path: Path) -> None:
    """`ulimit -n 8`: the splice ring and its pipes would take descriptors
    the copy needs; big files go through the arena instead (as GNU cp,
    which copies with 5)."""
    data = os.urandom((3 << 20) + 1)
    (tmp_path / "src").write_bytes(data)
    (tmp_path / "d").mkdir()
    res = subprocess.run(
        ["bash", "-c", f"ulimit -n 8 && exec {URING_CP} --splice "
                       "--stats-format json src d/"],
        cwd=tmp_path, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "d" / "src").read_bytes() == data
    assert stats_of(res)["extra"]["splice_no_fds"] == 1


TMPFS_MAGIC = 0x01021994


def fs_type(path: Path) -> int:
    from uringtools._uring import lib
    return lib.ut_fs_type(os.fsencode(path))


def test_no_splice_copies_big_files_through_the_arena(tmp_path: Path) -> None:
    data = os.urandom((5 << 20) - 3)
    (tmp_path / "src").write_bytes(data)
    res = ucp("src", "dst", cwd=tmp_path, splice="--no-splice")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dst").read_bytes() == data
    stats = stats_of(res)
    assert "files_spliced" not in stats["extra"] and "splice" not in stats["ops"]
    assert stats["ops"]["read_fixed"] == stats["ops"]["write_fixed"] == 40
    assert stats["bytes_read"] == stats["bytes_written"] == len(data)


def _locations(tmp_path: Path) -> list:
    places = [tmp_path]
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        places.append(shm)
    return places


def test_splice_by_default_only_from_tmpfs(tmp_path: Path) -> None:
    """Without --splice/--no-splice a big file is spliced when its source
    is on tmpfs and goes through the arena otherwise (what measured faster
    on each, bench/README.md); the destination does not decide."""
    data = os.urandom((2 << 20) + 5)
    out = tmp_path / "out"
    out.mkdir()
    seen = set()
    for where in _locations(tmp_path):
        src = Path(tempfile.mkdtemp(dir=where)) / "src"
        try:
            src.write_bytes(data)
            res = ucp(str(src), "dst", cwd=out, splice="")
            assert res.returncode == 0, res.stderr
            assert (out / "dst").read_bytes() == data
            spliced = stats_of(res)["extra"].get("files_spliced", 0)
            on_tmpfs = fs_type(src) == TMPFS_MAGIC
            assert spliced == (1 if on_tmpfs else 0), where
            seen.add(on_tmpfs)
        finally:
            src.unlink()
            src.parent.rmdir()
    assert seen, "no location to try"

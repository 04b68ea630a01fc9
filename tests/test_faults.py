"""Faults: every command survives what the ring, the kernel and the machine
throw at it, with the right bytes or one clean message and status 1.

Completion faults come from the ring's test-only injector (URINGTOOLS_FAULTS,
see ring.FaultPlan), io_uring_enter errors from strace's syscall tampering,
refusal of io_uring from tests/seccomp_exec.py, ENOSPC from a 1 MiB tmpfs and
/dev/full, EIO from /proc/self/mem, and signals from the test itself.
Every test that injects also checks that something was injected.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import (BIN, ENV, SECCOMP_EXEC, no_traceback, stats_json)

URING_CAT = str(BIN / "uring-cat")
URING_CP = str(BIN / "uring-cp")
URING_HASH = str(BIN / "uring-hash")
SIZE = 1_000_003          # not a multiple of any block size
TIMEOUT = 60


def data_of(size: int, seed: int = 7) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "src"
    path.write_bytes(data_of(SIZE))
    return path


def fault_env(spec: str) -> Dict[str, str]:
    return dict(ENV, URINGTOOLS_FAULTS=spec)


def run(argv: List[str], *, env: Optional[Dict[str, str]] = None,
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=None,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE,
                          stdin=stdin, env=env or ENV, cwd=cwd, timeout=timeout)


def injected(stderr: bytes) -> int:
    return stats_json(stderr).get("extra", {}).get("faults_injected", 0)


def messages(stderr: bytes) -> List[bytes]:
    """stderr lines other than the --stats-format json object."""
    return [line for line in stderr.splitlines() if not line.startswith(b"{")]


# -- cat: completion faults, both data paths --------------------------------

TRANSIENT = ["short", "eagain", "eintr", "ecanceled"]
FATAL = ["eio", "enospc"]
#: (name, cat options, output kind, ops the path issues)
CAT_PATHS = [
    ("splice-file", [], "file", {"splice"}),
    ("splice-pipe", [], "pipe", {"splice"}),
    ("buffers-file", ["--no-splice"], "file", {"read", "write"}),
    ("buffers-pipe", ["--no-splice"], "pipe", {"read", "write"}),
    ("format-pipe", ["-n"], "pipe", {"read", "write"}),
]
SHAPES = [("4K", 1), ("64K", 3), ("128K", 8)]


def run_cat_to(kind: str, argv: List[str], env: Dict[str, str], out: Path
               ) -> subprocess.CompletedProcess:
    if kind == "file":
        with open(out, "wb") as fh:
            res = run(argv, env=env, stdout=fh)
        res.stdout = out.read_bytes()
        return res
    return run(argv, env=env)


def expected_cat(source: Path, opts: List[str]) -> bytes:
    return subprocess.run(["cat", *[o for o in opts if o != "--no-splice"],
                           str(source)], capture_output=True, check=True).stdout


@pytest.mark.parametrize("path", CAT_PATHS, ids=[p[0] for p in CAT_PATHS])
@pytest.mark.parametrize("fault", TRANSIENT)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{b}x{d}" for b, d in SHAPES])
def test_cat_transient_faults(source: Path, tmp_path: Path, path, fault: str,
                              shape) -> None:
    """Short and retryable completions: the output is still the whole file."""
    name, opts, kind, ops = path
    bs, depth = shape
    if "splice" in ops:
        # one splice moves up to a pipe's worth (1 MiB): hit the first ones
        spec = "splice:short:1" if fault == "short" else f"splice:{fault}:@1"
    else:
        # few writes (adjacent full slots go out as one): count reads too
        spec = "read:short:3" if fault == "short" else f"any:{fault}:3"
    argv = [URING_CAT, "--engine", "uring", "--block-size", bs,
            "--queue-depth", str(depth), "--stats-format", "json", *opts,
            str(source)]
    res = run_cat_to(kind, argv, fault_env(spec), tmp_path / "out")
    no_traceback(res.stderr)
    assert res.returncode == 0, res.stderr
    assert res.stdout == expected_cat(source, opts)
    assert messages(res.stderr) == []
    assert injected(res.stderr) > 0, f"{spec} injected nothing on {name}"


@pytest.mark.parametrize("path", CAT_PATHS, ids=[p[0] for p in CAT_PATHS])
@pytest.mark.parametrize("fault", FATAL)
@pytest.mark.parametrize("nth", ["@1", "@2"])
def test_cat_fatal_faults(source: Path, tmp_path: Path, path, fault: str,
                          nth: str) -> None:
    """EIO / ENOSPC: one GNU-style line, status 1, output a clean prefix."""
    name, opts, kind, ops = path
    spec = f"any:{fault}:{nth}"
    argv = [URING_CAT, "--engine", "uring", "--block-size", "64K",
            "--stats-format", "json", *opts, str(source)]
    res = run_cat_to(kind, argv, fault_env(spec), tmp_path / "out")
    no_traceback(res.stderr)
    assert injected(res.stderr) == 1
    assert res.returncode == 1
    reason = os.strerror(5 if fault == "eio" else 28).encode()
    lines = messages(res.stderr)
    assert len(lines) == 1, res.stderr
    assert lines[0] in (b"uring-cat: %s: %s" % (str(source).encode(), reason),
                        b"uring-cat: write error: %s" % reason)
    full = expected_cat(source, opts)
    assert full.startswith(res.stdout)   # (all of it when the EOF probe failed)


#: (fault spec, what fails) in the first chain of pairs of 1 MiB: the
#: splices are numbered read, write, read, write...
MID_CHAIN = [("splice:eio:@5", "read"),       # the third pair's read
             ("splice:eio:@4", "write"),      # the second pair's write
             ("splice:enospc:@8", "write"),   # the fourth pair's write
             ("splice:eintr:@5", None),       # retried: all of it
             ("splice:ecanceled:@6", None)]


@pytest.mark.parametrize("spec,fails", MID_CHAIN, ids=[m[0] for m in MID_CHAIN])
@pytest.mark.parametrize("kind", ["file", "null"])
def test_cat_splice_chain_fault_mid_chain(tmp_path: Path, spec: str,
                                          fails: Optional[str], kind: str) -> None:
    """A request failing inside a chain of splice pairs: the pairs before
    it are out, whole and in order; the rest are cancelled, not lost (a
    transient failure) or reported as GNU would (a real one)."""
    src = tmp_path / "src"
    data = data_of((6 << 20) + 4321)   # 7 pairs: one chain
    src.write_bytes(data)
    out = tmp_path / "out" if kind == "file" else Path("/dev/null")
    with open(out, "wb") as fh:
        res = run([URING_CAT, "--stats-format", "json", str(src)],
                  env=fault_env(spec), stdout=fh)
    no_traceback(res.stderr)
    assert injected(res.stderr) == 1
    stats = stats_json(res.stderr)
    assert stats["extra"]["data_path"] == "splice via pipe"
    if fails is None:
        assert res.returncode == 0, res.stderr
        assert messages(res.stderr) == []
        assert stats["bytes_written"] == len(data)
        if kind == "file":
            assert out.read_bytes() == data
        return
    assert res.returncode == 1
    pair = (int(spec.rsplit("@", 1)[1]) - 1) // 2   # the failing pair, from 0
    if fails == "read":
        assert messages(res.stderr) == [
            f"uring-cat: {src}: Input/output error".encode()]
        # the pairs before it, and nothing of it
        assert stats["bytes_written"] == pair << 20
    else:
        reason = os.strerror(5 if "eio" in spec else 28)
        assert messages(res.stderr) == [
            f"uring-cat: write error: {reason}".encode()]
        assert stats["bytes_written"] == pair << 20
    if kind == "file":
        assert out.read_bytes() == data[:pair << 20]


def test_cat_splice_chains_into_dev_null(tmp_path: Path) -> None:
    """Into /dev/null (or a file) the pairs go 16 to a chain, one enter
    each, on a ring without DEFER_TASKRUN (whose task work would bring
    each step of a chain back to our thread)."""
    src = tmp_path / "src"
    src.write_bytes(data_of(40 << 20))
    with open("/dev/null", "wb") as fh:
        res = run([URING_CAT, "--stats-format", "json", str(src)], stdout=fh)
    assert res.returncode == 0, res.stderr
    stats = stats_json(res.stderr)
    assert stats["bytes_written"] == 40 << 20
    assert stats["ops"] == {"splice": 2 * 40 + 2}   # and the read at EOF
    assert stats["enters"] == 3 + 1   # 16 + 16 + 8 pairs, then EOF
    assert stats["max_in_flight"] == 32   # a whole chain
    assert "DEFER_TASKRUN" not in stats["setup_flags"]


def test_cat_fault_in_second_file_keeps_going(source: Path, tmp_path: Path) -> None:
    """A read error in one operand: GNU reports it and goes on to the next."""
    small = tmp_path / "small"
    small.write_bytes(b"tail\n")
    res = run([URING_CAT, "--no-splice", "--block-size", "64K",
               "--stats-format", "json", str(source), str(small)],
              env=fault_env("read:eio:@2"))
    assert res.returncode == 1
    assert messages(res.stderr) == [f"uring-cat: {source}: Input/output error".encode()]
    assert res.stdout.endswith(b"tail\n")
    assert source.read_bytes().startswith(res.stdout[:-5])


# -- hash: completion faults ------------------------------------------------

@pytest.mark.parametrize("fault", ["short:3", "eagain:3", "eintr:3",
                                   "ecanceled:3", "short:1", "eintr:@1"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{b}x{d}" for b, d in SHAPES])
@pytest.mark.parametrize("nfiles", [1, 3])
def test_hash_transient_faults(source: Path, fault: str, shape, nfiles: int) -> None:
    bs, depth = shape
    names = [str(source)] * nfiles
    res = run([URING_HASH, "--engine", "uring", "--block-size", bs,
               "--queue-depth", str(depth), "--stats-format", "json", *names],
              env=fault_env(f"read:{fault}"))
    no_traceback(res.stderr)
    assert res.returncode == 0, res.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert res.stdout == b"".join(f"{digest}  {n}\n".encode() for n in names)
    assert injected(res.stderr) > 0


@pytest.mark.parametrize("fault", ["eio", "enospc"])
@pytest.mark.parametrize("nth", ["@1", "@3", "5"])
def test_hash_read_error_prints_no_digest(source: Path, fault: str, nth: str) -> None:
    """Never the digest of a partial file: no line for it, status 1."""
    res = run([URING_HASH, "--block-size", "64K", "--stats-format", "json",
               str(source)], env=fault_env(f"read:{fault}:{nth}"))
    no_traceback(res.stderr)
    assert res.returncode == 1
    assert res.stdout == b""
    reason = os.strerror(5 if fault == "eio" else 28)
    assert messages(res.stderr) == [f"uring-hash: {source}: {reason}".encode()]
    assert injected(res.stderr) >= 1


def test_hash_read_error_several_files(source: Path, tmp_path: Path) -> None:
    """Threads, one ring each: every printed digest is right, every file
    without one has its message, and the status says something failed."""
    names = []
    for i in range(4):
        p = tmp_path / f"f{i}"
        p.write_bytes(data_of(300_000 + i, seed=i))
        names.append(str(p))
    res = run([URING_HASH, "--block-size", "64K", "--stats-format", "json",
               *names], env=fault_env("read:eio:@1"))
    no_traceback(res.stderr)
    assert res.returncode == 1
    printed = {}
    for line in res.stdout.splitlines():
        hexd, name = line.decode().split("  ", 1)
        printed[name] = hexd
    failed = {line.decode().split(": ")[1] for line in messages(res.stderr)}
    assert failed, "read:eio:@1 failed nothing"
    assert set(printed) | failed == set(names) and not set(printed) & failed
    for name, hexd in printed.items():
        assert hexd == hashlib.sha256(Path(name).read_bytes()).hexdigest()
    assert injected(res.stderr) >= len(failed)


def test_hash_check_mode_read_error(source: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    sums = tmp_path / "SUMS"
    sums.write_text(f"{digest}  {source}\n")
    res = run([URING_HASH, "-c", "--block-size", "64K", str(sums)],
              env=fault_env("read:eio:@2"))
    no_traceback(res.stderr)
    assert res.returncode == 1
    assert res.stdout == f"{source}: FAILED open or read\n".encode()
    assert res.stderr.splitlines() == [
        f"uring-hash: {source}: Input/output error".encode(),
        b"uring-hash: WARNING: 1 listed file could not be read"]


# -- cp: completion faults --------------------------------------------------

def cp_setup(tmp_path: Path, source: Path) -> Path:
    work = tmp_path / "w"
    work.mkdir()
    (work / "dst").write_bytes(b"OLD CONTENT\n")
    return work


def leftovers(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if ".ucp-" in p.name)


@pytest.mark.parametrize("spec", [
    "write:short:3", "write:short:1", "write:ecanceled:3",
    "read:eagain:3",
    "read:eintr:3",
    "read:ecanceled:3",
    "write:eagain:3",
    "write:eintr:3",
])
@pytest.mark.parametrize("shape", [("4K", 2), ("64K", 4)], ids=["4Kx2", "64Kx4"])
def test_cp_transient_faults(source: Path, tmp_path: Path, spec: str, shape) -> None:
    bs, depth = shape
    work = cp_setup(tmp_path, source)
    res = run([URING_CP, "--engine", "uring", "--block-size", bs,
               "--queue-depth", str(depth), "--stats-format", "json",
               str(source), str(work / "dst")], env=fault_env(spec))
    no_traceback(res.stderr)
    assert injected(res.stderr) > 0
    assert messages(res.stderr) == []
    assert res.returncode == 0
    assert (work / "dst").read_bytes() == source.read_bytes()
    assert leftovers(work) == []


@pytest.mark.parametrize("spec,verb,errname", [
    ("read:eio:@1", "reading", "EIO"), ("read:eio:3", "reading", "EIO"),
    ("write:eio:@2", "writing", "EIO"), ("write:enospc:@1", "writing", "ENOSPC"),
    ("write:enospc:4", "writing", "ENOSPC"),
])
def test_cp_fatal_fault_keeps_old_destination(source: Path, tmp_path: Path,
                                              spec: str, verb: str,
                                              errname: str) -> None:
    import errno as errno_mod

    work = cp_setup(tmp_path, source)
    dst = work / "dst"
    res = run([URING_CP, "--engine", "uring", "--block-size", "64K",
               "--stats-format", "json", str(source), str(dst)],
              env=fault_env(spec))
    no_traceback(res.stderr)
    assert injected(res.stderr) >= 1
    assert res.returncode == 1
    shown = source if verb == "reading" else dst
    reason = os.strerror(getattr(errno_mod, errname))
    assert messages(res.stderr) == [
        f"uring-cp: error {verb} '{shown}': {reason}".encode()]
    assert dst.read_bytes() == b"OLD CONTENT\n"
    assert leftovers(work) == []


def test_cp_tree_fault_fails_one_file_only(tmp_path: Path) -> None:
    """A fault in one file of a tree: that file fails (no partial copy,
    no temporary), every other file is copied."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"f{i}").write_bytes(data_of(i * 1000, seed=i))
    (tree / "big").write_bytes(data_of(3 << 20, seed=99))
    out = tmp_path / "out"
    res = run([URING_CP, "-r", "--splice", "--stats-format", "json", str(tree),
               str(out)], env=fault_env("write:eio:@5,splice:eio:@4"))
    no_traceback(res.stderr)
    # one per ring: small files' chains (a failed chain is copied again by
    # the chunk path), and "big"'s splice pairs (the 4th splice is the
    # second pair's writing half)
    assert injected(res.stderr) >= 1
    assert res.returncode == 1
    lines = messages(res.stderr)
    assert 1 <= len(lines) <= injected(res.stderr)
    assert all(line.startswith(b"uring-cp: error writing '") for line in lines)
    bad = {line.split(b"'")[1].decode() for line in lines}
    for p in tree.iterdir():
        q = out / p.name
        if str(q) in bad:
            assert not q.exists()
        else:
            assert q.read_bytes() == p.read_bytes()
    assert leftovers(out) == []


# -- io_uring_enter itself fails with EINTR / EAGAIN (strace tampering) -----

needs_strace = pytest.mark.skipif(shutil.which("strace") is None,
                                  reason="strace is not installed")


def strace(errname: str, argv: List[str]) -> List[str]:
    return ["strace", "-f", "-o", "/dev/null", "-e", "trace=io_uring_enter",
            "-e", f"inject=io_uring_enter:error={errname}:when=2..6", *argv]


@needs_strace
@pytest.mark.parametrize("errname", ["EINTR", "EAGAIN"])
@pytest.mark.parametrize("opts", [[], ["--no-splice"]], ids=["splice", "buffers"])
def test_enter_retry_cat(source: Path, tmp_path: Path, errname: str, opts) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as fh:
        res = run(strace(errname, [URING_CAT, "--stats-format", "json",
                                   "--block-size", "64K", *opts, str(source)]),
                  stdout=fh)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == source.read_bytes()
    assert stats_json(res.stderr)["enter_retries"] > 0


@needs_strace
@pytest.mark.parametrize("errname", ["EINTR", "EAGAIN"])
def test_enter_retry_hash(source: Path, errname: str) -> None:
    res = run(strace(errname, [URING_HASH, "--stats-format", "json",
                               "--block-size", "64K", str(source)]))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0].decode() == hashlib.sha256(
        source.read_bytes()).hexdigest()
    assert stats_json(res.stderr)["enter_retries"] > 0


@needs_strace
@pytest.mark.parametrize("errname", ["EINTR", "EAGAIN"])
@pytest.mark.parametrize("tree", [False, True], ids=["file", "tree"])
def test_enter_retry_cp(source: Path, tmp_path: Path, errname: str, tree: bool) -> None:
    if tree:
        src = tmp_path / "tree"
        src.mkdir()
        for i in range(30):
            (src / f"f{i}").write_bytes(data_of(i * 500, seed=i))
        shutil.copy(source, src / "big")
        argv = [URING_CP, "-r", str(src), str(tmp_path / "out")]
    else:
        argv = [URING_CP, str(source), str(tmp_path / "out")]
    res = run(strace(errname, [argv[0], "--stats-format", "json", *argv[1:]]))
    assert res.returncode == 0, res.stderr
    if tree:
        for p in src.iterdir():
            assert (tmp_path / "out" / p.name).read_bytes() == p.read_bytes()
    else:
        assert (tmp_path / "out").read_bytes() == source.read_bytes()
    assert stats_json(res.stderr)["enter_retries"] > 0


# -- io_uring refused: cp and hash fall back to sync ------------------------

@pytest.mark.parametrize("err,reason", [("EPERM", "Operation not permitted"),
                                        ("ENOSYS", "Function not implemented")])
def test_hash_falls_back(source: Path, err: str, reason: str) -> None:
    res = run([sys.executable, SECCOMP_EXEC, err, URING_HASH, str(source),
               str(source)])
    assert res.returncode == 0
    assert res.stdout == subprocess.run(["sha256sum", str(source), str(source)],
                                        capture_output=True).stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(b"uring-hash: warning: io_uring unavailable")
    assert reason.encode() in lines[0] and b"sync" in lines[0]


@pytest.mark.parametrize("err,reason", [("EPERM", "Operation not permitted"),
                                        ("ENOSYS", "Function not implemented")])
def test_hash_check_falls_back(source: Path, tmp_path: Path, err: str,
                               reason: str) -> None:
    sums = tmp_path / "SUMS"
    sums.write_bytes(subprocess.run(["sha256sum", str(source)],
                                    capture_output=True).stdout)
    res = run([sys.executable, SECCOMP_EXEC, err, URING_HASH, "-c", str(sums)])
    assert res.returncode == 0
    assert res.stdout == f"{source}: OK\n".encode()
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and reason.encode() in lines[0]


@pytest.mark.parametrize("err,reason", [("EPERM", "Operation not permitted"),
                                        ("ENOSYS", "Function not implemented")])
@pytest.mark.parametrize("tree", [False, True], ids=["file", "tree"])
def test_cp_falls_back(source: Path, tmp_path: Path, err: str, reason: str,
                       tree: bool) -> None:
    if tree:
        src = tmp_path / "tree"
        src.mkdir()
        for i in range(20):
            (src / f"f{i}").write_bytes(data_of(i * 300, seed=i))
        shutil.copy(source, src / "big")
        argv = ["-r", str(src), str(tmp_path / "out")]
    else:
        argv = [str(source), str(tmp_path / "out")]
    res = run([sys.executable, SECCOMP_EXEC, err, URING_CP,
               "--stats-format", "json", *argv])
    assert res.returncode == 0, res.stderr
    if tree:
        for p in src.iterdir():
            assert (tmp_path / "out" / p.name).read_bytes() == p.read_bytes()
    else:
        assert (tmp_path / "out").read_bytes() == source.read_bytes()
    lines = messages(res.stderr)
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(b"uring-cp: warning: io_uring unavailable")
    assert reason.encode() in lines[0] and b"sync" in lines[0]
    assert stats_json(res.stderr)["engine"] == "sync"


@pytest.mark.parametrize("cmd", ["cp", "hash"])
def test_engine_uring_refused_fails(source: Path, tmp_path: Path, cmd: str) -> None:
    argv = ([URING_CP, "--engine", "uring", str(source), str(tmp_path / "o")]
            if cmd == "cp" else [URING_HASH, "--engine", "uring", str(source)])
    res = run([sys.executable, SECCOMP_EXEC, "EPERM", *argv])
    no_traceback(res.stderr)
    assert res.returncode == 1 and res.stdout == b""
    lines = res.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"uring-{cmd}: io_uring unavailable".encode())
    assert not (tmp_path / "o").exists()


# -- ENOSPC: a 1 MiB tmpfs and /dev/full ------------------------------------

@pytest.fixture
def tiny_fs(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                          str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("engine", ["uring", "sync"])
@pytest.mark.parametrize("opts", [[], ["--no-splice"], ["-n"]],
                         ids=["splice", "buffers", "format"])
def test_cat_enospc_tmpfs(source: Path, tiny_fs: Path, engine: str, opts) -> None:
    big = source.parent / "big2m"
    if not big.exists():
        big.write_bytes(data_of(2 << 20, seed=3))
    out = tiny_fs / "out"
    with open(out, "wb") as fh:
        res = run([URING_CAT, "--engine", engine, *opts, str(big)], stdout=fh)
    no_traceback(res.stderr)
    assert res.returncode == 1
    assert res.stderr == b"uring-cat: write error: No space left on device\n"
    whole = expected_cat(big, opts)
    assert whole.startswith(out.read_bytes())


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_cp_enospc_tmpfs_keeps_old(source: Path, tiny_fs: Path, engine: str) -> None:
    big = source.parent / "big2m"
    if not big.exists():
        big.write_bytes(data_of(2 << 20, seed=3))
    dst = tiny_fs / "dst"
    dst.write_bytes(b"OLD\n")
    res = run([URING_CP, "--engine", engine, str(big), str(dst)])
    no_traceback(res.stderr)
    assert res.returncode == 1
    assert res.stderr == f"uring-cp: error writing '{dst}': No space left on device\n".encode()
    assert dst.read_bytes() == b"OLD\n"
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["dst"]


@pytest.mark.parametrize("engine", ["uring", "sync"])
@pytest.mark.parametrize("opts", [[], ["--no-splice"], ["-A"]],
                         ids=["splice", "buffers", "format"])
def test_cat_dev_full(source: Path, engine: str, opts) -> None:
    with open("/dev/full", "wb") as full:
        res = run([URING_CAT, "--engine", engine, *opts, str(source)], stdout=full)
        gnu = run(["cat", *[o for o in opts if o != "--no-splice"], str(source)],
                  stdout=full)
    assert res.returncode == gnu.returncode == 1
    assert res.stderr == gnu.stderr.replace(b"cat:", b"uring-cat:")


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_hash_dev_full(source: Path, engine: str) -> None:
    """GNU sha256sum says 'write error' (errno lost by close_stream);
    we say which error, as GNU cat does."""
    with open("/dev/full", "wb") as full:
        res = run([URING_HASH, "--engine", engine, str(source)], stdout=full)
    no_traceback(res.stderr)
    assert res.returncode == 1
    assert res.stderr == b"uring-hash: write error: No space left on device\n"


# -- EIO from /proc/self/mem --------------------------------------------------

@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_eio_proc_mem(tmp_path: Path, engine: str) -> None:
    for ours, theirs in ((URING_CAT, "cat"), (URING_HASH, "sha256sum")):
        res = run([ours, "--engine", engine, "/proc/self/mem"])
        gnu = run([theirs, "/proc/self/mem"])
        assert res.returncode == gnu.returncode == 1
        assert res.stdout == gnu.stdout == b""
        assert res.stderr == gnu.stderr.replace(theirs.encode() + b":",
                                                Path(ours).name.encode() + b":")
    (tmp_path / "dst").write_bytes(b"OLD\n")
    res = run([URING_CP, "--engine", engine, "/proc/self/mem", "dst"], cwd=tmp_path)
    gnu = run(["cp", "/proc/self/mem", "gnu"], cwd=tmp_path)
    assert res.returncode == gnu.returncode == 1
    assert res.stderr == gnu.stderr.replace(b"cp:", b"uring-cp:")
    assert (tmp_path / "dst").read_bytes() == b"OLD\n"   # GNU truncates; we don't
    assert leftovers(tmp_path) == []


# -- signals mid-work --------------------------------------------------------

class FifoFeeder:
    """Feed a FIFO a first chunk, then hold it open (the reader blocks)."""

    def __init__(self, path: Path, first: bytes) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self.first = first
        self.fd = -1
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY)
        os.write(self.fd, self.first)

    def close(self) -> None:
        self.thread.join(10)
        if self.fd >= 0:
            os.close(self.fd)


def wait_for(pred, what: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("engine", ["uring", "sync"])
@pytest.mark.parametrize("cmd", ["cat", "hash"])
def test_signal_mid_read(tmp_path: Path, sig: int, engine: str, cmd: str) -> None:
    """Blocked on a read: the signal ends the command quietly, 128+n, and
    hash prints no digest."""
    fifo = tmp_path / "fifo"
    feeder = FifoFeeder(fifo, b"x" * 70000)
    out = tmp_path / "out"
    exe = URING_CAT if cmd == "cat" else URING_HASH
    with open(out, "wb") as fh:
        proc = subprocess.Popen([exe, "--engine", engine, str(fifo)], stdout=fh,
                                stderr=subprocess.PIPE, env=ENV)
        try:
            if cmd == "cat":
                wait_for(lambda: out.stat().st_size == 70000, "cat's output")
            else:
                feeder.thread.join(20)
                time.sleep(0.3)   # only to let it block; the outcome is the same
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            feeder.close()
    assert proc.returncode == -sig
    assert err == b""
    if cmd == "hash":
        assert out.read_bytes() == b""
    else:
        assert out.read_bytes() == b"x" * 70000


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_cp_signal_keeps_old_destination(tmp_path: Path, sig: int, engine: str) -> None:
    """A copy blocked mid-file: the old destination survives any signal; the
    temporary is removed, except after SIGKILL (the documented exception)."""
    fifo = tmp_path / "fifo"
    dst = tmp_path / "dst"
    dst.write_bytes(b"OLD\n")
    feeder = FifoFeeder(fifo, b"y" * 100000)
    proc = subprocess.Popen([URING_CP, "--engine", engine, str(fifo), str(dst)],
                            stderr=subprocess.PIPE, env=ENV)
    try:
        wait_for(lambda: any(p.stat().st_size == 100000
                             for p in tmp_path.iterdir() if ".ucp-" in p.name),
                 "the temporary to fill")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        feeder.close()
    assert proc.returncode == -sig
    assert dst.read_bytes() == b"OLD\n"
    if sig != signal.SIGKILL:
        assert err == b""
        assert leftovers(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_cp_signal_removes_a_partial_fresh_file(tmp_path: Path, sig: int,
                                                engine: str) -> None:
    """In a directory the run made, a file is written under its own name (no
    temporary, nothing to protect): a signal mid-file removes what was
    written, so no half-written file is left under a real name."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    size = 64 << 20
    (src / "big").write_bytes(os.urandom(1 << 20) * 64)
    # 4 KiB blocks, one in flight, no splice (--direct): a slow copy to stop
    proc = subprocess.Popen([URING_CP, "-r", "--engine", engine, "--direct",
                             "--block-size", "4K", "--queue-depth", "1",
                             str(src), str(dst)],
                            stderr=subprocess.PIPE, env=ENV)
    big = dst / "big"
    try:
        end = time.monotonic() + 20
        while not (big.exists() and 0 < big.stat().st_size < size):
            assert time.monotonic() < end and proc.poll() is None, \
                "the copy ended before it could be caught mid-file"
            time.sleep(0.001)
        proc.send_signal(signal.SIGSTOP)
        assert 0 < big.stat().st_size < size          # caught mid-file
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -sig
    assert err == b""
    assert not big.exists()
    assert leftovers(dst) == []


# -- sources that grow or shrink while being read ----------------------------

CHUNK = 64 * 1024


def grower(path: Path, stop: threading.Event, rounds: int = 200) -> None:
    """Append chunk after chunk of the same deterministic stream."""
    with open(path, "ab") as fh:
        for i in range(rounds):
            if stop.is_set():
                return
            fh.write(data_of(CHUNK, seed=1000 + i))
            fh.flush()


def shrinker(path: Path, stop: threading.Event) -> None:
    size = path.stat().st_size
    while size > CHUNK and not stop.is_set():
        size -= CHUNK
        os.truncate(path, size)


def final_stream(initial: bytes, rounds: int = 200) -> bytes:
    return initial + b"".join(data_of(CHUNK, seed=1000 + i) for i in range(rounds))


@pytest.mark.parametrize("change", ["grow", "shrink"])
@pytest.mark.parametrize("cmd", ["cat", "cat-buffers", "hash", "cp"])
@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_source_changes_while_read(tmp_path: Path, change: str, cmd: str,
                                   engine: str) -> None:
    initial = data_of(4 << 20, seed=5)
    src = tmp_path / "src"
    src.write_bytes(initial)
    whole = final_stream(initial) if change == "grow" else initial
    stop = threading.Event()
    worker = threading.Thread(target=grower if change == "grow" else shrinker,
                              args=(src, stop), daemon=True)
    argv = {"cat": [URING_CAT], "cat-buffers": [URING_CAT, "--no-splice"],
            "hash": [URING_HASH], "cp": [URING_CP]}[cmd]
    argv = [*argv, "--engine", engine, "--block-size", "16K",
            "--stats-format", "json", str(src)]
    if cmd == "cp":
        argv.append(str(tmp_path / "dst"))
    worker.start()
    try:
        res = run(argv)
    finally:
        stop.set()
        worker.join(30)
    no_traceback(res.stderr)
    assert res.returncode == 0, res.stderr
    assert messages(res.stderr) == []
    if cmd == "hash":
        n = stats_json(res.stderr)["bytes_read"]
        assert res.stdout == f"{hashlib.sha256(whole[:n]).hexdigest()}  {src}\n".encode()
        return
    got = (tmp_path / "dst").read_bytes() if cmd == "cp" else res.stdout
    if change == "grow":
        assert len(got) >= len(initial)
    assert whole.startswith(got), "not a prefix of what the file held"


# -- closed standard descriptors ---------------------------------------------

def sh(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return run(["bash", "-c", script], cwd=cwd)


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_closed_stdout(tmp_path: Path, engine: str) -> None:
    (tmp_path / "a").write_bytes(b"data\n")
    for ours, theirs, extra in ((URING_CAT, "cat", ""), (URING_HASH, "sha256sum", "")):
        res = sh(f"{ours} --engine {engine} a >&-", tmp_path)
        gnu = sh(f"{theirs} a >&-", tmp_path)
        no_traceback(res.stderr)
        assert res.returncode == gnu.returncode == 1
        name = Path(ours).name.encode()
        assert res.stderr == gnu.stderr.replace(theirs.encode() + b":", name + b":")


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_cp_closed_stdout(tmp_path: Path, engine: str) -> None:
    (tmp_path / "a").write_bytes(b"data\n")
    res = sh(f"{URING_CP} --engine {engine} a b >&-", tmp_path)
    no_traceback(res.stderr)
    assert res.returncode == 0 and res.stderr == b""
    assert (tmp_path / "b").read_bytes() == b"data\n"


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_closed_stdin(tmp_path: Path, engine: str) -> None:
    (tmp_path / "a").write_bytes(b"data\n")
    # hash: stdin as an operand and as a check file, exactly as GNU
    for args in ("", "a -", "-c", "-c -"):
        res = sh(f"{URING_HASH} --engine {engine} {args} <&-", tmp_path)
        gnu = sh(f"sha256sum {args} <&-", tmp_path)
        no_traceback(res.stderr)
        assert res.returncode == gnu.returncode == 1, args
        assert res.stdout == gnu.stdout
        assert res.stderr == gnu.stderr.replace(b"sha256sum:", b"uring-hash:"), args
    # a closed stdin not named: no complaint
    res = sh(f"{URING_HASH} --engine {engine} a <&-", tmp_path)
    assert res.returncode == 0 and res.stderr == b""
    # cat: GNU's two lines (the operand, then closing stdin at exit)
    res = sh(f"{URING_CAT} --engine {engine} - a <&-", tmp_path)
    assert res.returncode == 1 and res.stdout == b"data\n"
    assert res.stderr.splitlines() == [
        b"uring-cat: -: Bad file descriptor",
        b"uring-cat: closing standard input: Bad file descriptor"]
    # cp never reads stdin
    res = sh(f"{URING_CP} --engine {engine} a b <&-", tmp_path)
    assert res.returncode == 0 and res.stderr == b""
    assert (tmp_path / "b").read_bytes() == b"data\n"

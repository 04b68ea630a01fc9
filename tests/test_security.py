"""Hostile file systems and hostile input: symlinks planted where cp writes,
temporaries never readable by others, check files built to break parsers."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN, ENV, no_traceback
from uringtools.copy import CopyOptions
from uringtools.copytree import copy_paths

URING_CP = str(BIN / "uring-cp")
URING_HASH = str(BIN / "uring-hash")
ENGINES = ["uring", "sync"]


def run(argv, cwd=None, umask=None):
    def pre():
        if umask is not None:
            os.umask(umask)
    return subprocess.run(argv, capture_output=True, cwd=cwd, env=ENV,
                          timeout=60, preexec_fn=pre)


# -- symlinks at the destination ------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", [10, 3 << 20])
def test_symlink_at_destination_like_gnu(tmp_path: Path, engine: str, size: int) -> None:
    """A symlink to a file at the destination: GNU writes through it (the
    link stays, its target gets the bytes); so do we (by replacing the target)."""
    data = os.urandom(size)
    results = {}
    for who in ("gnu", "ours"):
        d = tmp_path / who
        d.mkdir()
        (d / "src").write_bytes(data)
        (d / "target").write_bytes(b"old target\n")
        (d / "dst").symlink_to("target")
        argv = (["cp"] if who == "gnu" else [URING_CP, "--engine", engine])
        res = run([*argv, "src", "dst"], cwd=d)
        results[who] = (res.returncode, os.path.islink(d / "dst"),
                        os.readlink(d / "dst"), (d / "target").read_bytes() == data,
                        sorted(p.name for p in d.iterdir()))
        assert res.stderr == b""
    assert results["ours"] == results["gnu"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("force", [False, True])
def test_dangling_symlink_at_destination_like_gnu(tmp_path: Path, engine: str,
                                                  force: bool) -> None:
    outcomes = {}
    for who in ("gnu", "ours"):
        d = tmp_path / who
        d.mkdir()
        (d / "src").write_bytes(b"secret\n")
        (d / "dst").symlink_to(d / "victim-not-there")
        argv = ["cp"] if who == "gnu" else [URING_CP, "--engine", engine]
        res = run([*argv, *(["-f"] if force else []), "src", "dst"], cwd=d)
        outcomes[who] = (res.returncode,
                         res.stderr.replace(b"uring-cp:", b"cp:"),
                         os.path.islink(d / "dst"),
                         (d / "victim-not-there").exists(),
                         (d / "dst").read_bytes() if (d / "dst").exists() else None)
    assert outcomes["ours"] == outcomes["gnu"]
    if not force:
        assert outcomes["ours"][1] == b"cp: not writing through dangling symlink 'dst'\n"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", [100, 3 << 20], ids=["small", "large"])
def test_symlink_planted_at_temporary_name(tmp_path: Path, monkeypatch, engine: str,
                                           size: int) -> None:
    """The temporary's name made predictable: symlinks planted under every
    name cp will try are never followed (O_EXCL|O_NOFOLLOW)."""
    monkeypatch.setattr(os, "urandom", lambda n: b"\0" * n)
    src = tmp_path / "src"
    data = os.urandom(size)
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch\n")
    for tag in ("000000", "00000000"):
        for serial in range(1, 40):
            for name in ("dst", "src"):
                link = out / f".{name}.ucp-{tag}{serial:x}"
                if not os.path.lexists(link):
                    link.symlink_to(victim)
    errors = []
    ok = copy_paths([str(src)], str(out / "dst"),
                    options=CopyOptions(engine=engine), on_error=errors.append)
    assert ok, errors
    assert (out / "dst").read_bytes() == data
    assert victim.read_bytes() == b"do not touch\n"
    assert all(p.is_symlink() for p in out.iterdir() if ".ucp-" in p.name)
    # and into a directory (the tree walk, chains of small files)
    ok = copy_paths([str(src)], str(out), options=CopyOptions(engine=engine),
                    on_error=errors.append)
    assert ok, errors
    assert (out / "src").read_bytes() == data
    assert victim.read_bytes() == b"do not touch\n"


# -- temporaries are never readable by others -------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("umask,src_mode", [(0, 0o600), (0o022, 0o600),
                                            (0o077, 0o644)])
def test_temporary_mode_during_slow_copy(tmp_path: Path, engine: str, umask: int,
                                         src_mode: int) -> None:
    """A copy held mid-file (the source is a FIFO): the temporary beside the
    destination has at most the final mode minus the umask, never group or
    world bits for a 0600 source."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, src_mode)
    os.chmod(fifo, src_mode)
    wfd = []

    def feed() -> None:
        fd = os.open(fifo, os.O_WRONLY)
        wfd.append(fd)
        os.write(fd, b"secret" * 10000)

    t = threading.Thread(target=feed, daemon=True)
    t.start()

    def pre() -> None:
        os.umask(umask)

    proc = subprocess.Popen([URING_CP, "--engine", engine, str(fifo),
                             str(tmp_path / "dst")], stderr=subprocess.PIPE,
                            env=ENV, preexec_fn=pre)
    try:
        deadline = time.monotonic() + 20
        temps = []
        while time.monotonic() < deadline:
            temps = [p for p in tmp_path.iterdir() if ".ucp-" in p.name]
            if temps and temps[0].stat().st_size == 60000:
                break
            time.sleep(0.02)
        assert temps, "no temporary seen"
        mode = stat.S_IMODE(temps[0].stat().st_mode)
        assert mode == src_mode & ~umask & 0o777
        if src_mode == 0o600:
            assert mode & 0o077 == 0
    finally:
        t.join(10)
        for fd in wfd:
            os.close(fd)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert (tmp_path / "dst").read_bytes() == b"secret" * 10000
    assert stat.S_IMODE((tmp_path / "dst").stat().st_mode) == src_mode & ~umask


# -- hostile check files -----------------------------------------------------------

def compare_check(tmp_path: Path, sums: bytes, *opts: str) -> None:
    (tmp_path / "SUMS").write_bytes(sums)
    ours = run([URING_HASH, "-c", *opts, "SUMS"], cwd=tmp_path)
    gnu = run(["sha256sum", "-c", *opts, "SUMS"], cwd=tmp_path)
    no_traceback(ours.stderr)
    assert ours.returncode == gnu.returncode
    assert ours.stdout == gnu.stdout
    assert ours.stderr == gnu.stderr.replace(b"sha256sum:", b"uring-hash:")


@pytest.mark.parametrize("opts", [(), ("-w",), ("--strict",), ("--quiet",)])
def test_check_file_long_lines(tmp_path: Path, opts) -> None:
    good = tmp_path / "good"
    good.write_bytes(b"fine\n")
    digest = hashlib.sha256(b"fine\n").hexdigest()
    sums = (b"x" * (3 << 20) + b"\n"                         # 3 MiB of junk
            + digest.encode() + b"  " + b"n" * (1 << 20) + b"\n"  # 1 MiB name
            + b"SHA256 (" + b"(" * 100000 + b") = " + digest.encode() + b"\n"
            + digest.encode() + b"  good\n")
    compare_check(tmp_path, sums, *opts)


@pytest.mark.parametrize("opts", [(), ("-w",)])
def test_check_file_nul_bytes(tmp_path: Path, opts) -> None:
    good = tmp_path / "good"
    good.write_bytes(b"fine\n")
    digest = hashlib.sha256(b"fine\n").hexdigest().encode()
    sums = (digest + b"  good\0trailing\n"
            + b"\0" * 100 + b"\n"
            + digest[:10] + b"\0" + digest[11:] + b"  good\n"
            + b"SHA256 (good\0x) = " + digest + b"\n"
            + b"SHA256 (good) = " + digest + b"\0\n"
            + b"\\" + digest + b"  go\\\0od\n"
            + digest + b"  good\n")
    compare_check(tmp_path, sums, *opts)


@pytest.mark.parametrize("opts", [(), ("-w",), ("--ignore-missing",)])
def test_check_file_non_utf8_names(tmp_path: Path, opts) -> None:
    names = [b"caf\xe9", b"\xff\xfe", b"ok-\xc3\xa9", b"tab\there", b"new\nline",
             b"back\\slash"]
    lines = []
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(tmp_path), name)
        with open(path, "wb") as fh:
            fh.write(b"%d\n" % i)
        digest = hashlib.sha256(b"%d\n" % i).hexdigest().encode()
        if i == 2:
            digest = b"0" * 64   # one mismatch
        if b"\n" in name or b"\\" in name:
            shown = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
            lines.append(b"\\" + digest + b"  " + shown + b"\n")
        else:
            lines.append(digest + b"  " + name + b"\n")
    lines.append(b"0" * 64 + b"  missing-\xe9\n")
    compare_check(tmp_path, b"".join(lines), *opts)


def test_hash_output_for_hostile_names_is_gnus(tmp_path: Path) -> None:
    names = [b"caf\xe9", b"new\nline", b"back\\slash", b"cr\rname", b"-dash"]
    for name in names:
        with open(os.path.join(os.fsencode(tmp_path), name), "wb") as fh:
            fh.write(name)
    args = [os.fsdecode(b"./" + n) for n in names]
    ours = run([URING_HASH, *args], cwd=tmp_path)
    gnu = run(["sha256sum", *args], cwd=tmp_path)
    assert ours.returncode == gnu.returncode == 0
    assert ours.stdout == gnu.stdout

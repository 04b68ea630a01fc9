"""Load: many small files, bounded descriptors, memory that does not grow
with file size, several instances at once, a 5 GiB sparse file; and the
unprivileged limits (RLIMIT_MEMLOCK 64 KiB, RLIMIT_NOFILE 16) as nobody.

CI uses 20,000 files; the 100,000-file run was done by hand (RELIABILITY.md).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import List

import pytest

from conftest import BIN, ENV, as_nobody, no_traceback, stats_json

URING_CP = str(BIN / "uring-cp")
URING_HASH = str(BIN / "uring-hash")
URING_CAT = str(BIN / "uring-cat")
NFILES = int(os.environ.get("URINGTOOLS_LOAD_FILES", "20000"))


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many") / "tree"
    per_dir = 1000
    for i in range(NFILES):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i:06d}").write_bytes(b"%d\n" % i * (i % 7 + 1))
    return root


def run_measured(argv: List[str], **kw):
    """Run ``argv``; return (status, stdout, stderr, most open fds seen)."""
    proc = subprocess.Popen(argv, stdout=kw.get("stdout", subprocess.PIPE),
                            stderr=subprocess.PIPE, env=ENV, cwd=kw.get("cwd"))
    peak_fds = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal peak_fds
        while not stop.is_set():
            try:
                peak_fds = max(peak_fds, len(os.listdir(f"/proc/{proc.pid}/fd")))
            except OSError:
                pass
            time.sleep(0.005)

    t = threading.Thread(target=count, daemon=True)
    t.start()
    try:
        out, err = proc.communicate(timeout=kw.get("timeout", 120))
    finally:
        stop.set()
        t.join()
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err, peak_fds


def maxrss(argv: List[str], stdout=subprocess.DEVNULL) -> tuple:
    """(status, stderr, ru_maxrss KiB) of one run, from wait4."""
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=ENV)
    err = proc.stderr.read()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, rusage.ru_maxrss


def test_cp_many_files(many: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    status, _, err, fds = run_measured(
        ["prlimit", "--nofile=64", URING_CP, "-r", "--stats-format", "json",
         str(many), str(out)])
    no_traceback(err)
    assert status == 0, err[-2000:]
    assert stats_json(err)["files"] >= NFILES
    res = subprocess.run(["diff", "-r", str(many), str(out)], capture_output=True)
    assert res.returncode == 0, res.stdout[:2000]
    assert fds <= 64


def test_hash_many_files(many: Path, tmp_path: Path) -> None:
    """Every file through one process: -c over a check file naming them all
    (no ARG_MAX limit), and operands for the first thousands."""
    names = sorted(str(p) for p in many.rglob("f*"))
    sums = tmp_path / "SUMS"
    with open(sums, "wb") as fh:
        subprocess.run(["xargs", "-0", "md5sum"], input="\0".join(names).encode(),
                       stdout=fh, check=True)
    status, out, err, fds = run_measured(
        ["prlimit", "--nofile=64", URING_HASH, "-a", "md5", "-c", str(sums)])
    no_traceback(err)
    assert status == 0, err[-2000:]
    assert out.count(b": OK\n") == len(names) and err == b""
    assert fds <= 64
    some = names[:5000]
    status, out, err, fds = run_measured(
        ["prlimit", "--nofile=64", URING_HASH, "-a", "md5", *some])
    assert status == 0, err[-2000:]
    assert out == subprocess.run(["md5sum", *some], capture_output=True).stdout
    assert fds <= 64


def test_peak_rss_does_not_grow_with_size(tmp_path: Path) -> None:
    small = tmp_path / "small"
    big = tmp_path / "big"
    for path, size in ((small, 16 << 20), (big, 1 << 30)):
        with open(path, "wb") as fh:
            fh.truncate(size)
    rss = {}
    for cmd in ([URING_HASH], [URING_CAT, "--no-splice"], [URING_CAT]):
        for path in (small, big):
            status, err, kib = maxrss([*cmd, str(path)])
            assert status == 0, err
            rss[(cmd[-1], path.name)] = kib
    for cmd in (URING_HASH, "--no-splice", URING_CAT):
        growth = rss[(cmd, "big")] - rss[(cmd, "small")]
        assert growth < 8 * 1024, f"{cmd}: RSS grew by {growth} KiB: {rss}"
    # cp: the data of a 1 GiB file (not sparse-skipped: --sparse=never)
    for path in (small, big):
        status, err, kib = maxrss([URING_CP, "--sparse=never", str(path),
                                   str(tmp_path / f"copy-{path.name}")])
        assert status == 0, err
        rss[("cp", path.name)] = kib
        os.unlink(tmp_path / f"copy-{path.name}")
    assert rss[("cp", "big")] - rss[("cp", "small")] < 8 * 1024, rss


def test_eight_instances_at_once(tmp_path: Path) -> None:
    data = [os.urandom(3 << 20) for _ in range(2)]
    srcs = []
    for i, d in enumerate(data):
        p = tmp_path / f"src{i}"
        p.write_bytes(d)
        srcs.append(p)
    procs = []
    for i in range(8):
        src = srcs[i % 2]
        kind = i % 3
        if kind == 0:
            argv = [URING_CAT, str(src)]
        elif kind == 1:
            argv = [URING_HASH, str(src), str(srcs[(i + 1) % 2])]
        else:
            argv = [URING_CP, str(src), str(tmp_path / f"dst{i}")]
        procs.append((i, kind, src, subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)))
    for i, kind, src, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        if kind == 0:
            assert out == src.read_bytes()
        elif kind == 1:
            other = srcs[(i + 1) % 2]
            assert out == (f"{hashlib.sha256(src.read_bytes()).hexdigest()}  {src}\n"
                           f"{hashlib.sha256(other.read_bytes()).hexdigest()}  {other}\n"
                           ).encode()
        else:
            assert (tmp_path / f"dst{i}").read_bytes() == src.read_bytes()


#: sha1sum of 5 GiB holding "start" at 0, "middle" at 2.5 GiB, "end" at the end
SPARSE_5G_SHA1 = "90486d98dd20d76b5859f1b52fe4f3e95b0fe520"


def test_five_gib_sparse(tmp_path: Path) -> None:
    src = tmp_path / "sparse"
    size = 5 << 30
    with open(src, "wb") as fh:
        fh.write(b"start")
        fh.seek(size // 2)
        fh.write(b"middle")
        fh.seek(size - 3)
        fh.write(b"end")
    # sha1 (the fastest digest here) against sha1sum's digest of this exact
    # layout, computed once by hand: hashing 5 GiB twice costs CI a minute
    res = subprocess.run([URING_HASH, "-a", "sha1", str(src)], capture_output=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{SPARSE_5G_SHA1}  {src}\n".encode()
    dst = tmp_path / "copy"
    res = subprocess.run([URING_CP, str(src), str(dst)], capture_output=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    st = dst.stat()
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20, "the copy is not sparse"
    with open(dst, "rb") as fh:
        assert fh.read(5) == b"start"
        fh.seek(size // 2)
        assert fh.read(6) == b"middle"
        fh.seek(size - 3)
        assert fh.read() == b"end"
        fh.seek(1 << 30)
        assert fh.read(1 << 16) == bytes(1 << 16)


# -- unprivileged: small RLIMIT_MEMLOCK and RLIMIT_NOFILE, as nobody ----------

LIMITS = ["prlimit", "--memlock=65536", "--nofile=16"]


@pytest.mark.parametrize("cmd", ["cat", "cat-buffers", "hash", "hash-many", "cp",
                                 "cp-tree"])
def test_unprivileged_low_limits(shared_tmp: Path, cmd: str) -> None:
    data = os.urandom(1 << 20) + b"tail"
    src = shared_tmp / "src"
    src.write_bytes(data)
    src.chmod(0o644)
    tree = shared_tmp / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"f{i}").write_bytes(data[: i * 1000])
    os.chown(shared_tmp, 65534, 65534)
    argv = {
        "cat": ["cat", "--stats-format", "json", str(src)],
        "cat-buffers": ["cat", "--no-splice", "--stats-format", "json", str(src)],
        "hash": ["hash", "--stats-format", "json", str(src)],
        "hash-many": ["hash", "--stats-format", "json",
                      *[str(p) for p in sorted(tree.iterdir())]],
        "cp": ["cp", "--stats-format", "json", str(src), str(shared_tmp / "dst")],
        "cp-tree": ["cp", "-r", "--stats-format", "json", str(tree),
                    str(shared_tmp / "out")],
    }[cmd]
    res = subprocess.run(as_nobody(argv, LIMITS), capture_output=True,
                         timeout=120, env=ENV)
    no_traceback(res.stderr)
    assert res.returncode == 0, res.stderr[-3000:]
    stats = stats_json(res.stderr)
    assert [line for line in res.stderr.splitlines()[:-1]] == []
    assert stats["engine"] == "uring"
    if cmd.startswith("cat"):
        assert res.stdout == data
    elif cmd == "hash":
        assert res.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    elif cmd == "hash-many":
        gnu = subprocess.run(["sha256sum", *[str(p) for p in sorted(tree.iterdir())]],
                             capture_output=True)
        assert res.stdout == gnu.stdout
    elif cmd == "cp":
        assert (shared_tmp / "dst").read_bytes() == data
    else:
        for p in tree.iterdir():
            assert (shared_tmp / "out" / p.name).read_bytes() == p.read_bytes()
    if cmd == "cp" and stats["extra"].get("files_spliced"):
        # a large file goes by splice pairs: nothing is pinned at all
        assert stats["registered_buffers"] is False
        assert "splice" in stats["ops"]
    elif cmd in ("cat-buffers", "hash", "cp"):
        # a 64 KiB memlock cannot hold the arena: said so in the stats
        assert stats["registered_buffers"] is False
        assert "RLIMIT_MEMLOCK" in stats["registered_buffers_note"]

"""uring-cp against GNU cp 9.1: the bytes, modes, times, trees, messages and
exit status on the same inputs, with both engines; and the faults GNU cp
gets wrong (a failed or interrupted copy must lose nothing)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

BIN = Path(sys.executable).parent
URING_CP = str(BIN / "uring-cp")
URINGTOOLS = str(BIN / "uringtools")
GNU_CP = "cp"  # found on PATH: GNU names itself after argv[0]
SECCOMP_EXEC = str(Path(__file__).resolve().parent / "seccomp_exec.py")
ENGINES = ["uring", "sync"]
BS = 4096
ENV = dict(os.environ, LC_ALL="C")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run(argv: List[str], cwd: Path, *, prefix: Optional[List[str]] = None,
        umask: Optional[int] = None) -> subprocess.CompletedProcess:
    def pre() -> None:
        if umask is not None:
            os.umask(umask)
    return subprocess.run((prefix or []) + argv, cwd=cwd, capture_output=True,
                          env=ENV, timeout=60, preexec_fn=pre)


def ucp(*args: str, cwd: Path, engine: str = "uring", **kw):
    return run([URING_CP, "--engine", engine, *args], cwd, **kw)


def gcp(*args: str, cwd: Path, **kw):
    return run([GNU_CP, *args], cwd, **kw)


def same_messages(ours: subprocess.CompletedProcess,
                  gnu: subprocess.CompletedProcess) -> None:
    assert ours.returncode == gnu.returncode, (ours.stderr, gnu.stderr)
    assert ours.stderr.decode().replace("uring-cp:", "cp:") == gnu.stderr.decode()
    assert ours.stdout == gnu.stdout
    assert b"Traceback" not in ours.stderr


def snapshot(root: Path, times: bool = False) -> Dict[str, Tuple]:
    """Every entry under root: type, mode, content or link (and times)."""
    out: Dict[str, Tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                info: Tuple = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                info = ("d", stat.S_IMODE(st.st_mode))
            elif not stat.S_ISREG(st.st_mode):   # a FIFO: never read it
                info = ("s", stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
            else:
                info = ("f", stat.S_IMODE(st.st_mode),
                        Path(p).read_bytes())
            if times and not stat.S_ISLNK(st.st_mode):
                info += (st.st_mtime_ns,)
            out[rel] = info
    return out


def gnu_and_ours_as_nobody(tmp: Path) -> List[Path]:
    """The two roots (tmp/gnu, tmp/ours) of a test that runs GNU cp and
    ours as nobody on trees built alike; skipped unless we are root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    tmp.chmod(0o755)
    return [tmp / "gnu", tmp / "ours"]


def no_temps(*dirs: Path) -> None:
    for d in dirs:
        for dirpath, dirnames, filenames in os.walk(d):
            left = [n for n in dirnames + filenames if ".ucp-" in n]
            assert not left, f"temporaries left in {dirpath}: {left}"


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                          str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# -- bytes --------------------------------------------------------------------

SIZES = [0, 1, BS - 1, BS, BS + 1, 16 * BS - 1, 16 * BS, 16 * BS + 1,
         40 * BS + 123]


@pytest.mark.parametrize("engine", ENGINES)
def test_sizes_around_block_boundaries(tmp: Path, engine: str) -> None:
    for size in SIZES:
        data = os.urandom(size)
        (tmp / f"s{size}").write_bytes(data)
        res = ucp("--block-size", str(BS), f"s{size}", f"d{size}", cwd=tmp,
                  engine=engine)
        assert res.returncode == 0, res.stderr
        assert (tmp / f"d{size}").read_bytes() == data
    no_temps(tmp)


@pytest.mark.parametrize("engine", ENGINES)
def test_many_files_into_directory(tmp: Path, engine: str) -> None:
    names = []
    for i in range(60):
        (tmp / f"f{i}").write_bytes(os.urandom(i * 997))
        names.append(f"f{i}")
    (tmp / "out").mkdir()
    res = ucp("--block-size", str(BS), *names, "out", cwd=tmp, engine=engine)
    assert res.returncode == 0, res.stderr
    for n in names:
        assert (tmp / "out" / n).read_bytes() == (tmp / n).read_bytes()
    (tmp / "t").mkdir()
    assert ucp("-t", "t", "f1", "f2", cwd=tmp, engine=engine).returncode == 0
    assert (tmp / "t" / "f2").read_bytes() == (tmp / "f2").read_bytes()
    assert ucp("-T", "f3", "t3", cwd=tmp, engine=engine).returncode == 0
    assert (tmp / "t3").read_bytes() == (tmp / "f3").read_bytes()
    no_temps(tmp)


@pytest.mark.parametrize("engine", ENGINES)
def test_overwrite_longer_destination_keeps_its_mode(tmp: Path,
                                                     engine: str) -> None:
    (tmp / "src").write_bytes(b"short")
    (tmp / "src").chmod(0o755)
    for who, cp in (("ours", lambda *a: ucp(*a, cwd=tmp, engine=engine)),
                    ("gnu", lambda *a: gcp(*a, cwd=tmp))):
        dst = tmp / f"dst-{who}"
        dst.write_bytes(b"a much longer previous content" * 100)
        dst.chmod(0o640)
        assert cp("src", dst.name).returncode == 0
        assert dst.read_bytes() == b"short"
    a, b = os.stat(tmp / "dst-ours"), os.stat(tmp / "dst-gnu")
    assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode) == 0o640


@pytest.mark.parametrize("engine", ENGINES)
def test_new_destination_mode_is_source_minus_umask(tmp: Path,
                                                    engine: str) -> None:
    (tmp / "src").write_bytes(b"x" * 10000)
    (tmp / "src").chmod(0o777)
    assert ucp("src", "ours", cwd=tmp, engine=engine, umask=0o027).returncode == 0
    assert gcp("src", "gnu", cwd=tmp, umask=0o027).returncode == 0
    assert (stat.S_IMODE(os.stat(tmp / "ours").st_mode)
            == stat.S_IMODE(os.stat(tmp / "gnu").st_mode) == 0o750)


def test_nonregular_destination_written_in_place(tmp: Path) -> None:
    (tmp / "src").write_bytes(b"data" * 5000)
    assert ucp("src", "/dev/null", cwd=tmp).returncode == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    os.mkfifo(tmp / "fifo")
    reader = subprocess.Popen(["cat", str(tmp / "fifo")], stdout=subprocess.PIPE)
    assert ucp("src", "fifo", cwd=tmp).returncode == 0
    assert reader.communicate(timeout=10)[0] == b"data" * 5000
    assert stat.S_ISFIFO(os.lstat(tmp / "fifo").st_mode)


def test_stream_source(tmp: Path) -> None:
    res = ucp("/proc/self/status", "st", cwd=tmp)
    assert res.returncode == 0
    assert b"Name:" in (tmp / "st").read_bytes()


# -- trees --------------------------------------------------------------------

def make_tree(root: Path) -> None:
    (root / "d" / "sub" / "deeper").mkdir(parents=True)
    (root / "d" / "empty").mkdir()
    (root / "d" / "sub" / "empty2").mkdir()
    for i, p in enumerate(["a", "sub/b", "sub/deeper/c", "z"]):
        (root / "d" / p).write_bytes(os.urandom(i * 5000 + 1))
    (root / "d" / "sub" / "b").chmod(0o600)
    (root / "d" / "sub" / "deeper").chmod(0o750)
    os.symlink("a", root / "d" / "link")
    os.symlink("../nowhere", root / "d" / "sub" / "dangling")
    os.symlink("/etc", root / "d" / "abs")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("flag", ["-r", "-R", "-a"])
def test_tree_like_gnu(tmp: Path, engine: str, flag: str) -> None:
    make_tree(tmp)
    ours = ucp(flag, "d", "ours", cwd=tmp, engine=engine)
    gnu = gcp(flag, "d", "gnu", cwd=tmp)
    same_messages(ours, gnu)
    times = flag == "-a"
    assert snapshot(tmp / "ours", times) == snapshot(tmp / "gnu", times)
    # into an existing directory: d lands inside it
    ours = ucp(flag, "d", "ours", cwd=tmp, engine=engine)
    gnu = gcp(flag, "d", "gnu", cwd=tmp)
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours", times) == snapshot(tmp / "gnu", times)
    no_temps(tmp)


def test_verbose_like_gnu(tmp: Path) -> None:
    make_tree(tmp)
    ours = ucp("-rv", "d", "ours", cwd=tmp)
    gnu = gcp("-rv", "d", "gnu", cwd=tmp)
    assert ours.returncode == gnu.returncode == 0
    assert ours.stdout.decode().replace("'ours", "'X") == \
        gnu.stdout.decode().replace("'gnu", "'X")
    (tmp / "f").write_bytes(b"x")
    assert ucp("-v", "f", "g", cwd=tmp).stdout == b"'f' -> 'g'\n"


def _operand_clash_tree(root: Path) -> None:
    for d in ("a/s", "b/s", "c", "h", "q/x", "d", "g2"):
        (root / d).mkdir(parents=True)
    (root / "a/x").write_bytes(b"A\n")
    (root / "b/x").write_bytes(b"B\n")
    (root / "a/s/y").write_bytes(b"1\n")
    (root / "b/s/y").write_bytes(b"2\n")
    os.link(root / "b/x", root / "h/x")
    # an absolute symlink the same for both trees: a file beside them (were
    # a refusal missed, a system file would be written through)
    victim = root.parent / "victim"
    victim.write_bytes(b"victim\n")
    (root / "c/x").symlink_to(victim)
    os.mkfifo(root / "g")
    (root / "g2/g").symlink_to(victim)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("args", [
    "a/x b/x d", "-f a/x b/x a/x d", "-n a/x b/x d", "a/x ./a/x d",
    "b/x h/x d", "-P a/x c/x d", "-P c/x a/x d", "-r b/x q/x d",
    "-r q/x b/x d", "-r a/s b/s d", "-r a/s ./a/s/ d", "-rP g2/g g d",
    "-rv a/s b/s a/x b/x d", "-t d a/x b/x"])
def test_operands_with_one_destination_name_like_gnu(tmp: Path, engine: str,
                                                     args: str) -> None:
    """Two operands landing on one name: 'will not overwrite just-created',
    'through just-created symlink', 'specified more than once', as GNU."""
    results = {}
    for who in ("gnu", "ours"):
        root = tmp / who
        _operand_clash_tree(root)
        argv = [GNU_CP] if who == "gnu" else [URING_CP, "--engine", engine]
        res = run([*argv, *args.split()], root)
        results[who] = (res.returncode, res.stdout,
                        res.stderr.replace(b"uring-cp:", b"cp:"),
                        snapshot(root / "d"), (tmp / "victim").read_bytes())
    assert results["ours"] == results["gnu"]
    no_temps(tmp)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
@pytest.mark.parametrize("flags", ["", "-v"])
def test_verbose_to_bad_stdout_like_gnu(tmp: Path, engine: str, redirect: str,
                                        flags: str) -> None:
    """-v into a closed stdout or a full disk: the copy is made, then
    GNU's one 'write error' line and status 1; without -v: status 0."""
    (tmp / "f").write_bytes(b"data\n")
    outcomes = {}
    for who, argv in (("gnu", GNU_CP), ("ours", f"{URING_CP} --engine {engine}")):
        res = run(["bash", "-c", f"{argv} {flags} f {who} {redirect}"], tmp)
        outcomes[who] = (res.returncode, res.stderr.replace(b"uring-cp:", b"cp:"),
                         (tmp / who).read_bytes())
    assert outcomes["ours"] == outcomes["gnu"]
    assert b"Traceback" not in outcomes["ours"][1]


@pytest.mark.parametrize("engine", ENGINES)
def test_preserve_mode_and_ns_timestamps(tmp: Path, engine: str) -> None:
    (tmp / "src").write_bytes(os.urandom(70000))
    (tmp / "src").chmod(0o4751)
    os.utime(tmp / "src", ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
    for flag in ("-p", "-a", "--preserve"):
        os.utime(tmp / "src", ns=(1_500_000_000_123_456_789,
                                  1_600_000_000_987_654_321))
        dst = tmp / f"dst{flag}"
        dst.write_bytes(b"old")
        dst.chmod(0o600)
        assert ucp(flag, "src", dst.name, cwd=tmp, engine=engine).returncode == 0
        s, d = os.stat(tmp / "src"), os.stat(dst)
        assert stat.S_IMODE(d.st_mode) == 0o4751
        # times as stat saw them before the copy (reading moves the atime)
        assert (d.st_atime_ns, d.st_mtime_ns) == (1_500_000_000_123_456_789,
                                                  1_600_000_000_987_654_321)
        assert s.st_mtime_ns == d.st_mtime_ns
    # directories too, after their contents are written
    make_tree(tmp)
    os.utime(tmp / "d" / "sub", ns=(1_000_000_000_000_000_001,
                                    1_000_000_000_000_000_002))
    assert ucp("-a", "d", "copy", cwd=tmp, engine=engine).returncode == 0
    assert os.stat(tmp / "copy" / "sub").st_mtime_ns == 1_000_000_000_000_000_002
    assert os.lstat(tmp / "copy" / "link").st_mtime_ns == \
        os.lstat(tmp / "d" / "link").st_mtime_ns


def test_preserve_ownership_as_root(tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    (tmp / "src").write_bytes(b"x")
    os.chown(tmp / "src", 65534, 65534)
    assert ucp("-p", "src", "dst", cwd=tmp).returncode == 0
    st = os.stat(tmp / "dst")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    # an existing destination keeps its owner without -p
    assert ucp("src", "dst", cwd=tmp).returncode == 0 if os.chown(
        tmp / "dst", 1, 1) is None else False
    assert os.stat(tmp / "dst").st_uid == 1


def test_dereference_options(tmp: Path) -> None:
    (tmp / "f").write_bytes(b"target")
    os.symlink("f", tmp / "sl")
    assert ucp("sl", "a", cwd=tmp).returncode == 0
    assert not os.path.islink(tmp / "a")
    assert ucp("-P", "sl", "b", cwd=tmp).returncode == 0
    assert os.readlink(tmp / "b") == "f"
    assert ucp("-rL", "sl", "c", cwd=tmp).returncode == 0
    assert not os.path.islink(tmp / "c")
    assert ucp("-r", "sl", "d", cwd=tmp).returncode == 0
    assert os.readlink(tmp / "d") == "f"


def test_no_clobber(tmp: Path) -> None:
    (tmp / "a").write_bytes(b"new")
    (tmp / "b").write_bytes(b"old")
    ours = ucp("-n", "a", "b", cwd=tmp)
    assert ours.returncode == 0 and ours.stderr == b""
    assert (tmp / "b").read_bytes() == b"old"


# -- GNU's messages -------------------------------------------------------------

MESSAGE_CASES = [
    ["a", "a"],
    ["a", "hl"],
    ["a", "sl"],
    ["-r", "d", "d/sub"],
    ["-r", "d", "d"],
    ["d", "e"],
    ["nope", "e"],
    ["a", "dangle"],
    ["a", "b", "nonexist"],
    ["a", "b", "a"],
    ["a", "b", "d/nodir/"],
    ["-r", "d", "a"],
    ["-T", "a", "d"],
    ["-t", "a", "b"],
    ["-t", "nonexist", "a"],
    ["-t", "d", "-t", "d", "a"],            # GNU refuses a second -t
    ["-t", "d", "--target-dir=d2", "a"],    # (through Click too)
    ["nope1", "a", "d"],
    ["it's", "it's"],
    ["a b", "a b"],
    ["n\nl", "n\nl"],
    ["a"],
    [],
    ["-T", "a", "b", "c"],
    ["a", "d2"],
    ["-r", "d", "d2/x"],
]


@pytest.mark.parametrize("engine", ENGINES)
def test_messages_like_gnu(tmp: Path, engine: str) -> None:
    def setup(root: Path) -> None:
        root.mkdir()
        (root / "a").write_text("hi\n")
        (root / "b").write_text("b\n")
        (root / "d" / "sub").mkdir(parents=True)
        (root / "d2" / "a").mkdir(parents=True)
        os.symlink("nowhere", root / "dangle")
        os.link(root / "a", root / "hl")
        os.symlink("a", root / "sl")
        for odd in ("it's", "a b", "n\nl"):
            (root / odd).write_text("odd\n")
    for case in MESSAGE_CASES:
        setup(tmp / "ours")
        setup(tmp / "gnu")
        ours = ucp(*case, cwd=tmp / "ours", engine=engine)
        gnu = gcp(*case, cwd=tmp / "gnu")
        ours_err = ours.stderr.decode().replace("uring-cp", "cp")
        assert ours.returncode == gnu.returncode, case
        assert ours_err == gnu.stderr.decode(), case
        no_temps(tmp / "ours")
        shutil.rmtree(tmp / "ours")
        shutil.rmtree(tmp / "gnu")


def test_carries_on_after_a_bad_operand(tmp: Path) -> None:
    (tmp / "a").write_bytes(b"a")
    (tmp / "d").mkdir()
    (tmp / "out").mkdir()
    res = ucp("nope", "d", "a", "out", cwd=tmp)
    assert res.returncode == 1
    assert (tmp / "out" / "a").read_bytes() == b"a"
    assert res.stderr.decode().splitlines() == [
        "uring-cp: cannot stat 'nope': No such file or directory",
        "uring-cp: -r not specified; omitting directory 'd'"]


def test_permission_messages_like_gnu(tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    for who in ("ours", "gnu"):
        root = tmp / who
        root.mkdir()
        root.chmod(0o777)
        (root / "ro").write_text("old\n")
        (root / "ro").chmod(0o444)
        (root / "secret").write_text("s\n")
        (root / "secret").chmod(0o000)
        (root / "src").write_text("new\n")
        (root / "src").chmod(0o644)
    for case in (["src", "ro"], ["secret", "x"], ["src", "/proc/sys/x"]):
        ours = run([URING_CP, *case], tmp / "ours", prefix=NOBODY)
        gnu = run([GNU_CP, *case], tmp / "gnu", prefix=NOBODY)
        assert ours.returncode == gnu.returncode, case
        assert ours.stderr.decode().replace("uring-cp", "cp") == \
            gnu.stderr.decode(), case
    assert (tmp / "ours" / "ro").read_text() == "old\n"
    # -f replaces a destination it cannot write, as GNU does
    ours = run([URING_CP, "-f", "src", "ro"], tmp / "ours", prefix=NOBODY)
    assert ours.returncode == 0, ours.stderr
    assert (tmp / "ours" / "ro").read_text() == "new\n"
    no_temps(tmp)


# -- faults: nothing is lost ------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_enospc_keeps_old_destination(tiny_tmpfs: Path, tmp: Path,
                                      engine: str) -> None:
    big = tmp / "big"
    big.write_bytes(os.urandom(3 << 20))
    (tiny_tmpfs / "old").write_bytes(b"precious")
    res = ucp(str(big), "old", cwd=tiny_tmpfs, engine=engine)
    assert res.returncode == 1
    assert res.stderr.decode() == \
        "uring-cp: error writing 'old': No space left on device\n"
    assert (tiny_tmpfs / "old").read_bytes() == b"precious"
    res = ucp(str(big), "new", cwd=tiny_tmpfs, engine=engine)
    assert res.returncode == 1
    assert not (tiny_tmpfs / "new").exists()
    assert sorted(os.listdir(tiny_tmpfs)) == ["old"]
    # GNU leaves a truncated file behind; we only check it fails the same way
    gnu = gcp(str(big), "gnu", cwd=tiny_tmpfs)
    assert gnu.returncode == 1 and b"No space left on device" in gnu.stderr
    # several files, one fails: the others still land, the status is 1.
    # small goes first: the blocks of big's removed temporary are freed when
    # the io-wq worker that wrote them drops its file reference, a moment
    # after the failure reaches us, so a file right after it may still
    # find the filesystem full
    os.unlink(tiny_tmpfs / "gnu")
    (tmp / "small").write_bytes(b"s" * 1000)
    (tiny_tmpfs / "dir").mkdir()
    res = ucp(str(tmp / "small"), str(big), "dir", cwd=tiny_tmpfs,
              engine=engine)
    assert res.returncode == 1
    assert os.listdir(tiny_tmpfs / "dir") == ["small"], res.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_gigabyte_fits_tiny_tmpfs(tiny_tmpfs: Path, tmp: Path,
                                         engine: str) -> None:
    src = tmp / "sparse"
    with open(src, "wb") as f:
        f.truncate(1 << 30)
        f.seek(123_456_789)
        f.write(b"!")
    res = ucp(str(src), "copy", cwd=tiny_tmpfs, engine=engine)
    assert res.returncode == 0, res.stderr
    st = os.stat(tiny_tmpfs / "copy")
    assert st.st_size == 1 << 30 and st.st_blocks <= 64
    with open(tiny_tmpfs / "copy", "rb") as f:
        f.seek(123_456_789)
        assert f.read(1) == b"!"


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_past_4gib_keeps_holes(tmp: Path, engine: str) -> None:
    src = tmp / "sparse"
    with open(src, "wb") as f:
        f.write(os.urandom(10000))
        f.seek((5 << 30) + 17)
        f.write(os.urandom(70000))
        f.truncate((6 << 30) + 3)
    res = ucp(str(src), "copy", cwd=tmp, engine=engine)
    assert res.returncode == 0, res.stderr
    s, d = os.stat(src), os.stat(tmp / "copy")
    assert d.st_size == s.st_size
    assert d.st_blocks == s.st_blocks
    with open(src, "rb") as a, open(tmp / "copy", "rb") as b:
        for off in (0, (5 << 30) + 17, (5 << 30) + 60000):
            a.seek(off)
            b.seek(off)
            assert a.read(20000) == b.read(20000)
    # --sparse=always makes holes of zero blocks; never writes them all
    (tmp / "zeros").write_bytes(bytes(1 << 20) + b"x")
    assert ucp("--sparse=always", "zeros", "z2", cwd=tmp,
               engine=engine).returncode == 0
    assert (tmp / "z2").read_bytes() == (tmp / "zeros").read_bytes()
    assert os.stat(tmp / "z2").st_blocks < 100


@pytest.mark.parametrize("flags", [[], ["--engine", "sync"],
                                   ["--block-size", "64K"],
                                   ["--block-size", "12345"]])
@pytest.mark.parametrize("size", [70_000, (1 << 20) + 1])
def test_sparse_always_holes_like_gnu(tmp: Path, flags: List[str],
                                     size: int) -> None:
    """--sparse=always: every 4 KiB piece of zeros becomes a hole, as GNU
    makes them (the destination's st_blksize), whatever our block size;
    the same bytes and the same allocation as GNU's copy."""
    rng = random.Random(size)
    data = bytearray(os.urandom(size))
    runs = [(0, 8192), (size // 2 & ~4095, 12288), (size - 4000, 4000)]
    for _ in range(6):        # zero runs of all lengths and alignments
        runs.append((rng.randrange(size),
                     rng.choice([100, 4096, 5000, 9000, 20_000])))
    for start, length in runs:
        piece = data[start:start + length]
        data[start:start + length] = bytes(len(piece))
    (tmp / "src").write_bytes(data)
    assert gcp("--sparse=always", "src", "gnu", cwd=tmp).returncode == 0
    res = run([URING_CP, *flags, "--sparse=always", "src", "ours"], tmp)
    assert res.returncode == 0, res.stderr
    assert (tmp / "ours").read_bytes() == bytes(data)
    assert os.stat(tmp / "ours").st_blocks == os.stat(tmp / "gnu").st_blocks
    if size > 8192:
        assert os.stat(tmp / "ours").st_blocks * 512 < size   # holes made


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("existing", [False, True])
def test_sigint_mid_copy_loses_nothing(tmp: Path, engine: str,
                                       existing: bool) -> None:
    (tmp / "big").write_bytes(os.urandom(64 << 20))
    if existing:
        (tmp / "dst").write_bytes(b"old content")
    proc = subprocess.Popen([URING_CP, "--engine", engine, "--block-size",
                             "512", "--queue-depth", "1", "big", "dst"],
                            cwd=tmp, stderr=subprocess.PIPE)
    # wait until the temporary exists, then interrupt
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(".ucp-" in n for n in os.listdir(tmp)):
            break
        time.sleep(0.005)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGINT, err
    assert b"Traceback" not in err
    no_temps(tmp)
    if existing:
        assert (tmp / "dst").read_bytes() == b"old content"
    else:
        assert not (tmp / "dst").exists()


def test_sigterm_mid_copy_loses_nothing(tmp: Path) -> None:
    (tmp / "big").write_bytes(os.urandom(32 << 20))
    proc = subprocess.Popen([URING_CP, "--block-size", "512", "big", "dst"],
                            cwd=tmp, stderr=subprocess.PIPE)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode in (-signal.SIGTERM, 0), err
    no_temps(tmp)
    # the signal may land after the rename, before the exit: then the
    # copy is whole; never a part of it
    if (tmp / "dst").exists():
        assert (tmp / "dst").read_bytes() == (tmp / "big").read_bytes()
    else:
        assert proc.returncode == -signal.SIGTERM


# -- odds and ends ------------------------------------------------------------------

def test_fsync_and_stats(tmp: Path) -> None:
    (tmp / "a").write_bytes(os.urandom(300000))
    res = ucp("--fsync", "--stats-format", "json", "a", "b", cwd=tmp)
    assert res.returncode == 0, res.stderr
    assert (tmp / "b").read_bytes() == (tmp / "a").read_bytes()
    import json
    stats = json.loads(res.stderr.decode().strip().splitlines()[-1])
    assert stats["bytes_written"] == 300000 and stats["engine"] == "uring"
    assert stats["ops"]["read_fixed"] == stats["ops"]["write_fixed"]


def test_subcommand_and_help(tmp: Path) -> None:
    (tmp / "a").write_bytes(b"x")
    assert run([URINGTOOLS, "cp", "a", "b"], tmp).returncode == 0
    assert (tmp / "b").read_bytes() == b"x"
    res = run([URING_CP, "--help"], tmp)
    assert res.returncode == 0 and b"--sparse" in res.stdout


def test_falls_back_when_io_uring_is_refused(tmp: Path) -> None:
    if not os.path.exists(SECCOMP_EXEC):
        pytest.skip("no seccomp helper")
    (tmp / "a").write_bytes(os.urandom(100000))
    res = run([sys.executable, SECCOMP_EXEC, "EPERM", URING_CP, "a", "b"], tmp)
    assert res.returncode == 0, res.stderr
    assert b"using the sync engine" in res.stderr
    assert (tmp / "b").read_bytes() == (tmp / "a").read_bytes()
    res = run([sys.executable, SECCOMP_EXEC, "EPERM", URING_CP, "--engine",
               "uring", "a", "c"], tmp)
    assert res.returncode == 1 and not (tmp / "c").exists()


# -- many files: whole-file ring chains (uringtools.copybatch) ----------------------

CHAIN_SIZES = [0, 1, 4095, 4096, 65535, 65536, 65537, 200000]
ODD_NAMES = ["new\nline", "quote'd", 'dq"$x', "sp ace", "tab\there", "ü-utf8",
             os.fsdecode(b"bad-\xff\xfe"), "-dash", "a" * 200]


def make_many(root: Path, files: int = 300) -> None:
    """A tree of ``files`` files of mixed sizes, odd names, a sparse file,
    a symlink and an empty directory."""
    for i in range(files):
        sub = root / f"s{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}").write_bytes(os.urandom(CHAIN_SIZES[i % len(CHAIN_SIZES)]))
    for i, name in enumerate(ODD_NAMES):
        (root / name).write_bytes(os.urandom(100 * i))
    with open(root / "sparse", "wb") as f:
        f.truncate(1 << 20)
        f.seek(300000)
        f.write(b"data")
    os.symlink("s0/f0000", root / "link")
    (root / "empty").mkdir()


def json_stats(res: subprocess.CompletedProcess) -> dict:
    import json
    return json.loads(res.stderr.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("depth", ["1", "4", "64"])
def test_many_files_like_gnu_at_several_depths(tmp: Path, depth: str) -> None:
    make_many(tmp / "d")
    for replacing in (False, True):   # new files, then the same replaced
        t = ["-T"] if replacing else []   # -T: onto ours, not into ours/d
        ours = ucp("-r", *t, "--queue-depth", depth, "--stats-format", "json",
                   "d", "ours", cwd=tmp)
        gnu = gcp("-r", *t, "d", "gnu", cwd=tmp)
        assert ours.returncode == gnu.returncode == 0, ours.stderr
        assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
        stats = json_stats(ours)
        ops = stats["ops"]
        # went through chains: two opens per file; a new tree's files are
        # created in place (their directories are new), replaced ones are
        # renamed over the old
        assert ops["openat"] > 2 * 180
        if replacing:
            assert ops["renameat"] > 180
        else:
            assert "renameat" not in ops
        assert stats["files"] == 300 + len(ODD_NAMES) + 1
    no_temps(tmp)


def test_many_sources_into_a_directory_through_chains(tmp: Path) -> None:
    names = [f"n{i}" for i in range(200)] + ODD_NAMES
    for i, name in enumerate(names):
        (tmp / name).write_bytes(os.urandom(i * 37 % 70000))
    (tmp / "ours").mkdir()
    (tmp / "gnu").mkdir()
    (tmp / "ours" / "n5").write_bytes(b"old, longer than the new content" * 99)
    os.chmod(tmp / "ours" / "n5", 0o640)
    shutil.copy(tmp / "ours" / "n5", tmp / "gnu" / "n5")
    os.chmod(tmp / "gnu" / "n5", 0o640)
    operands = [f"./{n}" if n.startswith("-") else n for n in names]
    res = run([URING_CP, *operands, "ours"], tmp)   # no options: no Click
    assert res.returncode == 0, res.stderr
    assert gcp(*operands, "gnu", cwd=tmp).returncode == 0
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    assert stat.S_IMODE(os.stat(tmp / "ours" / "n5").st_mode) == 0o640
    no_temps(tmp)


def test_vanishing_files_give_gnu_messages(
        tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file gone between the walk's lstat and the open: GNU's "cannot
    open"; a listed file gone before its lstat: GNU's "cannot stat". The
    walk goes entry by entry here (no directory read in C: where one is,
    its small files are stat'ed together there, see
    test_file_vanishing_after_the_directory_was_read)."""
    from uringtools import copybatch
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths

    monkeypatch.setattr(copybatch.BatchCopier, "open_dir",
                        lambda self, *args: None)

    src = tmp / "d"
    (src / "sub").mkdir(parents=True)
    for i in range(50):
        (src / "sub" / f"keep{i}").write_bytes(os.urandom(i * 100))
    for i in range(3):
        (src / "sub" / f"vanish{i}").write_bytes(b"v" * 1000)
        (src / "sub" / f"bigvanish{i}").write_bytes(os.urandom(300000))
    for prefix in ("vanish", "bigvanish"):
        errors: List[str] = []
        seen: List[str] = []

        def on_verbose(line: str, prefix: str = prefix) -> None:
            name = line.split(" -> ")[0].strip("'")
            if os.path.basename(name).startswith(prefix) and not seen:
                seen.append(name)
                for i in range(3):
                    os.unlink(src / "sub" / f"{prefix}{i}")

        dest = tmp / f"out-{prefix}"
        (dest / "sub").mkdir(parents=True)
        ok = copy_paths([str(src)], str(dest), no_target_directory=True,
                        options=CopyOptions(recursive=True, verbose=True),
                        on_error=errors.append, on_verbose=on_verbose)
        assert not ok
        first = seen[0]
        others = sorted(f"{src}/sub/{prefix}{i}" for i in range(3)
                        if f"{src}/sub/{prefix}{i}" != first)
        assert errors[0] == (f"cannot open '{first}' for reading: "
                             "No such file or directory")
        assert sorted(errors[1:]) == [
            f"cannot stat '{n}': No such file or directory" for n in others]
        for i in range(50):
            assert (dest / "sub" / f"keep{i}").read_bytes() == \
                (src / "sub" / f"keep{i}").read_bytes()
        assert not any(n.startswith(prefix) for n in os.listdir(dest / "sub"))
        # restore for the next round
        for i in range(3):
            (src / "sub" / f"{prefix}{i}").write_bytes(b"v" * 1000)
    no_temps(tmp)


@pytest.mark.parametrize("depth", ["4", "64"])
def test_low_nofile_limit_copies_everything(tmp: Path, depth: str) -> None:
    if not shutil.which("prlimit"):
        pytest.skip("no prlimit")
    make_many(tmp / "d")
    for i in range(20):          # files for the chunked path, many in flight
        (tmp / "d" / f"big{i}").write_bytes(os.urandom(300000))
    res = run([URING_CP, "-r", "--queue-depth", depth, "--stats-format", "json",
               "d", "ours"], tmp, prefix=["prlimit", "--nofile=32"])
    assert res.returncode == 0, res.stderr
    assert gcp("-r", "d", "gnu", cwd=tmp).returncode == 0
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    assert json_stats(res)["ops"]["openat"] > 2 * 180   # through chains
    no_temps(tmp)


def test_failed_chains_are_copied_again(tmp: Path) -> None:
    """Every 5th chain write fails (injected EIO): its temporary goes, the
    plain engine copies the file, and the result is still exact."""
    for i in range(200):         # small files only: chunked writes would fail
        sub = tmp / "d" / f"s{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(os.urandom(1 + i * 300))
    for i, name in enumerate(ODD_NAMES):
        (tmp / "d" / name).write_bytes(os.urandom(1 + 100 * i))
    env = dict(ENV, URINGTOOLS_FAULTS="write:eio:5")
    res = subprocess.run([URING_CP, "-r", "--stats-format", "json", "d",
                          "ours"], cwd=tmp, env=env, capture_output=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert gcp("-r", "d", "gnu", cwd=tmp).returncode == 0
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    assert json_stats(res)["extra"]["chain_failed_write"] > 10
    no_temps(tmp)


def test_small_files_on_a_full_disk_lose_nothing(tiny_tmpfs: Path,
                                                 tmp: Path) -> None:
    """ENOSPC in the middle of a tree of small files: every file that
    lands is complete, no temporaries stay, the status is 1."""
    src = tmp / "d"
    src.mkdir()
    for i in range(100):
        (src / f"f{i:03d}").write_bytes(os.urandom(60000))
    res = ucp("-r", str(src), "out", cwd=tiny_tmpfs)
    assert res.returncode == 1
    assert b"No space left on device" in res.stderr
    landed = os.listdir(tiny_tmpfs / "out")
    assert 0 < len(landed) < 100
    for name in landed:
        assert (tiny_tmpfs / "out" / name).read_bytes() == \
            (src / name).read_bytes(), name
    no_temps(tiny_tmpfs)


def test_plain_operands_do_not_import_click(tmp: Path) -> None:
    (tmp / "a").write_bytes(b"x" * 5000)
    # collections, enum, re: loaded before us by an editable install's
    # finder, so counted only when new
    code = ("import sys\n"
            "before = set(sys.modules)\n"
            "sys.argv = ['uring-cp', '-r', 'a', 'b']\n"
            "from uringtools.cli.cp import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    status = e.code\n"
            "print(status, sorted(m for m in ('click', 'rich', 'dataclasses',"
            " 'json', 'typing', 'signal', 'enum', 'collections', 'functools',"
            " 're', 'threading') if m in sys.modules and m not in before))\n")
    res = run([sys.executable, "-c", code], tmp)
    assert res.stdout.decode().split("\n")[0] == "0 []", res.stderr
    assert (tmp / "b").read_bytes() == b"x" * 5000


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15])
def test_sigint_mid_tree_of_chains_loses_nothing(tmp: Path, delay: float) -> None:
    """Interrupted while batches of chains are in flight: every file that
    landed is complete, no temporary is left."""
    src = tmp / "d"
    for i in range(4000):
        sub = src / f"s{i % 8}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(os.urandom(1 + i % 5000))
    proc = subprocess.Popen([URING_CP, "-r", "d", "out"], cwd=tmp,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (tmp / "out").exists():
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (-signal.SIGINT, 0), err
    assert b"Traceback" not in err
    no_temps(tmp)
    landed = 0
    for dirpath, _, filenames in os.walk(tmp / "out"):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), tmp / "out")
            assert (tmp / "out" / rel).read_bytes() == (src / rel).read_bytes()
            landed += 1
    assert landed <= 4000


@pytest.mark.parametrize("reader_gone", ["stdout-v", "stderr-nobody"])
def test_reader_gone_mid_tree_dies_of_sigpipe_and_loses_nothing(
        tmp: Path, reader_gone: str) -> None:
    """-v into a pipe nobody reads, or an error message into one: GNU dies
    of SIGPIPE there, each file it made whole. Ours died of it too (the
    default action, or os.kill from write_stderr) with chains in flight:
    their files were left empty or half-written."""
    roots = gnu_and_ours_as_nobody(tmp) if reader_gone == "stderr-nobody" \
        else [tmp / "gnu", tmp / "ours"]
    for root in roots:
        for i in range(1200):
            sub = root / "src" / f"d{i % 2}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{i:04d}").write_bytes(b"%08d" % i * 2048)
        root.chmod(0o777)
        if reader_gone == "stderr-nobody":
            # GNU's order (by inode): a file in the middle of d0
            victim = sorted((root / "src" / "d0").iterdir(),
                            key=lambda p: p.stat().st_ino)[250]
            victim.chmod(0o000)
    args = ["-r", "src", "out"] if reader_gone == "stderr-nobody" \
        else ["-rv", "src", "out"]
    prefix = NOBODY if reader_gone == "stderr-nobody" else []
    results = {}
    for name, argv in (("gnu", [GNU_CP, *args]), ("ours", [URING_CP, *args])):
        r, w = os.pipe()
        os.close(r)
        try:
            std = {"stderr": w} if reader_gone == "stderr-nobody" \
                else {"stdout": w, "stderr": subprocess.PIPE}
            results[name] = subprocess.run(
                prefix + argv, cwd=tmp / name, env=ENV, timeout=60,
                restore_signals=True, **std)
        finally:
            os.close(w)
    assert results["ours"].returncode == results["gnu"].returncode \
        == -signal.SIGPIPE
    no_temps(tmp / "ours")
    landed = 0
    for root in roots:
        for dirpath, _, filenames in os.walk(root / "out"):
            for name in filenames:
                path = Path(dirpath, name)
                rel = path.relative_to(root / "out")
                assert path.read_bytes() == (root / "src" / rel).read_bytes(), \
                    (root.name, rel)
                landed += 1
    assert landed < 2 * 1200


# -- directories this run made: entries read, stat'ed and chained in C ----------

def vanishing_after_read(*names: str) -> type:
    """A FreshDir that removes ``names`` from its source directory right
    after the C read saw them: their chains then fail to open them."""
    from uringtools import copybatch

    class Vanishing(copybatch.FreshDir):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            for name in names:
                try:
                    os.unlink(Path(self.src) / name)
                except FileNotFoundError:
                    pass

    return Vanishing


def make_troubled(root: Path) -> None:
    """A tree whose new directories hold every kind of entry a copy can
    trip on (unreadable files and directories for an unprivileged user)."""
    make_many(root, files=60)
    (root / "s1" / "secret").write_bytes(b"s" * 3000)
    (root / "s1" / "secret").chmod(0o000)
    (root / "s2" / "locked").mkdir()
    (root / "s2" / "locked" / "inside").write_bytes(b"i")
    (root / "s2" / "locked").chmod(0o000)
    os.symlink("nowhere", root / "s3" / "dangling")
    os.symlink("../s0/f0000", root / "s3" / "tofile")
    os.mkfifo(root / "s4" / "fifo")
    (root / "s5" / "empty").write_bytes(b"")
    for p in (root, *root.iterdir()):
        if p.is_dir() and not p.is_symlink() and p.name != "locked":
            p.chmod(0o755)
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink() and n != "secret":
                p.chmod(0o644)


def unlock_troubled(*roots: Path) -> None:
    """Make make_troubled's locked directory (and its copies) searchable
    again, so the trees can be compared and removed."""
    for root in roots:
        locked = root / "s2" / "locked"
        if locked.exists():
            locked.chmod(0o755)


@pytest.mark.parametrize("who", ["root", "nobody"])
@pytest.mark.parametrize("flag", ["-r", "-rL"])
def test_new_directories_with_troubled_entries_like_gnu(tmp: Path, who: str,
                                                        flag: str) -> None:
    if who == "nobody" and os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    tmp.chmod(0o777)
    make_troubled(tmp / "d")
    stats = copy_troubled_like_gnu(tmp, flag, who)
    assert stats["extra"]["dirs_read_in_c"] >= 8
    assert stats["ops"]["openat"] > 2 * 40
    no_temps(tmp)


def copy_troubled_like_gnu(root: Path, flag: str, who: str) -> Dict[str, Any]:
    """cp FLAG root/d into root/ours/d and root/gnu/d, as root or nobody:
    the same status, messages (in any order: failed chains and helper
    runs are reported when they complete) and tree as GNU's; our --stats."""
    prefix = NOBODY if who == "nobody" else None
    for side in ("ours", "gnu"):
        (root / side).mkdir(mode=0o777)
        (root / side).chmod(0o777)
    ours = run([URING_CP, flag, "--stats-format", "json", "d", "ours/d"], root,
               prefix=prefix)
    gnu = run([GNU_CP, flag, "d", "gnu/d"], root, prefix=prefix)
    assert ours.returncode == gnu.returncode, (ours.stderr, gnu.stderr)
    err = [line.replace("uring-cp:", "cp:").replace("ours/", "gnu/")
           for line in ours.stderr.decode().splitlines()[:-1]]
    assert sorted(err) == sorted(gnu.stderr.decode().splitlines())
    if who == "nobody":
        assert any("secret" in line for line in err)
    unlock_troubled(root / "ours" / "d", root / "gnu" / "d", root / "d")
    assert snapshot(root / "ours") == snapshot(root / "gnu")
    return json_stats(ours)


def test_verbose_lines_of_chained_directories_like_gnu(tmp: Path) -> None:
    """-v with the small files of new directories chained in C: GNU's
    lines, in GNU's order, around the entries the walk copies itself."""
    make_many(tmp / "d", files=40)
    make_troubled(tmp / "t")
    for src in ("d", "t"):
        ours = ucp("-rv", "--stats-format", "json", src, f"ours-{src}", cwd=tmp)
        gnu = gcp("-rv", src, f"gnu-{src}", cwd=tmp)
        assert ours.returncode == gnu.returncode
        assert ours.stdout.decode().replace("ours-", "gnu-") == \
            gnu.stdout.decode()
        assert json_stats(ours)["extra"]["dirs_read_in_c"] >= 2
        assert snapshot(tmp / f"ours-{src}") == snapshot(tmp / f"gnu-{src}")
    no_temps(tmp)


@pytest.mark.parametrize("engine", ["uring", "sync"])
def test_progress_counts_every_byte(tmp: Path, engine: str) -> None:
    """A progress total and progress updates that add up to the bytes of
    the tree (a sparse file's holes included), with the new directories'
    small files chained in C on the ring."""
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths
    from uringtools.stats import Stats

    make_many(tmp / "d", files=300)
    (tmp / "d" / "big").write_bytes(os.urandom(3 << 20))
    size = sum(p.stat().st_size for p in (tmp / "d").rglob("*")
               if p.is_file() and not p.is_symlink())
    totals: List[int] = []
    done: List[int] = []
    stats = Stats(command="cp")
    assert copy_paths([str(tmp / "d")], str(tmp / "out"),
                      options=CopyOptions(recursive=True, engine=engine),
                      stats=stats, on_total=totals.append,
                      on_progress=done.append)
    assert sum(totals) == sum(done) == size
    if engine == "uring":
        assert stats.extra["dirs_read_in_c"] >= 2
    assert snapshot(tmp / "out") == snapshot(tmp / "d")
    for flag in ("--progress", "--no-progress"):
        res = ucp("-r", flag, "--engine", engine, "d", f"out{flag}", cwd=tmp)
        assert res.returncode == 0, res.stderr
        assert b"Traceback" not in res.stderr
        assert snapshot(tmp / f"out{flag}") == snapshot(tmp / "d")


def test_deep_tree_under_low_nofile_limit(tmp: Path) -> None:
    """Deeper than the directories the chains may hold open at once: the
    deep ones are walked entry by entry; everything lands."""
    if not shutil.which("prlimit"):
        pytest.skip("no prlimit")
    p = tmp / "d"
    for depth in range(40):
        p = p / f"l{depth}"
        p.mkdir(parents=True)
        for i in range(3):
            (p / f"f{i}").write_bytes(os.urandom(100 * depth + i))
    res = run([URING_CP, "-r", "--stats-format", "json", "d", "ours"], tmp,
              prefix=["prlimit", "--nofile=32"])
    assert res.returncode == 0, res.stderr
    assert gcp("-r", "d", "gnu", cwd=tmp).returncode == 0
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    assert 0 < json_stats(res)["extra"]["dirs_read_in_c"] < 41


def test_file_vanishing_after_the_directory_was_read(
        tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries removed between the C read of a directory and their chains:
    GNU's "cannot stat" for each, the rest copied, nothing left behind."""
    from uringtools import copybatch
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths

    src = tmp / "d" / "sub"
    src.mkdir(parents=True)
    for i in range(30):
        (src / f"keep{i}").write_bytes(os.urandom(i * 100 + 1))
    for i in range(3):
        (src / f"vanish{i}").write_bytes(b"v" * 1000)

    Vanishing = vanishing_after_read("vanish0", "vanish1", "vanish2")

    monkeypatch.setattr(copybatch, "FreshDir", Vanishing)
    errors: List[str] = []
    ok = copy_paths([str(tmp / "d")], str(tmp / "out"),
                    options=CopyOptions(recursive=True), on_error=errors.append)
    assert not ok
    assert sorted(errors) == [f"cannot stat '{src}/vanish{i}': "
                              "No such file or directory" for i in range(3)]
    assert sorted(os.listdir(tmp / "out" / "sub")) == \
        sorted(f"keep{i}" for i in range(30))
    for i in range(30):
        assert (tmp / "out" / "sub" / f"keep{i}").read_bytes() == \
            (src / f"keep{i}").read_bytes()


def test_signal_as_a_batch_is_submitted_leaves_no_empty_file(
        tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal arriving while a batch's enter runs (KeyboardInterrupt
    raised once it returns): the chains went to the kernel, so the clean-up
    still finds the file created for a source that vanished."""
    from uringtools import copybatch
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths

    src = tmp / "d" / "sub"
    src.mkdir(parents=True)
    for i in range(5):
        (src / f"keep{i}").write_bytes(os.urandom(i * 100 + 1))
    (src / "vanish").write_bytes(b"v" * 1000)

    Vanishing = vanishing_after_read("vanish")

    real_launch = copybatch.BatchCopier.launch

    def launch(self: copybatch.BatchCopier) -> None:
        ring = self.ring
        assert ring is not None
        real_submit = ring.submit

        def submit(wait_nr: int = 0) -> int:
            real_submit(wait_nr)
            raise KeyboardInterrupt
        if self.batch is not None and self.batch.dirs:
            ring.submit = submit  # type: ignore[method-assign]
        try:
            real_launch(self)
        finally:
            ring.submit = real_submit  # type: ignore[method-assign]

    monkeypatch.setattr(copybatch, "FreshDir", Vanishing)
    monkeypatch.setattr(copybatch.BatchCopier, "launch", launch)
    with pytest.raises(KeyboardInterrupt):
        copy_paths([str(tmp / "d")], str(tmp / "out"),
                   options=CopyOptions(recursive=True))
    assert not (tmp / "out" / "sub" / "vanish").exists()


@pytest.mark.parametrize("top", ["a", "a/b"])
def test_cyclic_symlink_under_dereference_like_gnu(tmp: Path, top: str) -> None:
    """-L and a symlink back to a directory being copied: GNU's one message
    per cycle, the rest copied, status 1 (it used to recurse until the
    names were too long)."""
    (tmp / "a" / "b").mkdir(parents=True)
    (tmp / "a" / "b" / "f").write_bytes(b"x" * 100)
    os.symlink("..", tmp / "a" / "b" / "up")
    ours = ucp("-rL", top, "ours", cwd=tmp)
    gnu = gcp("-rL", top, "gnu", cwd=tmp)
    same_messages(ours, gnu)
    assert ours.returncode == 1
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")


@pytest.mark.parametrize("nofile", ["20", "24"])
def test_large_files_under_a_tiny_nofile_limit(tmp: Path, nofile: str) -> None:
    """Too few descriptors for the splice pipes: large files go through the
    arena instead (it used to end in a traceback from os.pipe2)."""
    if not shutil.which("prlimit"):
        pytest.skip("no prlimit")
    for i in range(12):
        sub = tmp / "d" / f"s{i}"
        sub.mkdir(parents=True)
        (sub / "big").write_bytes(os.urandom((2 << 20) + i))
        (sub / "small").write_bytes(os.urandom(100 + i))
    res = run([URING_CP, "-r", "--splice", "d", "ours"], tmp,
              prefix=["prlimit", f"--nofile={nofile}"])
    assert res.returncode == 0, res.stderr
    assert b"Traceback" not in res.stderr
    assert gcp("-r", "d", "gnu", cwd=tmp).returncode == 0
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")


def test_big_file_splices_with_two_io_wq_workers(tmp: Path) -> None:
    """A big file's splice pairs run on at most two io-wq workers (writes
    into one file take turns on its lock; more workers only spin); the
    limit is reported in --stats and the copy is exact."""
    data = os.urandom((3 << 20) + 123)
    (tmp / "big").write_bytes(data)
    res = ucp("--stats-format", "json", "--splice", "big", "out", cwd=tmp)
    assert res.returncode == 0, res.stderr
    stats = json_stats(res)
    assert stats["extra"]["files_spliced"] == 1
    assert stats["extra"]["iowq_max_workers"] == 2
    assert (tmp / "out").read_bytes() == data


@pytest.mark.parametrize("when,nth", [("reap", 1), ("reap", 2), ("reap", 5),
                                      ("failure", 1), ("failure", 2),
                                      ("failure", 3), ("failure", 4)])
def test_signal_as_completions_are_reaped_loses_nothing_and_ends(
        tmp: Path, monkeypatch: pytest.MonkeyPatch, when: str, nth: int) -> None:
    """KeyboardInterrupt the moment a reap returns (where a handler runs),
    before its CQEs reach their chains: the nth reap, or the one holding the
    nth failed chain (a source that vanished after its directory was read).
    The clean-up still ends (it used to wait for CQEs already taken), keeps
    only whole files, and removes the vanished sources' files although their
    failures were in the lost reap (their chain slots' rows from an earlier
    batch said success)."""
    from uringtools import copybatch, ring as ringmod
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths

    src = tmp / "d"
    for k in range(4):
        sub = src / f"sub{k}"
        sub.mkdir(parents=True)
        for i in range(150):
            (sub / f"keep{i}").write_bytes(os.urandom(1000))
        # as long as the others: a stale row of its chain slot would
        # read as its success
        (sub / "vanish").write_bytes(b"v" * 1000)
    (src / "big").write_bytes(os.urandom(300 << 10))

    Vanishing = vanishing_after_read("vanish")

    real_reap = ringmod._reap
    seen = {"reap": 0, "failure": 0}

    def reap(ring: object, most: int, user_data: Any, res: Any,
             in_flight: object) -> int:
        n = real_reap(ring, most, user_data, res, in_flight)
        before = seen[when]
        seen["reap"] += 1
        seen["failure"] += sum(1 for i in range(n) if res[i] < 0
                               and user_data[i] & 7 != copybatch._S_CLOSE)
        if before < nth <= seen[when]:
            raise KeyboardInterrupt
        return n

    def hung(*_: object) -> None:
        raise AssertionError("the clean-up is still waiting")

    monkeypatch.setattr(copybatch, "FreshDir", Vanishing)
    monkeypatch.setattr(ringmod, "_reap", reap)
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(KeyboardInterrupt):
            copy_paths([str(src)], str(tmp / "out"),
                       options=CopyOptions(recursive=True))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    no_temps(tmp)
    for dirpath, _, filenames in os.walk(tmp / "out"):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), tmp / "out")
            assert not rel.endswith("vanish"), rel
            assert (tmp / "out" / rel).read_bytes() == (src / rel).read_bytes()


@pytest.mark.parametrize("flags", [
    ["-rL", "-a"], ["-a", "-rL"], ["-rLa"], ["-raL"], ["-rL", "--archive"],
    ["--dereference", "-a"], ["-a", "--no-dereference", "-L"],
    ["-rL", "-P", "-L"], ["-rLPL"], ["-rP"], ["-r"], ["-rL"]])
def test_last_of_archive_and_dereference_decides_like_gnu(
        tmp: Path, flags: List[str]) -> None:
    """-a means -P too, and whichever of -a, -L, -P comes last decides
    (`cp -rL -a` used to follow links, as if -L always won)."""
    (tmp / "src" / "d").mkdir(parents=True)
    (tmp / "src" / "f").write_bytes(b"data\n")
    os.symlink("f", tmp / "src" / "l")
    os.symlink("d", tmp / "src" / "dl")
    assert gcp(*flags, "src", "gnu", cwd=tmp).returncode == 0
    fast = run([URING_CP, *flags, "src", "fast"], tmp)   # no Click if it can
    slow = ucp(*flags, "src", "slow", cwd=tmp)            # through Click
    assert fast.returncode == slow.returncode == 0, (fast.stderr, slow.stderr)
    assert snapshot(tmp / "fast") == snapshot(tmp / "gnu")
    assert snapshot(tmp / "slow") == snapshot(tmp / "gnu")


def _inode_orders(root: Path, dirs: Sequence[str]) -> List[List[str]]:
    """The entries of each of ``dirs`` under root in inode order, the
    order GNU cp and uring-cp read them in."""
    return [sorted(os.listdir(root / d), key=lambda n: os.lstat(root / d / n).st_ino)
            for d in dirs]


@pytest.mark.parametrize("args", [
    ["-r", "src", "src/b"], ["-rv", "src", "src/b"], ["-r", "src", "src"],
    ["-rT", "src", "src"], ["-r", "src/x", "src"], ["-r", "src", "src/x/new"],
    ["-rv", "-t", "link", "src"], ["-rL", "src", "src/b"], ["-r", "src/.", "src"],
    ["-r", "src", "other", "src/x"], ["-r", "-t", "src", "src/x", "src/x"]])
def test_copy_into_itself_like_gnu(tmp: Path, args: List[str]) -> None:
    """A directory copied into itself: GNU copies everything but the
    directories the copy made, naming the operands in its message, status
    1; a directory onto itself is "the same file" and nothing is copied.

    Both tools read a directory in inode order and stop at the directory
    the copy made, so what gets copied (and -v's order) depends on inode
    numbers; two trees built alike can get them in different orders on
    ext4. Output and trees are compared where both trees' inode orders
    agree (nearly always), the messages and status always."""
    for base in ("gnu", "ours"):
        src = tmp / base / "src"
        (src / "x").mkdir(parents=True)
        (src / "f").write_bytes(b"f" * 5000)
        (src / "x" / "g").write_bytes(b"g" * 100)
        (tmp / base / "other").mkdir()
        (tmp / base / "other" / "h").write_bytes(b"h")
        os.symlink("src", tmp / base / "link")
    gnu = gcp(*args, cwd=tmp / "gnu")
    ours = ucp(*args, cwd=tmp / "ours")
    assert ours.stderr.decode().replace("uring-cp:", "cp:") == gnu.stderr.decode()
    assert ours.returncode == gnu.returncode == 1
    assert b"Traceback" not in ours.stderr
    dirs = ["src", "src/x"]
    if _inode_orders(tmp / "gnu", dirs) == _inode_orders(tmp / "ours", dirs):
        assert ours.stdout == gnu.stdout
        assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    no_temps(tmp)


@pytest.mark.parametrize("size", [70_000, 2_000_000])
@pytest.mark.parametrize("flags", [[], ["--splice"], ["--no-splice"],
                                   ["--engine", "sync"]])
def test_later_operand_walks_earlier_operands_copies(
        tmp: Path, size: int, flags: List[str]) -> None:
    """`cp -r a d d`: the walk of the second operand reads d, where the
    first one's copy of a went. GNU finds d/a there and copies it into
    d/d; ours used to find a's unfinished temporary ("cannot stat
    'd/.a.ucp-...'") and leave d/d/a out."""
    data = os.urandom(size)
    for base in ("gnu", "ours"):
        (tmp / base / "src" / "h").mkdir(parents=True)
        (tmp / base / "src" / "a").write_bytes(data)
    args = ["-r", "src/a", "src/h", "src/h"]
    gnu = gcp(*args, cwd=tmp / "gnu")
    ours = run([URING_CP, *flags, *args], tmp / "ours")
    same_messages(ours, gnu)
    assert gnu.returncode == 1
    assert (tmp / "ours" / "src" / "h" / "h" / "a").read_bytes() == data
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    no_temps(tmp)


def _links_and_dirs(root: Path) -> None:
    root.mkdir()
    (root / "f").write_bytes(b"data\n")
    os.symlink("f", root / "sl")
    os.symlink("nowhere", root / "dl")
    (root / "d").mkdir()
    (root / "e").mkdir()
    (root / "e" / "y").write_bytes(b"y")
    os.symlink("d", root / "sd")
    os.symlink("e", root / "se")
    os.link(root / "f", root / "hl")


@pytest.mark.parametrize("args", [
    "-P sl f", "-n -P sl f", "-P sl sl", "-rP sl sl", "-r dl dl", "-P dl dl",
    "-n f f", "-n sl sl", "-n f hl", "f hl", "-P f sl", "sl f", "-L sl f",
    "-nT f d", "-rT e se", "-rT d sd", "-rnT d sd", "-rT e sd", "-rT sd d",
    "-rLT sd d", "-PT sl sd", "-rT sl se", "-rT sd se", "-rLT sd se",
    "-rn d d", "-T f sd"])
def test_same_file_and_symlink_destinations_like_gnu(
        tmp: Path, args: str) -> None:
    """GNU's same-file rules: `cp -P link target` would turn the target into
    a link to itself (it did: the data was lost); -n skips an existing
    destination before any check; a directory is not merged into a
    symlink to a directory; a link onto itself is refused."""
    _links_and_dirs(tmp / "gnu")
    _links_and_dirs(tmp / "ours")
    gnu = gcp(*args.split(), cwd=tmp / "gnu")
    ours = ucp(*args.split(), cwd=tmp / "ours")
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    assert (tmp / "ours" / "f").read_bytes() == b"data\n"


@pytest.mark.parametrize("args", [
    ["-av", "sl", "nodir/x"], ["-av", "ff", "nodir/x"], ["-rv", "ff", "nodir/x"],
    ["-rv", "sl", "nodir/x"], ["-av", "sl", "ff", "out"], ["-rv", "sl", "out2"]])
def test_verbose_line_comes_before_a_link_or_fifo_is_made_like_gnu(
        tmp: Path, args: List[str]) -> None:
    """GNU prints a symlink's or special file's -v line before making it,
    so a failure still shows which copy it was."""
    os.symlink("x", tmp / "sl")
    os.mkfifo(tmp / "ff")
    (tmp / "out").mkdir()
    gnu = gcp(*args, cwd=tmp)
    for name in ("out/sl", "out/ff", "out2"):
        if os.path.lexists(tmp / name):
            os.unlink(tmp / name)
    ours = ucp(*args, cwd=tmp)
    same_messages(ours, gnu)


def _link_groups(root: Path) -> List[Tuple[str, ...]]:
    """The names under root grouped by inode (hard links together)."""
    groups: Dict[int, List[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames
                                 if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            groups.setdefault(os.lstat(p).st_ino, []).append(
                os.path.relpath(p, root))
    return sorted(tuple(sorted(g)) for g in groups.values())


@pytest.mark.parametrize("args", [
    ["-a", "src", "out"], ["-av", "src", "out"], ["-r", "src", "out"],
    ["-aL", "src", "out"], ["-a", "src/a", "src/b", "src/s/c", "out"],
    ["-p", "src/a", "src/b", "out"]])
def test_archive_keeps_hard_links_like_gnu(tmp: Path, args: List[str]) -> None:
    """-a is --preserve=links too: sources that are hard links of one
    another (or, under -L, one file reached through symlinks) are copied
    once and linked, across operands as well; -r and -p copy each."""
    for base in ("gnu", "ours"):
        src = tmp / base / "src"
        (src / "s").mkdir(parents=True)
        (src / "a").write_bytes(b"a" * 3000)
        os.link(src / "a", src / "b")
        os.link(src / "a", src / "s" / "c")
        (src / "lone").write_bytes(b"lone")
        os.symlink("a", src / "l")
        os.link(src / "l", src / "l2", follow_symlinks=False)
        os.symlink("../lone", src / "s" / "tolone")
        (tmp / base / "out").mkdir()
    gnu = gcp(*args, cwd=tmp / "gnu")
    ours = ucp(*args, cwd=tmp / "ours")
    assert ours.returncode == gnu.returncode == 0, (ours.stderr, gnu.stderr)
    assert sorted(ours.stdout.splitlines()) == sorted(gnu.stdout.splitlines())
    assert snapshot(tmp / "ours" / "out") == snapshot(tmp / "gnu" / "out")
    assert _link_groups(tmp / "ours" / "out") == _link_groups(tmp / "gnu" / "out")
    no_temps(tmp)


@pytest.mark.parametrize("args", [
    ["-r", "src/s", "src", "out"], ["-r", "src", "src/s", "out"],
    ["-a", "src/s", "src", "out"], ["-a", "src", "src/s", "out"],
    ["-rL", "src/s", "src", "out"], ["-r", "src/s", "src/s", "out"]])
def test_directory_met_twice_like_gnu(tmp: Path, args: List[str]) -> None:
    """A directory copied by an earlier operand (under -a: anywhere) and met
    again: GNU's "will not create hard link" and no second copy."""
    for base in ("gnu", "ours"):
        (tmp / base / "src" / "s").mkdir(parents=True)
        (tmp / base / "src" / "s" / "f").write_bytes(b"f" * 100)
        (tmp / base / "src" / "g").write_bytes(b"g")
        (tmp / base / "out").mkdir()
    gnu = gcp(*args, cwd=tmp / "gnu")
    ours = ucp(*args, cwd=tmp / "ours")
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")


def test_files_before_a_fifo_are_done_before_it_blocks(tmp: Path) -> None:
    """`cp big fifo dst`: GNU has copied big when it blocks opening the FIFO
    (no writer yet); the ring used to hold big's copy in flight meanwhile,
    an empty temporary, until the FIFO was served."""
    data = os.urandom(300000)
    (tmp / "big").write_bytes(data)
    os.mkfifo(tmp / "fifo")
    (tmp / "dst").mkdir()
    proc = subprocess.Popen([URING_CP, "big", "fifo", "dst"], cwd=tmp,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (tmp / "dst" / "big").exists():
                break
            time.sleep(0.01)
        assert (tmp / "dst" / "big").read_bytes() == data
        with open(tmp / "fifo", "wb") as w:
            w.write(b"through the fifo\n")
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert (tmp / "dst" / "fifo").read_bytes() == b"through the fifo\n"
    no_temps(tmp)


@pytest.mark.parametrize("case", ["unreadable", "first-dir-locked"])
def test_archive_link_to_a_failed_first_copy_like_gnu(tmp: Path, case: str) -> None:
    """-a, as nobody: when the first copy of a file with several names
    fails, GNU forgets it and copies the next name as a file of its own.
    We used to link that name to the missing copy ("cannot create hard
    link ... No such file or directory") instead."""
    for root in gnu_and_ours_as_nobody(tmp):
        src = root / "src"
        for d in ("d1", "d2"):
            (src / d).mkdir(parents=True)
            (root / "out" / d).mkdir(parents=True)
        (src / "d1" / "a").write_bytes(b"linked" * 500)
        os.link(src / "d1" / "a", src / "d2" / "b")
        (src / "d2" / "c").write_bytes(b"plain")
        for p in (root, root / "out", root / "out" / "d2"):
            p.chmod(0o777)
        if case == "unreadable":
            (src / "d1" / "a").chmod(0o000)
            (root / "out" / "d1").chmod(0o777)
        else:       # out/d1 belongs to root: nobody cannot create in it
            (root / "out" / "d1").chmod(0o755)
    gnu = gcp("-a", "src/d1", "src/d2", "out", cwd=tmp / "gnu", prefix=NOBODY)
    ours = ucp("-a", "src/d1", "src/d2", "out", cwd=tmp / "ours", prefix=NOBODY)
    assert ours.returncode == gnu.returncode == 1, (ours.stderr, gnu.stderr)
    # the same messages; ours come in a different order (links are made
    # once every first copy is done)
    assert sorted(ours.stderr.decode().replace("uring-cp:", "cp:").splitlines()) \
        == sorted(gnu.stderr.decode().splitlines())
    assert b"hard link" not in ours.stderr
    assert snapshot(tmp / "ours" / "out") == snapshot(tmp / "gnu" / "out")
    assert _link_groups(tmp / "ours" / "out") == _link_groups(tmp / "gnu" / "out")
    no_temps(tmp)


@pytest.mark.parametrize("args", [
    ["-r", "src", "src", "locked"], ["-rn", "src", "src/", "locked"],
    ["-r", "src", "src", "open"], ["-r", "src", "src", "src/sub"]])
def test_directory_operand_twice_after_a_failure_like_gnu(tmp: Path,
                                                         args: List[str]) -> None:
    """A directory operand given twice: GNU warns 'specified more than once'
    only if the first copy made the directory; one it could not make is
    forgotten and tried (and refused) again. We warned in both cases."""
    for root in gnu_and_ours_as_nobody(tmp):
        (root / "src" / "sub").mkdir(parents=True)
        (root / "src" / "f").write_bytes(b"f")
        (root / "locked").mkdir()           # root's: nobody cannot write
        (root / "open").mkdir()
        for p in (root, root / "open", root / "src", root / "src" / "sub"):
            p.chmod(0o777)
    gnu = gcp(*args, cwd=tmp / "gnu", prefix=NOBODY)
    ours = ucp(*args, cwd=tmp / "ours", prefix=NOBODY)
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")


@pytest.mark.parametrize("args", [
    ["secret", "dangling"], ["-v", "secret", "dangling"], ["-v", "ok", "dangling"],
    ["-n", "ok", "dangling"], ["-rn", "ok", "dangling"], ["-Pn", "ok", "dangling"],
    ["-n", "ok", "tofile"], ["secret", "ro"], ["-v", "secret", "ro"],
    ["-v", "ok", "ro"], ["-f", "secret", "ro"]])
def test_source_is_opened_before_the_destination_is_refused_like_gnu(
        tmp: Path, args: List[str]) -> None:
    """GNU opens the source before it looks at what it would write: an
    unreadable source is 'cannot open ... for reading' even where the
    destination is a dangling symlink or a file it may not write; -v
    prints its line first; -n does not skip a dangling symlink when the
    source is a regular file (GNU stats the destination through it)."""
    for root in gnu_and_ours_as_nobody(tmp):
        root.mkdir()
        root.chmod(0o777)
        (root / "ok").write_text("ok\n")
        (root / "secret").write_text("s\n")
        (root / "secret").chmod(0o000)
        (root / "ro").write_text("old\n")
        os.chown(root / "ro", 65534, 65534)
        (root / "ro").chmod(0o444)
        os.symlink("nowhere", root / "dangling")
        (root / "target").write_text("target\n")
        os.symlink("target", root / "tofile")
    gnu = gcp(*args, cwd=tmp / "gnu", prefix=NOBODY)
    ours = ucp(*args, cwd=tmp / "ours", prefix=NOBODY)
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    no_temps(tmp)


@pytest.mark.parametrize("args", [
    ["-Pv", "sl", "file"], ["-rv", "sl", "link"], ["-av", "sl", "other"],
    ["-fPv", "sl", "file"], ["-rv", "ff", "file"], ["-Pvn", "sl", "file"],
    ["-rv", "ff", "lock/f"], ["-rv", "sl", "lock/f"], ["-r", "sl", "lock/f"],
    ["-Pv", "sl", "new"]])
def test_symlink_or_fifo_replacing_a_file_like_gnu(tmp: Path,
                                                  args: List[str]) -> None:
    """A symlink or FIFO copied onto an existing non-directory: GNU unlinks
    it first, so -v says 'removed ...' before its line, and a directory
    that refuses the unlink gets 'cannot remove', as nobody."""
    for root in gnu_and_ours_as_nobody(tmp):
        (root / "lock").mkdir(parents=True)       # root's, 0755
        root.chmod(0o777)
        (root / "a").write_text("a\n")
        os.symlink("a", root / "sl")
        os.mkfifo(root / "ff")
        (root / "file").write_text("old\n")
        os.symlink("zz", root / "link")
        os.symlink("b", root / "other")
        (root / "lock" / "f").write_text("locked\n")
        for p in (root / "a", root / "file"):
            os.chown(p, 65534, 65534)
        for p in (root / "sl", root / "ff", root / "link", root / "other"):
            os.chown(p, 65534, 65534, follow_symlinks=False)
    gnu = gcp(*args, cwd=tmp / "gnu", prefix=NOBODY)
    ours = ucp(*args, cwd=tmp / "ours", prefix=NOBODY)
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    no_temps(tmp)


@pytest.mark.parametrize("case", ["force-through-symlink", "p-setuid", "p-sticky",
                                  "loop", "archive-loop"])
def test_destination_symlinks_and_special_bits_like_gnu(tmp: Path, case: str) -> None:
    """As nobody, against GNU: -f onto a symlink to a file nobody may write
    replaces the symlink, not root's file it names; -p of root's set-id or
    sticky file drops those bits once the chown fails; a destination that
    is a symlink loop is 'cannot stat ... Too many levels of symbolic
    links', even where -a would have made it a hard link."""
    for root in gnu_and_ours_as_nobody(tmp):
        (root / "d" / "src").mkdir(parents=True)
        (root / "src").mkdir()
        (root / "s").write_bytes(b"payload" * 300)
        (root / "target").write_text("root's\n")   # root's, 0644
        os.symlink("../target", root / "d" / "x")
        (root / "src" / "a").write_bytes(b"linked" * 300)
        os.link(root / "src" / "a", root / "src" / "b")
        os.symlink("../src/a", root / "d" / "src" / "a")   # a loop
        os.symlink("loop", root / "d" / "loop")
        (root / "suid").write_bytes(b"x" * 100)
        (root / "suid").chmod(0o4755)
        (root / "sticky").write_bytes(b"y" * 100)
        (root / "sticky").chmod(0o1644)
        for p in (root, root / "d", root / "d" / "src"):
            p.chmod(0o777)
        for p in (root / "s", root / "src" / "a"):
            os.chown(p, 65534, 65534)
    args = {"force-through-symlink": ["-f", "s", "d/x"],
            "p-setuid": ["-p", "suid", "d"], "p-sticky": ["-p", "sticky", "d"],
            "loop": ["s", "d/loop"], "archive-loop": ["-a", "src", "d"]}[case]
    prefix = None if case == "archive-loop" else NOBODY
    gnu = gcp(*args, cwd=tmp / "gnu", prefix=prefix)
    ours = ucp(*args, cwd=tmp / "ours", prefix=prefix)
    assert ours.returncode == gnu.returncode, (ours.stderr, gnu.stderr)
    assert sorted(ours.stderr.decode().replace("uring-cp:", "cp:").splitlines()) \
        == sorted(gnu.stderr.decode().splitlines())
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    assert _link_groups(tmp / "ours") == _link_groups(tmp / "gnu")
    no_temps(tmp)


@pytest.mark.parametrize("case", ["own-read-only", "dir-not-writable",
                                  "sticky-not-ours", "sticky-dir-ours"])
@pytest.mark.parametrize("size", [3000, 2_000_000])
def test_force_onto_unwritable_file_like_gnu(tmp: Path, case: str,
                                             size: int) -> None:
    """As nobody, against GNU: -f onto a file nobody may not open for
    writing. GNU unlinks it ("removed 'd/f'" with -v) before copying; where
    that unlink would be refused (a directory nobody may not write, a
    sticky directory holding root's file) it is 'cannot remove', status 1,
    and the old file stays."""
    data = os.urandom(size)
    for root in gnu_and_ours_as_nobody(tmp):
        (root / "d").mkdir(parents=True)
        (root / "s").write_bytes(data)
        (root / "d" / "f").write_text("old\n")
        (root / "d" / "f").chmod(0o444)
        if case in ("own-read-only", "dir-not-writable"):
            os.chown(root / "d" / "f", 65534, 65534)
        mode = {"own-read-only": 0o777, "dir-not-writable": 0o755,
                "sticky-not-ours": 0o1777, "sticky-dir-ours": 0o1755}[case]
        (root / "d").chmod(mode)
        if case == "sticky-dir-ours":
            os.chown(root / "d", 65534, 65534)
    gnu = gcp("-f", "-v", "s", "d/f", cwd=tmp / "gnu", prefix=NOBODY)
    ours = ucp("-f", "-v", "s", "d/f", cwd=tmp / "ours", prefix=NOBODY)
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    expect = data if case in ("own-read-only", "sticky-dir-ours") else b"old\n"
    assert (tmp / "ours" / "d" / "f").read_bytes() == expect
    no_temps(tmp)


@pytest.mark.parametrize("flags", ["-r", "-rn"])
def test_directory_operand_onto_itself_twice_like_gnu(tmp: Path,
                                                      flags: str) -> None:
    """`cp -rn d d d parent`: the first operand merges d into itself (-n
    skips the same-file check); GNU then finds each later d where the
    first was copied to: 'into itself', status 1 (without -n every one
    is 'the same file')."""
    for base in ("gnu", "ours"):
        (tmp / base / "p" / "d").mkdir(parents=True)
        (tmp / base / "p" / "d" / "x").write_bytes(b"x" * 100)
    args = [flags, "p/d", "p/d", "p/d", "p"]
    gnu = gcp(*args, cwd=tmp / "gnu")
    ours = ucp(*args, cwd=tmp / "ours")
    same_messages(ours, gnu)
    assert gnu.returncode == 1
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")


@pytest.mark.parametrize("flags", [[], ["--splice"], ["--no-splice"],
                                   ["--engine", "sync"]])
@pytest.mark.parametrize("opts", [[], ["-p"], ["-v"]])
@pytest.mark.parametrize("size", [5000, 2_000_000, "sparse"])
def test_file_in_unwritable_directory_written_in_place_like_gnu(
        tmp: Path, flags: List[str], opts: List[str], size: Any) -> None:
    """As nobody: nobody's file in root's 0755 directory. No temporary can
    be made beside it, so it is written in place, as GNU writes it (it
    used to be 'cannot create regular file'): same bytes, mode, times,
    holes and lines as GNU's."""
    if size == "sparse":
        data = bytes(1 << 20) + os.urandom(100_000) + bytes(2 << 20)
    else:
        data = os.urandom(size)
    for root in gnu_and_ours_as_nobody(tmp):
        (root / "dst").mkdir(parents=True)
        with open(root / "src", "wb") as f:
            f.truncate(len(data))
            f.seek(1 << 20 if size == "sparse" else 0)
            f.write(data[1 << 20:(1 << 20) + 100_000] if size == "sparse"
                    else data)
        (root / "src").chmod(0o640)
        os.utime(root / "src", ns=(10**18, 10**18 + 7))
        (root / "dst" / "f").write_bytes(b"old content " * 1000)
        (root / "dst" / "f").chmod(0o604)
        os.chown(root / "dst" / "f", 65534, 65534)
        os.chown(root / "src", 65534, 65534)
    args = [*opts, "src", "dst/f"]
    gnu = gcp(*args, cwd=tmp / "gnu", prefix=NOBODY)
    ours = run([URING_CP, *flags, *args], tmp / "ours", prefix=NOBODY)
    same_messages(ours, gnu)
    assert ours.returncode == 0
    assert (tmp / "ours" / "dst" / "f").read_bytes() == data
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    if opts == ["-p"]:
        assert os.stat(tmp / "ours" / "dst" / "f").st_mtime_ns == \
            os.stat(tmp / "gnu" / "dst" / "f").st_mtime_ns == 10**18 + 7
    assert os.stat(tmp / "ours" / "dst" / "f").st_blocks <= \
        os.stat(tmp / "gnu" / "dst" / "f").st_blocks + 128   # 64 KiB


@pytest.mark.parametrize("flags", [[], ["--splice"], ["--no-splice"],
                                   ["--engine", "sync"]])
@pytest.mark.parametrize("sizes", [(70_000, 300_000), (3_000_000, 2_000_000)])
def test_destination_symlink_into_source_like_gnu(
        tmp: Path, flags: List[str], sizes: Tuple[int, int]) -> None:
    """A destination symlink names a source file still to be copied: GNU,
    one file at a time, writes through it first and then copies the new
    content. Ours had already read the old one (the copies in flight)."""
    first, second = os.urandom(sizes[0]), os.urandom(sizes[1])
    for base in ("gnu", "ours"):
        root = tmp / base
        for d in ("src", "dst", "t"):
            (root / d).mkdir(parents=True)
        (root / "src" / "b1").write_bytes(first)
        (root / "src" / "c d").write_bytes(second)
        os.symlink("../src/c d", root / "dst" / "b1")
        (root / "x.txt2").write_bytes(first)
        (root / "big").write_bytes(second)
        os.symlink("../big", root / "t" / "x.txt2")
    for args in (["-r", "-T", "src", "dst"], ["x.txt2", "big", "t"]):
        gnu = gcp(*args, cwd=tmp / "gnu")
        ours = run([URING_CP, *flags, *args], tmp / "ours")
        same_messages(ours, gnu)
    assert (tmp / "ours" / "dst" / "c d").read_bytes() == first
    assert (tmp / "ours" / "t" / "big").read_bytes() == first
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    no_temps(tmp)


# -- files copied by this thread while the ring's workers are busy --------------

def _fresh_for(src: Path, dst: Path) -> Tuple[Any, Any]:
    """A FreshDir over src -> dst and a ut_fresh set up as add_dir sets it."""
    from uringtools import copybatch
    from uringtools._uring import ffi

    class Owner:
        open_dirs = 0

    d = copybatch.FreshDir(str(src), str(dst), False, Owner())  # type: ignore[arg-type]
    f = ffi.new("struct ut_fresh *")
    f.src_dirfd, f.dst_dirfd = d.src_fd, d.dst_fd
    f.open_src = copybatch._OPEN_SRC | os.O_NOFOLLOW
    f.open_dst = copybatch._OPEN_TMP
    f.umask = copybatch.UMASK
    f.small_max = copybatch.SMALL_MAX
    f.keep_holes = 0
    return d, f


@pytest.mark.parametrize("merge", [False, True])
def test_copy_here_whole_files_or_nothing(tmp: Path, merge: bool) -> None:
    """ut_copy_fresh, the C loop this thread copies with while the ring is
    busy: a copied file is whole, with the source's mode less the umask; it
    stops before an entry it cannot copy, leaving nothing of it (a file
    already at the destination is not touched), and before one that is not
    a small regular file (or, in a directory that existed, whose name is
    taken there: the walk's turn)."""
    from uringtools import copybatch
    from uringtools._uring import ffi, lib

    src, dst = tmp / "src", tmp / "dst"
    src.mkdir()
    dst.mkdir()
    data = {name: os.urandom(n) for name, n in
            [("a", 5000), ("b", 100), ("c", 65536), ("d", 1), ("e", 70000),
             ("t", 3000)]}
    for name, content in data.items():
        (src / name).write_bytes(content)
    (src / "a").chmod(0o751)
    (dst / "b").write_bytes(b"someone else's")    # created meanwhile
    d, f = _fresh_for(src, dst)
    f.check_dst = merge
    order = [d.name(i) for i in range(d.count)]  # inode order
    (src / "c").unlink()                          # vanished since the read
    os.truncate(src / "t", 10)                    # shrank since the read
    buf = ffi.new("char[]", copybatch.SMALL_MAX)
    calls = ffi.new("struct ut_sync_calls *")
    pos = 0
    copied: List[str] = []
    while pos < d.count:
        f.bytes = 0
        n = lib.ut_copy_fresh(d.entries, pos, f, 2, buf, calls)
        copied += order[pos:pos + n]
        assert f.bytes == sum(len(data[x]) for x in order[pos:pos + n])
        pos += n
        if pos == d.count:
            break
        name = order[pos]
        if f.stop == lib.UT_STOP_FAILED:
            assert name in (("c", "t") if merge else ("b", "c", "t"))
        elif f.stop == lib.UT_STOP_OTHER:
            assert name in (("b", "e") if merge else ("e",))
        else:
            assert f.stop == lib.UT_STOP_END and n == 2
            continue
        pos += 1    # the chains' (or the walk's) turn
    d.release()
    assert sorted(copied) == ["a", "d"]
    for name in copied:
        assert (dst / name).read_bytes() == data[name]
    assert stat.S_IMODE(os.stat(dst / "a").st_mode) == 0o751 & ~copybatch.UMASK
    assert (dst / "b").read_bytes() == b"someone else's"
    assert sorted(os.listdir(dst)) == ["a", "b", "d"]
    assert calls.write == 2 and calls.read == 3
    assert calls.unlink == 1     # t's copy, created then found short
    assert (f.dst_checks >= 4) == merge


def test_files_copied_here_while_the_ring_is_busy(
        tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced: whenever both batches are in flight, this thread copies the
    next files itself. Every file arrives whole; the ones that vanished
    after the directory was read get GNU's message through the chains;
    --stats counts the files and syscalls of each way."""
    from uringtools import copybatch
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths
    from uringtools.stats import Stats

    src = tmp / "d" / "sub"
    src.mkdir(parents=True)
    for i in range(400):
        (src / f"keep{i:03d}").write_bytes(os.urandom(i * 150 % 66000 + 1))
    for i in range(0, 400, 97):
        (src / f"vanish{i}").write_bytes(b"v" * 1000)
    gone = [f"vanish{i}" for i in range(0, 400, 97)]
    monkeypatch.setattr(copybatch, "FreshDir", vanishing_after_read(*gone))
    monkeypatch.setattr(copybatch.BatchCopier, "_oldest_running",
                        lambda self: True)
    errors: List[str] = []
    stats = Stats(command="cp")
    ok = copy_paths([str(tmp / "d")], str(tmp / "out"), stats=stats,
                    options=CopyOptions(recursive=True), on_error=errors.append)
    assert not ok
    assert sorted(errors) == sorted(f"cannot stat '{src}/{name}': "
                                    "No such file or directory" for name in gone)
    out = tmp / "out" / "sub"
    assert sorted(os.listdir(out)) == sorted(f"keep{i:03d}" for i in range(400))
    for i in range(400):
        assert (out / f"keep{i:03d}").read_bytes() == \
            (src / f"keep{i:03d}").read_bytes()
    here = stats.extra["files_copied_by_syscalls"]
    assert 100 < here < 400
    assert stats.files == 400
    assert stats.syscalls["write"] == here
    assert stats.syscalls["openat"] >= 2 * here
    assert stats.bytes_written == sum(i * 150 % 66000 + 1 for i in range(400))


# -- directories that exist already: new names chained in C, the rest walked ----

def _half_there(root: Path) -> None:
    """The destination of a merge: some of make_troubled's names already
    there, as files (one read-only, one root's), a directory where the
    source has a file, a symlink, a file where the source has a directory."""
    (root / "s0").mkdir(parents=True)
    (root / "s0" / "f0000").write_bytes(b"old longer content " * 50)
    (root / "s0" / "f0007").write_bytes(b"read-only")
    (root / "s0" / "f0007").chmod(0o444)
    (root / "s1").mkdir()
    (root / "s1" / "f0001").mkdir()                  # source: a file
    os.symlink("../s0/f0000", root / "s1" / "f0008")
    (root / "s2").write_bytes(b"a file where a directory comes")
    (root / "s3").mkdir()
    (root / "s3" / "f0003").write_bytes(b"root's")
    for p in (root, root / "s0", root / "s1", root / "s3"):
        p.chmod(0o777)
    for p in (root / "s0" / "f0000", root / "s0" / "f0007"):
        os.chown(p, 65534, 65534)


@pytest.mark.parametrize("who", ["root", "nobody"])
@pytest.mark.parametrize("flags", [["-r"], ["-rn"], ["-rv"], ["-rf"], ["-rL"]])
def test_merge_into_existing_directories_like_gnu(tmp: Path, who: str,
                                                  flags: List[str]) -> None:
    """cp -r into directories that exist: the names not there yet are
    chained (or copied by this thread) from C, the others go through GNU's
    checks in the walk. Same tree, lines, messages and status as GNU."""
    if who == "nobody" and os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    prefix = NOBODY if who == "nobody" else None
    tmp.chmod(0o777)
    make_troubled(tmp / "d")
    for base in ("ours", "gnu"):
        _half_there(tmp / base)
    ours = run([URING_CP, *flags, "--stats-format", "json", "-T", "d", "ours"],
               tmp, prefix=prefix)
    gnu = run([GNU_CP, *flags, "-T", "d", "gnu"], tmp, prefix=prefix)
    assert ours.returncode == gnu.returncode, (ours.stderr, gnu.stderr)
    err = [line.replace("uring-cp:", "cp:").replace("ours", "gnu")
           for line in ours.stderr.decode().splitlines()[:-1]]
    assert sorted(err) == sorted(gnu.stderr.decode().splitlines())
    if "-rv" in flags:
        assert ours.stdout.decode().replace("ours", "gnu") == gnu.stdout.decode()
    unlock_troubled(tmp / "ours", tmp / "gnu", tmp / "d")
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    stats = json_stats(ours)
    assert stats["extra"]["dirs_read_in_c"] >= 6
    assert stats["syscalls"]["newfstatat"] >= 20    # the C checks
    no_temps(tmp)


@pytest.mark.parametrize("size", [3000, 2_000_000])
def test_through_symlink_below_an_unsearchable_directory_like_gnu(
        tmp: Path, size: int) -> None:
    """As nobody, working in a directory whose parent nobody may not
    search: a destination symlink is followed as the kernel follows it
    (relative to its directory). It used to be resolved to an absolute
    path through that parent: 'cannot create regular file'."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    data = os.urandom(size)
    for base in ("gnu", "ours"):
        work = tmp / "locked" / base
        (work / "x").mkdir(parents=True)
        (work / "l").mkdir()
        (work / "src").write_bytes(data)
        (work / "x" / "file").write_bytes(b"old")
        os.symlink("../x/file", work / "l" / "link")
        for p in (work, work / "x", work / "l", work / "x" / "file"):
            os.chown(p, 65534, 65534)
    (tmp / "locked").chmod(0o700)     # root's: nobody cannot pass through
    gnu = gcp("src", "l/link", cwd=tmp / "locked" / "gnu", prefix=NOBODY)
    ours = ucp("src", "l/link", cwd=tmp / "locked" / "ours", prefix=NOBODY)
    same_messages(ours, gnu)
    assert ours.returncode == 0
    (tmp / "locked").chmod(0o755)
    assert (tmp / "locked" / "ours" / "x" / "file").read_bytes() == data
    assert snapshot(tmp / "locked" / "ours") == snapshot(tmp / "locked" / "gnu")
    no_temps(tmp)


@pytest.mark.parametrize("args", [["f"], ["-p", "f"], ["-f", "f"]])
def test_others_file_in_sticky_directory_rewritten_like_gnu(
        tmp: Path, args: List[str]) -> None:
    """As nobody, root's writable file in a sticky directory (as in /tmp):
    a temporary could be made there but not renamed over root's file, so
    it is rewritten in place, as GNU does. -p's refused times are GNU's
    'preserving times', status 1."""
    data = os.urandom(5000)
    for root in gnu_and_ours_as_nobody(tmp):
        (root / "st").mkdir(parents=True)
        (root / "st").chmod(0o1777)
        (root / "st" / "f").write_bytes(b"old")
        (root / "st" / "f").chmod(0o666)
        (root / "f").write_bytes(data)
        (root / "f").chmod(0o644)
    argv = [*args, "st/f"]
    gnu = gcp(*argv, cwd=tmp / "gnu", prefix=NOBODY)
    ours = ucp(*argv, cwd=tmp / "ours", prefix=NOBODY)
    same_messages(ours, gnu)
    assert (tmp / "ours" / "st" / "f").read_bytes() == data
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    no_temps(tmp)


@pytest.mark.parametrize("case", ["operands", "deref", "deref-new"])
def test_sources_this_run_wrote_are_read_finished_like_gnu(
        tmp: Path, case: str) -> None:
    """A source that is a file this run is writing: an operand inside an
    earlier directory operand's copy (`cp -r a D/a/f1 D`), or, under -L, a
    symlink to a file the walk replaced or made (in a new directory, where
    files are written under their own names). GNU, one file at a time,
    reads the new content, whole; ours used to read the old one, or the
    part written so far (both in flight)."""
    for base in ("gnu", "ours"):
        root = tmp / base
        if case == "operands":
            (root / "a").mkdir(parents=True)
            (root / "D" / "a").mkdir(parents=True)
            for i in (1, 3, 5):
                (root / "a" / f"f{i}").write_bytes(f"new{i}".encode() * 999)
                (root / "D" / "a" / f"f{i}").write_bytes(f"old{i}".encode())
        else:
            (root / "s").mkdir(parents=True)
            if case == "deref":
                (root / "D" / "s").mkdir(parents=True)
            else:
                (root / "D").mkdir(parents=True)
            for i in (1, 2, 3):
                (root / "s" / f"a{i}").write_bytes(f"new{i}".encode() * 9999)
                if case == "deref":
                    (root / "D" / "s" / f"a{i}").write_bytes(f"old{i}".encode())
            os.symlink("../D/s/a2", root / "s" / "l")
    args = (["-r", "a", "D/a/f1", "D/a/f3", "D/a/f5", "D"] if case == "operands"
            else ["-rL", "s", "D"])
    gnu = gcp(*args, cwd=tmp / "gnu")
    ours = ucp(*args, cwd=tmp / "ours")
    same_messages(ours, gnu)
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")
    if case == "operands":
        assert (tmp / "ours" / "D" / "f3").read_bytes() == b"new3" * 999
    else:
        assert (tmp / "ours" / "D" / "s" / "l").read_bytes() == b"new2" * 9999


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_always_from_a_pipe_like_gnu(tmp: Path, engine: str) -> None:
    """--sparse=always with a stream source (a pipe): zero pieces become
    holes too, and the file still ends at its full size."""
    data = bytes(1 << 20) + b"x" + bytes(300_000)
    for tool, name in ((GNU_CP, "gnu"), (URING_CP, "ours")):
        extra = ["--engine", engine] if name == "ours" else []
        res = subprocess.run([tool, *extra, "--sparse=always", "/dev/stdin", name],
                             input=data, cwd=tmp, capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
    assert (tmp / "ours").read_bytes() == data
    assert os.stat(tmp / "ours").st_blocks == os.stat(tmp / "gnu").st_blocks
    assert os.stat(tmp / "ours").st_blocks < 100


def test_verbose_lines_and_errors_in_gnu_order_on_one_pipe(tmp: Path) -> None:
    """-v with stdout and stderr on the same pipe: GNU flushes its -v lines
    before each error message, so they interleave in the order they
    happened; ours were held until the end (or 8 KiB)."""
    (tmp / "a").write_bytes(b"a" * 100)
    (tmp / "b").write_bytes(b"b" * 100)
    os.symlink("a", tmp / "a2")
    for base in ("gnu", "ours"):
        (tmp / base).mkdir()
    outs = {}
    for tool, base in ((GNU_CP, "gnu"), (URING_CP, "ours")):
        res = subprocess.run(
            [tool, "-v", "a", "missing", "b", "a", base],
            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=ENV, timeout=60)
        assert res.returncode == 1
        outs[base] = res.stdout.decode().replace("uring-cp:", "cp:") \
            .replace("ours", "gnu")
    assert outs["ours"] == outs["gnu"]
    assert outs["gnu"].index("missing") < outs["gnu"].index("'b' ->")


@pytest.mark.parametrize("size", [70_000, 2_000_000])
def test_archive_link_after_a_refused_dangling_symlink_like_gnu(
        tmp: Path, size: int) -> None:
    """-a, two names of one file, the first refused (a dangling symlink at
    its destination): GNU forgets that copy and copies the second name as
    a file. Ours used to link the second name to the dangling symlink,
    taking the refused destination for the first copy."""
    data = os.urandom(size)
    for base in ("gnu", "ours"):
        root = tmp / base
        (root / "src").mkdir(parents=True)
        (root / "dst").mkdir()
        (root / "src" / "big").write_bytes(data)
        os.link(root / "src" / "big", root / "src" / "big2")
        os.symlink("nowhere", root / "dst" / "big")
    args = ["-a", "src/big", "src/big2", "dst"]
    gnu = gcp(*args, cwd=tmp / "gnu")
    ours = ucp(*args, cwd=tmp / "ours")
    same_messages(ours, gnu)
    assert gnu.returncode == 1
    assert (tmp / "ours" / "dst" / "big2").read_bytes() == data
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")


def test_copy_into_an_existing_subdirectory_of_the_source_like_gnu(
        tmp: Path) -> None:
    """`cp -r src/. src/sub`, sub made after the files: the files copied
    into sub (an existing directory: written under their own names) are
    read again as sources when the walk reaches sub. GNU finds them whole;
    ours read them while in flight (some missing or short)."""
    data = [os.urandom(60_000) for _ in range(200)]
    for base in ("gnu", "ours"):
        src = tmp / base / "src"
        src.mkdir(parents=True)
        for i, content in enumerate(data):
            (src / f"f{i:03d}").write_bytes(content)
        (src / "sub").mkdir()
    gnu = gcp("-r", "src/.", "src/sub", cwd=tmp / "gnu")
    ours = ucp("-r", "src/.", "src/sub", cwd=tmp / "ours")
    same_messages(ours, gnu)
    assert gnu.returncode == 1
    assert len(os.listdir(tmp / "ours" / "src" / "sub" / "sub")) == 200
    assert snapshot(tmp / "ours") == snapshot(tmp / "gnu")


@pytest.mark.parametrize("attr", ["+i", "+a"])
@pytest.mark.parametrize("size", [3000, 2_000_000])
def test_force_onto_immutable_or_append_only_file_like_gnu(
        tmp: Path, attr: str, size: int) -> None:
    """-f -v onto a file chattr made immutable or append-only (root): GNU's
    unlink is refused, 'cannot remove', and no 'removed' line; the file
    is kept."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr")
    data = os.urandom(size)
    targets = []
    for base in ("gnu", "ours"):
        (tmp / base).mkdir()
        (tmp / base / "s").write_bytes(data)
        (tmp / base / "x").write_bytes(b"old")
        if subprocess.run(["chattr", attr, str(tmp / base / "x")],
                          capture_output=True).returncode:
            pytest.skip(f"chattr {attr} refused on this filesystem")
        targets.append(tmp / base / "x")
    try:
        gnu = gcp("-fv", "s", "x", cwd=tmp / "gnu")
        ours = ucp("-fv", "s", "x", cwd=tmp / "ours")
        same_messages(ours, gnu)
        assert gnu.returncode == 1
        assert (tmp / "ours" / "x").read_bytes() == b"old"
    finally:
        for t in targets:
            subprocess.run(["chattr", "-" + attr[1:], str(t)])
    no_temps(tmp)


def run_both(tmp: Path, build: Any, args: Sequence[str], *,
             roots: Optional[List[Path]] = None, engine: Optional[str] = None,
             prefix: Optional[List[str]] = None,
             look: Any = lambda root: snapshot(root / "dst")) -> Dict[str, Tuple]:
    """Build one case under tmp/gnu and tmp/ours (``build(root)``), run GNU
    cp and ours there with ``args``: (status, stdout, stderr as GNU's,
    ``look(root)``) for each."""
    results = {}
    for root in roots or [tmp / "gnu", tmp / "ours"]:
        build(root)
        argv = [GNU_CP] if root.name == "gnu" else \
            [URING_CP, *(["--engine", engine] if engine else [])]
        res = run([*argv, *args], root, prefix=prefix)
        results[root.name] = (res.returncode, res.stdout,
                              res.stderr.replace(b"uring-cp:", b"cp:"),
                              look(root))
    return results


@pytest.mark.parametrize("engine", ENGINES)
def test_archive_hard_link_over_existing_names_like_gnu(tmp: Path,
                                                       engine: str) -> None:
    """cp -av of three names of one file onto a file and a dangling
    symlink: GNU links the later names and says 'removed' for what each
    link replaced, right after its line."""
    def build(root: Path) -> None:
        (root / "src").mkdir(parents=True)
        (root / "dst").mkdir()
        (root / "src/a").write_bytes(b"data\n")
        os.link(root / "src/a", root / "src/b")
        os.link(root / "src/a", root / "src/c")
        (root / "dst/b").write_bytes(b"old\n")
        (root / "dst/c").symlink_to("nowhere")

    def look(root: Path) -> Tuple:
        inodes = {os.lstat(root / "dst" / n).st_ino for n in "abc"}
        return snapshot(root / "dst"), len(inodes)

    results = run_both(tmp, build, ["-av", "src/a", "src/b", "src/c", "dst"],
                       engine=engine, look=look)
    assert results["ours"] == results["gnu"]
    assert results["ours"][1].count(b"removed") == 2
    assert results["ours"][3][1] == 1


@pytest.mark.parametrize("flags", ["-rL", "-r", "-raL"])
def test_fifo_onto_existing_file_under_dereference_like_gnu(
        tmp: Path, flags: str) -> None:
    """GNU unlinks what is at the destination of a FIFO only when it
    copies symlinks as symlinks (or that name has other hard links, with
    -a): under -L, mkfifo meets the old file, 'File exists', and the file
    is kept."""
    def build(root: Path) -> None:
        (root / "src").mkdir(parents=True)
        (root / "dst").mkdir()
        os.mkfifo(root / "src/p")
        (root / "src/lp").symlink_to("p")
        (root / "dst/p").write_bytes(b"old\n")
        (root / "dst/lp").write_bytes(b"old\n")
        os.link(root / "dst/lp", root / "dst/lp2")

    results = run_both(tmp, build, [flags, "src/p", "src/lp", "dst"])
    assert results["ours"] == results["gnu"]
    if flags == "-rL":
        assert results["ours"][0] == 1 and b"File exists" in results["ours"][2]


def _update_case(root: Path) -> None:
    """Sources and destinations some older, some newer, some missing."""
    def put(rel: str, data: bytes, day: int) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (day * 86400, day * 86400))

    def link(rel: str, to: str, day: int) -> None:
        (root / rel).symlink_to(to)
        os.utime(root / rel, (day * 86400, day * 86400), follow_symlinks=False)

    (root / "d").mkdir(parents=True)
    put("src/newer", b"new\n", 2)
    put("src/older", b"new\n", 1)
    put("src/missing", b"new\n", 1)
    put("src/same", b"new\n", 5)
    put("src/sub/f", b"s\n", 3)
    link("src/link", "newer", 1)
    put("src/h1", b"h\n", 1)
    os.link(root / "src/h1", root / "src/h2")
    put("dst/newer", b"old\n", 1)
    put("dst/older", b"old\n", 2)
    put("dst/same", b"old\n", 5)
    put("dst/sub/f", b"old\n", 4)
    link("dst/link", "other", 2)
    put("dst/h1", b"oldh\n", 9)
    put("a/x", b"x\n", 1)
    put("b/x", b"y\n", 3)


def _kept(tree: Path) -> Dict[str, Tuple]:
    """snapshot with times, where a copy made now reads "new" (the set-up's
    times are days after 1970)."""
    return {rel: info[:-1] + (info[-1] if info[-1] < 10**17 else "new",)
            if info[0] != "l" else info
            for rel, info in snapshot(tree, times=True).items()}


@pytest.mark.parametrize("args", [
    "-ruv src/. dst", "-rupv src/. dst", "-auv src/. dst", "-au src dst",
    "-uv src/newer src/older src/same src/missing dst", "-uv a/x b/x d",
    "-upv a/x b/x d", "-upv b/x a/x d", "-u src/link dst/link",
    "-uP src/link dst/link", "-ruL src/. dst", "-aun src/. dst",
    "--update -v src/newer dst/older"])
def test_update_like_gnu(tmp: Path, args: str) -> None:
    """-u: copy only onto a missing or older destination (same time: kept);
    a later name of a hard-linked file under -a is linked all the same."""
    def look(root: Path) -> Tuple:
        links = sorted(os.lstat(p).st_nlink for p in (root / "dst").rglob("h*"))
        return _kept(root / "dst"), _kept(root / "d"), links

    results = run_both(tmp, _update_case, args.split(), look=look)
    assert results["ours"] == results["gnu"]
    if args == "-ruv src/. dst":
        tree = results["ours"][3][0]
        assert tree["newer"][2] == tree["missing"][2] == b"new\n"
        assert tree["older"][2] == tree["same"][2] == b"old\n"


def test_refused_hard_link_keeps_the_name_like_gnu(tmp: Path) -> None:
    """cp -au h1 h2 dst where dst/h1 is a newer directory (left alone by
    -u, and so the 'first copy' of the file) and dst/h2 an older file: the
    link to a directory is refused, and dst/h2 keeps its content, as GNU's
    link-then-rename keeps it (we used to unlink it first)."""
    def build(root: Path) -> None:
        (root / "src").mkdir(parents=True)
        (root / "dst/h1").mkdir(parents=True)
        (root / "src/h1").write_bytes(b"data\n")
        os.link(root / "src/h1", root / "src/h2")
        os.utime(root / "src/h1", (86400, 86400))
        os.utime(root / "dst/h1", (9 * 86400, 9 * 86400))
        (root / "dst/h2").write_bytes(b"keep\n")
        os.utime(root / "dst/h2", (3600, 3600))

    results = run_both(tmp, build, ["-auv", "src/h1", "src/h2", "dst"],
                       look=lambda root: (root / "dst/h2").read_bytes())
    assert results["ours"] == results["gnu"]
    assert results["ours"][0] == 1 and results["ours"][3] == b"keep\n"


@pytest.mark.parametrize("who_runs", ["root", "nobody"])
def test_archive_onto_a_name_with_other_links_like_gnu(tmp: Path,
                                                       who_runs: str) -> None:
    """cp -a onto a file that has other hard links: GNU unlinks the name
    first ('removed' before its line), so the other names keep the old
    content and a read-only file is no obstacle; as nobody too."""
    nobody = who_runs == "nobody"

    def build(root: Path) -> None:
        (root / "dst").mkdir(parents=True)
        (root / "src").write_bytes(b"new\n")
        (root / "dst/f").write_bytes(b"old\n")
        os.link(root / "dst/f", root / "dst/g")
        (root / "dst/f").chmod(0o444)
        if nobody:
            for p in (root, root / "src", root / "dst"):
                os.chown(p, 65534, 65534)
            (root / "dst").chmod(0o777)

    results = run_both(
        tmp, build, ["-av", "src", "dst/f"],
        roots=gnu_and_ours_as_nobody(tmp) if nobody else None,
        prefix=NOBODY if nobody else None,
        look=lambda root: ((root / "dst/f").read_bytes(),
                           (root / "dst/g").read_bytes()))
    assert results["ours"] == results["gnu"]
    assert results["ours"][:2] == (0, b"removed 'dst/f'\n'src' -> 'dst/f'\n")
    assert results["ours"][3] == (b"new\n", b"old\n")


@pytest.mark.parametrize("flags", ["-av", "-rLv", "-rv"])
def test_fifo_onto_symlinks_like_gnu(tmp: Path, flags: str) -> None:
    """-r makes a FIFO anew and writes through no symlink for it: a
    dangling symlink at its name is no 'not writing through dangling
    symlink' case; it is replaced under -P and met under -L."""
    def build(root: Path) -> None:
        (root / "src").mkdir(parents=True)
        (root / "dst").mkdir()
        (root / "target").write_bytes(b"t\n")
        for name in ("a", "c"):
            os.mkfifo(root / "src" / name)
        (root / "dst/a").symlink_to("nowhere")
        (root / "dst/c").symlink_to("../target")

    results = run_both(tmp, build, [flags, "src/a", "src/c", "dst"],
                       look=lambda root: (snapshot(root / "dst"),
                                          (root / "target").read_bytes()))
    assert results["ours"] == results["gnu"]


@pytest.fixture
def shm() -> Any:
    """A directory on tmpfs (/dev/shm), where the small files of new
    directories go to the helper thread instead of the ring's chains."""
    import tempfile

    from uringtools._uring import lib

    if not os.path.isdir("/dev/shm") or \
            lib.ut_fs_type(b"/dev/shm") != 0x01021994:
        pytest.skip("no tmpfs at /dev/shm")
    root = Path(tempfile.mkdtemp(prefix="ucp-test-", dir="/dev/shm"))
    root.chmod(0o777)
    try:
        yield root
    finally:
        unlock_troubled(root / "ours" / "d", root / "gnu" / "d", root / "d")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("who", ["root", "nobody"])
@pytest.mark.parametrize("flag", ["-r", "-rL"])
def test_tmpfs_helper_copies_new_directories_like_gnu(shm: Path, who: str,
                                                      flag: str) -> None:
    """On tmpfs a second thread copies the new directories' small files
    with plain syscalls: the same tree, messages and status as GNU."""
    if who == "nobody" and os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    make_troubled(shm / "d")
    for i in range(300):    # a directory of its own for the helper
        (shm / "d" / "many" / f"m{i % 3}").mkdir(parents=True, exist_ok=True)
        (shm / "d" / "many" / f"m{i % 3}" / f"f{i}").write_bytes(
            os.urandom(CHAIN_SIZES[i % len(CHAIN_SIZES)]))
    for p in (shm / "d" / "many", *(shm / "d" / "many").iterdir()):
        p.chmod(0o755)
    for p in (shm / "d" / "many").rglob("f*"):
        p.chmod(0o644)
    stats = copy_troubled_like_gnu(shm, flag, who)
    assert stats["extra"]["files_copied_by_syscalls"] >= 200
    assert "openat" not in stats["ops"]    # no chain
    no_temps(shm)


@pytest.mark.parametrize("depth", [0, 1000])
def test_tmpfs_helper_failures_are_copied_again(
        shm: Path, monkeypatch: pytest.MonkeyPatch, depth: int) -> None:
    """Sources that vanish after their directory was read: the copy that
    met them (the helper's, depth 1000, or this thread's own, depth 0)
    stops there, the plain engine says why in GNU's words, and the files
    after them are copied all the same, whole; --stats adds up."""
    from uringtools import copybatch
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths
    from uringtools.stats import Stats

    sizes = {}
    gone = []
    for k in range(3):
        sub = shm / "d" / f"sub{k}"
        sub.mkdir(parents=True)
        for i in range(200):
            sizes[f"sub{k}/keep{i:03d}"] = i * 337 % 65000 + 1
            (sub / f"keep{i:03d}").write_bytes(os.urandom(i * 337 % 65000 + 1))
        for i in range(0, 200, 61):
            (sub / f"vanish{i}").write_bytes(b"v" * 1000)
            gone.append(f"sub{k}/vanish{i}")
    names = sorted({g.split("/")[1] for g in gone})
    monkeypatch.setattr(copybatch, "FreshDir", vanishing_after_read(*names))
    monkeypatch.setattr(copybatch, "HELPER_DEPTH", depth)
    errors: List[str] = []
    stats = Stats(command="cp")
    ok = copy_paths([str(shm / "d")], str(shm / "out"), stats=stats,
                    options=CopyOptions(recursive=True), on_error=errors.append)
    assert not ok
    assert sorted(errors) == sorted(f"cannot stat '{shm}/d/{name}': "
                                    "No such file or directory" for name in gone)
    out = shm / "out"
    copied = sorted(os.path.relpath(os.path.join(p, n), out)
                    for p, _, ns in os.walk(out) for n in ns)
    assert copied == sorted(sizes)
    for rel in sizes:
        assert (out / rel).read_bytes() == (shm / "d" / rel).read_bytes()
    assert stats.files == len(sizes)
    assert stats.extra["files_copied_by_syscalls"] == len(sizes)
    assert stats.extra["chain_failed_syscall_copy"] == len(gone)
    assert stats.syscalls["write"] == len(sizes)
    assert stats.bytes_written == sum(sizes.values())
    assert not stats.ops.get("openat")


@pytest.mark.parametrize("depth", [0, 1000])
def test_tmpfs_stats_count_the_syscalls_of_copies_that_failed_first(
        shm: Path, monkeypatch: pytest.MonkeyPatch, depth: int) -> None:
    """A run whose first file cannot be opened (it vanished after the
    read) copies nothing: its openat was dropped from --stats (n == 0),
    by the helper for good; --stats is to equal the calls made."""
    from uringtools import copybatch
    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths
    from uringtools.stats import Stats

    sub = shm / "d"
    sub.mkdir()
    # made first: the first by inode, so the first of the first run
    (sub / "vanish").write_bytes(b"v" * 1000)
    for i in range(150):
        (sub / f"keep{i:03d}").write_bytes(b"k" * (i + 1))
    (sub / "vanish2").write_bytes(b"v" * 1000)   # the last: a run of its own
    monkeypatch.setattr(copybatch, "FreshDir",
                        vanishing_after_read("vanish", "vanish2"))
    monkeypatch.setattr(copybatch, "HELPER_DEPTH", depth)
    stats = Stats(command="cp")
    errors: List[str] = []
    ok = copy_paths([str(sub)], str(shm / "out"), stats=stats,
                    options=CopyOptions(recursive=True), on_error=errors.append)
    assert not ok and len(errors) == 2
    assert stats.extra["files_copied_by_syscalls"] == 150
    # two opens and two closes a file copied, one failed open a vanished one
    assert stats.syscalls["openat"] == 2 * 150 + 2
    assert stats.syscalls["close"] == 2 * 150


def test_tmpfs_signal_while_the_helper_copies_keeps_whole_files(
        shm: Path) -> None:
    """KeyboardInterrupt while the helper thread has runs in hand: the
    clean-up waits for them, every file left is whole, and the thread
    ends."""
    import _thread

    from uringtools.copy import CopyOptions
    from uringtools.copytree import copy_paths

    for k in range(8):
        sub = shm / "d" / f"sub{k}"
        sub.mkdir(parents=True)
        for i in range(150):
            (sub / f"f{i}").write_bytes(os.urandom(i * 401 % 60000 + 1))
    threads = _thread._count()
    calls = []

    def progress(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_paths([str(shm / "d")], str(shm / "out"), on_progress=progress,
                   options=CopyOptions(recursive=True))
    for _ in range(100):
        if _thread._count() == threads:
            break
        time.sleep(0.01)
    assert _thread._count() == threads
    no_temps(shm)
    left = 0
    for dirpath, _, filenames in os.walk(shm / "out"):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), shm / "out")
            assert (shm / "out" / rel).read_bytes() == \
                (shm / "d" / rel).read_bytes()
            left += 1
    assert 0 < left < 8 * 150


def test_tmpfs_helper_verbose_and_low_nofile_like_gnu(shm: Path) -> None:
    """-v lines in GNU's order with the helper copying, and a copy under
    a low ``ulimit -n``."""
    make_many(shm / "d", files=400)
    ours = ucp("-rv", "d", "ours-v", cwd=shm)
    gnu = gcp("-rv", "d", "gnu-v", cwd=shm)
    assert ours.returncode == gnu.returncode == 0
    assert ours.stdout.decode().replace("ours-", "gnu-") == gnu.stdout.decode()
    assert snapshot(shm / "ours-v") == snapshot(shm / "gnu-v")
    if shutil.which("prlimit"):
        res = run([URING_CP, "-r", "--stats-format", "json", "d", "ours"], shm,
                  prefix=["prlimit", "--nofile=32"])
        assert res.returncode == 0, res.stderr
        assert snapshot(shm / "ours") == snapshot(shm / "gnu-v")
        assert json_stats(res)["extra"]["files_copied_by_syscalls"] > 200
    no_temps(shm)


@pytest.mark.parametrize("where", ["shm", "tmp"])
def test_a_second_signal_does_not_cut_the_clean_up_short(
        where: str, shm: Path, tmp: Path) -> None:
    """Ctrl-C twice (or Ctrl-C then SIGTERM) mid-tree: the second signal
    used to interrupt the clean-up's wait for the helper thread's run or
    the chains in flight, and the process died with files half-written.
    Now it is ignored once the first unwinds: killed by a signal, every
    file left whole, no temporary."""
    import random

    root = shm if where == "shm" else tmp
    for k in range(12):
        sub = root / "d" / f"sub{k}"
        sub.mkdir(parents=True)
        for i in range(200):
            (sub / f"f{i}").write_bytes(os.urandom(i * 331 % 60000 + 1))
    rng = random.Random(11)
    for attempt in range(12):
        dst = root / f"out{attempt}"
        proc = subprocess.Popen([URING_CP, "-r", "d", str(dst)], cwd=root,
                                stderr=subprocess.PIPE, env=ENV)
        time.sleep(rng.uniform(0.03, 0.09))
        proc.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
        time.sleep(rng.uniform(0, 0.002))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err
        # killed by one of the two (both may be pending when Python looks)
        assert proc.returncode in (0, -signal.SIGINT, -signal.SIGTERM), \
            (attempt, proc.returncode, err)
        no_temps(root)
        for dirpath, _, filenames in os.walk(dst):
            for name in filenames:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, dst)
                with open(path, "rb") as got, open(root / "d" / rel, "rb") as want:
                    assert got.read() == want.read(), (attempt, rel)

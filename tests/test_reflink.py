"""cp --reflink, against GNU cp 9 (which clones by default): on XFS the copy
shares the source's extents (FIEMAP shows the same physical blocks), on
filesystems that cannot clone auto copies and always fails as GNU does,
except that ours leaves no empty destination behind.

The XFS filesystems are loop-mounted images (root; CI installs xfsprogs).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest

BIN = Path(sys.executable).parent
URING_CP = str(BIN / "uring-cp")
URINGTOOLS = str(BIN / "uringtools")
ENV = dict(os.environ, LC_ALL="C")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_SHARED = 0x2000
_EXTENT = struct.Struct("=QQQ2QI3I")


def extents(path: Path) -> List[Tuple[int, int, int, int]]:
    """(logical, physical, length, flags) of each extent of ``path``."""
    count = 256
    head = struct.pack("=QQIIII", 0, 2**64 - 1, 0, 0, count, 0)
    buf = bytearray(head + bytes(_EXTENT.size * count))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
    mapped = struct.unpack_from("=I", buf, 20)[0]
    out = []
    for i in range(mapped):
        logical, physical, length, _, _, flags, *_ = _EXTENT.unpack_from(
            buf, 32 + i * _EXTENT.size)
        out.append((logical, physical, length, flags))
    return out


def shares(copy: Path, original: Path) -> bool:
    """Whether ``copy`` is a clone of ``original``: the same physical blocks,
    marked shared (an empty file has none, and shares nothing)."""
    a, b = extents(copy), extents(original)
    return bool(a) and [e[:3] for e in a] == [e[:3] for e in b] and all(
        e[3] & FIEMAP_EXTENT_SHARED for e in a)


def _mount_xfs(base: Path, reflink: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        raise AssertionError("these tests loop-mount XFS: run the suite as root")
    if shutil.which("mkfs.xfs") is None:
        raise AssertionError("mkfs.xfs is missing: apt-get install xfsprogs")
    image, mnt = base / "xfs.img", base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(320 << 20)      # sparse: XFS wants 300 MiB at least
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", f"reflink={reflink}",
                    str(image)], check=True, capture_output=True)
    res = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {res.stderr.decode().strip()}")
    try:
        mnt.chmod(0o777)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        image.unlink()


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An XFS that clones (reflink=1, mkfs's default)."""
    yield from _mount_xfs(tmp_path_factory.mktemp("xfs"), 1)


@pytest.fixture(scope="module")
def xfs_noreflink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An XFS made without reflink: FICLONE says EOPNOTSUPP."""
    yield from _mount_xfs(tmp_path_factory.mktemp("xfs0"), 0)


@pytest.fixture
def place(xfs: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    path = xfs / request.node.name.replace("/", "_")[:100]
    path.mkdir()
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(argv: Sequence[str], cwd: Path, prefix: Sequence[str] = ()
        ) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *argv], cwd=cwd, env=ENV,
                          capture_output=True, timeout=120)


def as_gnu(stderr: bytes) -> bytes:
    return stderr.replace(b"uring-cp: ", b"cp: ")


def build_tree(root: Path) -> None:
    """Files around the sizes our paths split at, a sparse one, an empty
    one, a symlink, nested directories."""
    (root / "d" / "sub" / "deeper").mkdir(parents=True)
    sizes = {"one": 1, "page": 4096, "odd": 4097, "mid": 100_000,
             "big": 2 << 20}
    for i, (name, size) in enumerate(sizes.items()):
        (root / "d" / name).write_bytes(os.urandom(size))
        (root / "d" / "sub" / f"{name}{i}").write_bytes(os.urandom(size))
    (root / "d" / "empty").write_bytes(b"")
    with open(root / "d" / "sub" / "deeper" / "sparse", "wb") as f:
        f.seek(8 << 20)
        f.write(b"end")
        f.seek(0)
        f.write(os.urandom(65536))
    (root / "d" / "link").symlink_to("one")


def files_of(root: Path) -> Dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def test_single_file_is_cloned_like_gnu(place: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    (place / "a").write_bytes(data)
    gnu = run(["cp", "a", "g"], place)
    ours = run([URING_CP, "--stats-format", "json", "a", "o"], place)
    assert gnu.returncode == ours.returncode == 0, ours.stderr
    assert (place / "o").read_bytes() == data
    assert shares(place / "g", place / "a")
    assert shares(place / "o", place / "a")
    import json
    stats = json.loads(ours.stderr.decode().strip().splitlines()[-1])
    assert stats["extra"]["files_cloned"] == 1
    assert stats["bytes_read"] == stats["bytes_written"] == 0


@pytest.mark.parametrize("engine", ["uring", "sync"])
@pytest.mark.parametrize("args", [["-r"], ["-a"], ["-r", "--reflink"],
                                  ["-a", "--reflink=always"]])
def test_tree_is_cloned_like_gnu(place: Path, args: List[str],
                                 engine: str) -> None:
    """Every regular file with data shares its source's blocks, as GNU's
    copy does; contents, modes (and times with -a) as GNU's."""
    build_tree(place)
    gnu = run(["cp", *args, "d", "g"], place)
    ours = run([URING_CP, "--engine", engine, *args, "d", "o"], place)
    assert (ours.returncode, as_gnu(ours.stderr)) == (gnu.returncode, gnu.stderr)
    assert gnu.returncode == 0
    src, g, o = files_of(place / "d"), files_of(place / "g"), files_of(place / "o")
    assert sorted(g) == sorted(o) == sorted(src)
    for name, path in src.items():
        assert o[name].read_bytes() == path.read_bytes(), name
        assert shares(o[name], path) == shares(g[name], path), name
        ost, gst = o[name].stat(), g[name].stat()
        assert ost.st_mode == gst.st_mode, name
        if "-a" in args:
            assert ost.st_mtime_ns == gst.st_mtime_ns == path.stat().st_mtime_ns
    assert sum(shares(p, src[n]) for n, p in o.items()) == len(src) - 1  # not 'empty'
    assert os.readlink(place / "o" / "link") == "one"


def test_never_copies_the_bytes_like_gnu(place: Path) -> None:
    build_tree(place)
    gnu = run(["cp", "-r", "--reflink=never", "d", "g"], place)
    ours = run([URING_CP, "-r", "--reflink=never", "d", "o"], place)
    assert gnu.returncode == ours.returncode == 0, ours.stderr
    src, o, g = files_of(place / "d"), files_of(place / "o"), files_of(place / "g")
    for name, path in src.items():
        assert o[name].read_bytes() == path.read_bytes()
        assert not shares(o[name], path) and not shares(g[name], path)


def test_clone_into_an_existing_tree_and_over_files(place: Path) -> None:
    """Into a directory that exists, over older files: the copies replace
    them whole and share the source's blocks."""
    build_tree(place)
    for root in ("g", "o"):
        (place / root / "sub").mkdir(parents=True)
        (place / root / "one").write_bytes(b"old and longer")
        (place / root / "sub" / "mid3").write_bytes(b"old")
    gnu = run(["cp", "-rT", "d", "g"], place)
    ours = run([URING_CP, "-rT", "d", "o"], place)
    assert gnu.returncode == ours.returncode == 0, ours.stderr
    for name, path in files_of(place / "d").items():
        assert (place / "o" / name).read_bytes() == path.read_bytes()
        assert shares(place / "o" / name, path) == shares(place / "g" / name, path)


def test_other_filesystem_copies_under_auto(place: Path, tmp_path: Path) -> None:
    """XFS -> ext4 or tmpfs: FICLONE cannot cross filesystems; auto copies
    (no ioctl is even tried: the devices differ)."""
    build_tree(place)
    for dest in (tmp_path / "o", Path("/dev/shm") / f"reflink-{os.getpid()}"):
        try:
            res = run([URING_CP, "-r", "--stats-format", "json",
                       str(place / "d"), str(dest)], place)
            assert res.returncode == 0, res.stderr
            for name, path in files_of(place / "d").items():
                assert (dest / name).read_bytes() == path.read_bytes()
            import json
            stats = json.loads(res.stderr.decode().strip().splitlines()[-1])
            assert "files_cloned" not in stats["extra"]
            assert "ioctl" not in stats["syscalls"]
        finally:
            shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.parametrize("where", ["tmp", "xfs-to-tmpfs", "xfs-noreflink"])
def test_always_fails_like_gnu_and_leaves_nothing(
        where: str, tmp_path: Path, xfs: Path, xfs_noreflink: Path) -> None:
    """--reflink=always where no clone can be made: GNU's message and
    status. GNU leaves an empty file (or the old one truncated); ours
    leaves a new destination absent and an old one as it was."""
    src_dir = {"tmp": tmp_path, "xfs-to-tmpfs": xfs,
               "xfs-noreflink": xfs_noreflink}[where]
    src = src_dir / f"src-{os.getpid()}"
    src.write_bytes(b"data\n" * 1000)
    dst_dir = Path("/dev/shm") if where == "xfs-to-tmpfs" else tmp_path
    if where == "xfs-noreflink":
        dst_dir = xfs_noreflink
    results = {}
    try:
        for who, argv in (("gnu", ["cp"]), ("ours", [URING_CP])):
            new = dst_dir / f"{who}-new-{os.getpid()}"
            old = dst_dir / f"{who}-old-{os.getpid()}"
            old.write_bytes(b"precious")
            r1 = run([*argv, "--reflink=always", str(src), str(new)], tmp_path)
            r2 = run([*argv, "--reflink", str(src), str(old)], tmp_path)
            mine = f"/{who}-".encode()
            results[who] = (r1.returncode, as_gnu(r1.stderr).replace(mine, b"/X-"),
                            r2.returncode, as_gnu(r2.stderr).replace(mine, b"/X-"),
                            new.exists(), old.read_bytes())
    finally:
        src.unlink()
        for p in dst_dir.glob(f"*-{os.getpid()}"):
            p.unlink()
    g, o = results["gnu"], results["ours"]
    assert o[:4] == g[:4]
    assert g[0] == g[2] == 1 and b"failed to clone" in g[1]
    assert o[4:] == (False, b"precious")


def test_no_reflink_filesystem_falls_back_in_a_tree(xfs_noreflink: Path) -> None:
    """XFS without reflink: the first clone says EOPNOTSUPP; auto copies
    that file and the rest (chains take over), as GNU copies them."""
    root = xfs_noreflink / "tree"
    root.mkdir()
    try:
        build_tree(root)
        res = run([URING_CP, "-r", "--stats-format", "json", "d", "o"], root)
        assert res.returncode == 0, res.stderr
        for name, path in files_of(root / "d").items():
            assert (root / "o" / name).read_bytes() == path.read_bytes()
        import json
        stats = json.loads(res.stderr.decode().strip().splitlines()[-1])
        assert "files_cloned" not in stats["extra"]
        assert stats["syscalls"].get("ioctl", 0) <= 1   # asked once
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("where", ["d", "d/sub"])
def test_unreadable_file_in_a_cloned_tree_as_nobody(place: Path,
                                                    where: str) -> None:
    """As nobody, one file in the tree may not be read: the same message
    and status as GNU's, and the others are still cloned. In the first
    directory this thread clones; in the next ones the helper thread
    does too, and the plain engine takes the file it could not."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    build_tree(place)
    for i in range(40):
        (place / "d" / "sub" / f"more{i}").write_bytes(os.urandom(5000 + i))
    secret = place / where / "secret"
    secret.write_bytes(b"root only")
    secret.chmod(0o600)
    for p in [place / "d", *(place / "d").rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    gnu = run(["cp", "-r", "d", "g"], place, NOBODY)
    ours = run([URING_CP, "-r", "d", "o"], place, NOBODY)
    assert (ours.returncode, as_gnu(ours.stderr)) == (gnu.returncode, gnu.stderr)
    assert gnu.returncode == 1 and b"Permission denied" in gnu.stderr
    rel = str(secret.relative_to(place / "d"))
    assert not (place / "o" / rel).exists()
    for name, path in files_of(place / "d").items():
        if name == rel:
            continue
        assert (place / "o" / name).read_bytes() == path.read_bytes()
        assert shares(place / "o" / name, path) == shares(place / "g" / name, path)


@pytest.mark.parametrize("args", [
    ["--reflink=bogus", "a", "b"], ["--reflink=a", "a", "b"],
    ["--reflink=", "a", "b"], ["--sparse=bogus", "a", "b"],
    ["--sparse=al", "a", "b"], ["--reflink=al", "--sparse=never", "a", "b"],
    ["--reflink", "--sparse=always", "a", "b"], ["--reflink=nev", "a", "b"],
    ["-t", "--reflink", "a"], ["--reflink=-v", "a", "b"],
    ["--reflink=--", "a", "b"], ["--refl=-T", "a", "b"],
])
def test_reflink_arguments_like_gnu(tmp_path: Path, args: List[str]) -> None:
    """GNU's argmatch: unique prefixes, its messages for ambiguous and
    invalid words; --reflink alone is always, never takes the next word;
    always wants --sparse=auto. A value that looks like an option is a bad
    value (Click read --reflink=-v as --reflink -v)."""
    (tmp_path / "a").write_bytes(b"x\n")
    got = {}
    for who, argv in (("gnu", ["cp"]), ("ours", [URING_CP])):
        root = tmp_path / who
        root.mkdir()
        shutil.copy(tmp_path / "a", root / "a")
        res = run([*argv, *args], root)
        got[who] = (res.returncode, as_gnu(res.stderr).replace(
            b"uring-cp --help", b"cp --help"), sorted(os.listdir(root)))
    assert got["ours"] == got["gnu"]


def test_uringtools_cp_takes_reflink_too(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x\n")
    res = run([URINGTOOLS, "cp", "--reflink", "a", "b"], tmp_path)
    assert res.returncode == 1
    assert b"failed to clone 'b' from 'a'" in res.stderr
    assert not (tmp_path / "b").exists()

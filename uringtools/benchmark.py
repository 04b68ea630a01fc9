"""`uringtools bench`: measure our commands against their GNU peers here.

Each workload is a set of commands doing the same job (ours with the uring
engine, ours with the sync engine, the GNU tool, and a Python baseline where
one makes sense). Runs alternate between the commands, after one warm-up
round; every run is a fresh process whose wall time, CPU time (wait4
rusage) and syscalls are recorded. Our commands report their syscalls
through --stats-format json (io_uring_enter plus any plain read/write);
peers are counted strace-free from /proc/PID/io (syscr + syscw, read while
the process is a zombie; for a user other than root, which may not read
it, from our own /proc/self/io across its reaping), which counts read-
and write-family calls; so of our plain syscalls only those families are
counted too.

No click and no rich here: the CLI renders.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

MiB = 1 << 20
GiB = 1 << 30


class Measurement:
    """One run of one command."""

    def __init__(self, wall: float, cpu: float, syscalls: Optional[int]) -> None:
        self.wall = wall
        self.cpu = cpu
        self.syscalls = syscalls


class Command:
    """One contender in a workload."""

    def __init__(self, label: str, argv: Sequence[str], *, ours: bool,
                 engine: str = "", into_pipe: bool = False,
                 before: Optional[Callable[[], None]] = None,
                 after: Optional[Callable[[], None]] = None) -> None:
        self.label = label
        self.argv = list(argv)
        self.ours = ours
        self.engine = engine
        self.into_pipe = into_pipe
        self.before = before
        self.after = after
        self.runs: List[Measurement] = []

    def median(self, attr: str) -> Optional[float]:
        values = [getattr(m, attr) for m in self.runs if getattr(m, attr) is not None]
        return statistics.median(values) if values else None


class Workload:
    """A job, the bytes it moves, and the commands that do it."""

    def __init__(self, name: str, nbytes: int, commands: List[Command],
                 peer: str) -> None:
        self.name = name
        self.nbytes = nbytes
        self.commands = commands
        self.peer = peer  # label of the command ratios are taken against
        #: (program, label) of the peers left out: not found in PATH
        self.missing: List[Tuple[str, str]] = []
        for cmd in list(commands):
            if not cmd.ours and shutil.which(cmd.argv[0]) is None:
                commands.remove(cmd)
                self.missing.append((cmd.argv[0], cmd.label))

    def rows(self) -> List[Dict[str, object]]:
        """Medians per command, and ratios to the peer."""
        peer = next((c for c in self.commands if c.label == self.peer), None)
        peer_wall = peer.median("wall") if peer else None
        peer_cpu = peer.median("cpu") if peer else None
        gib = self.nbytes / GiB if self.nbytes else 0
        out = []
        for cmd in self.commands:
            wall = cmd.median("wall")
            cpu = cmd.median("cpu")
            calls = cmd.median("syscalls")
            if wall is None or cpu is None:
                continue
            out.append({
                "workload": self.name,
                "command": cmd.label,
                "runs": len(cmd.runs),
                "wall_s": wall,
                "cpu_s": cpu,
                "cpu_s_per_gib": cpu / gib if gib else None,
                "syscalls": calls,
                "syscalls_per_gib": calls / gib if gib and calls is not None else None,
                "throughput_bytes_per_s": self.nbytes / wall if wall else None,
                "wall_vs_peer": wall / peer_wall if peer_wall else None,
                "cpu_vs_peer": cpu / peer_cpu if peer_cpu else None,
            })
        return out


# -- running one command -------------------------------------------------------

def _io_calls(text: str) -> Optional[int]:
    """syscr + syscw from the text of a /proc/PID/io file."""
    try:
        fields = dict(line.split(": ") for line in text.splitlines() if ": " in line)
        return int(fields["syscr"]) + int(fields["syscw"])
    except (KeyError, ValueError):
        return None


def _proc_io_calls(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/io") as f:
            return _io_calls(f.read())
    except OSError:
        return None


# os.wait4 imports `resource` on first use (its rusage type): a module read
# from disk inside the first peer's count (_OwnIO) unless loaded already
__import__("resource")


class _OwnIO:
    """This process's read/write call count (/proc/self/io), which takes in
    a child's when the child is reaped. A finished process's own
    /proc/PID/io is root's to read, so for another user a peer's count is
    the difference across its reaping, less the one pread that reads ours
    (measured: two reads in a row).
    """

    def __init__(self) -> None:
        self.fd: Optional[int] = None
        self.cost = 0

    def calls(self) -> Optional[int]:
        try:
            if self.fd is None:
                self.fd = os.open("/proc/self/io", os.O_RDONLY | os.O_CLOEXEC)
                first = self._read()
                second = self._read()
                if first is None or second is None:
                    return None
                self.cost = second - first
            return self._read()
        except OSError:
            return None

    def _read(self) -> Optional[int]:
        assert self.fd is not None
        return _io_calls(os.pread(self.fd, 4096, 0).decode("ascii", "replace"))


_OWN_IO = _OwnIO()


#: what /proc/PID/io's syscr + syscw count: the read and write families
_IO_CALLS = frozenset({"read", "readv", "pread", "preadv", "write", "writev",
                       "pwrite", "pwritev", "copy_file_range", "sendfile"})


def _our_calls(stderr: bytes) -> Optional[int]:
    """Syscalls one of our commands reported in its --stats-format json line:
    io_uring_enter and the read/write families, as counted for the peers
    (not openat, close, fstatat: the peers' count has no such calls)."""
    for line in reversed(stderr.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            return int(data.get("enters", 0)) + sum(
                n for name, n in data.get("syscalls", {}).items() if name in _IO_CALLS)
    return None


def _error_line(stderr: bytes) -> str:
    """': ' and the first line of a failed command's stderr that is not its
    --stats JSON (its own error message), or '' if there is none."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("{"):
            return ": " + line[:300]
    return ""


def _sink_argv() -> List[str]:
    """What drains a pipe workload: GNU cat, or a read loop without it."""
    if shutil.which("cat"):
        return ["cat"]
    return [sys.executable, "-c",
            "import os\nwhile os.read(0, 1 << 20):\n    pass\n"]


def run_once(cmd: Command) -> Measurement:
    """Run ``cmd`` once; stdout to /dev/null, or into a pipe drained by cat."""
    if cmd.before:
        cmd.before()
    devnull = os.open(os.devnull, os.O_WRONLY)
    errfile = tempfile.TemporaryFile()
    proc = sink = None
    try:
        t0 = time.perf_counter()
        if cmd.into_pipe:
            r, w = os.pipe()
            proc = subprocess.Popen(cmd.argv, stdin=subprocess.DEVNULL,
                                    stdout=w, stderr=errfile)
            os.close(w)
            sink = subprocess.Popen(_sink_argv(), stdin=r, stdout=devnull)
            os.close(r)
        else:
            # stdin: nothing measured reads it (and a directory there
            # would stop a Python peer before it starts)
            proc = subprocess.Popen(cmd.argv, stdin=subprocess.DEVNULL,
                                    stdout=devnull, stderr=errfile)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        peer_calls = None if cmd.ours else _proc_io_calls(proc.pid)
        # not root: ours before and after the reaping that adds the peer's
        own_before = _OWN_IO.calls() if peer_calls is None and not cmd.ours \
            else None
        _, status, usage = os.wait4(proc.pid, 0)
        if own_before is not None:
            own_after = _OWN_IO.calls()
            if own_after is not None:
                peer_calls = own_after - own_before - _OWN_IO.cost
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sink is not None:
            sink.wait()
        wall = time.perf_counter() - t0
        errfile.seek(0)
        stderr = errfile.read()
    except BaseException:
        # Ctrl-C, SIGTERM: no contender goes on writing into the data
        # directory while it is removed, or after we are gone
        for child in (proc, sink):
            if child is not None and child.returncode is None:
                child.kill()
                child.wait()
        raise
    finally:
        os.close(devnull)
        errfile.close()
    if cmd.after:
        cmd.after()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd.label} exited with status {proc.returncode}"
                           + _error_line(stderr))
    calls = _our_calls(stderr) if cmd.ours else peer_calls
    return Measurement(wall, usage.ru_utime + usage.ru_stime, calls)


def run_workload(workload: Workload, runs: int,
                 tick: Callable[[str], None] = lambda label: None,
                 cold: Optional[Callable[[], None]] = None) -> None:
    """Warm up once, then `runs` rounds alternating the commands."""
    for cmd in workload.commands:
        if cold:
            cold()
        run_once(cmd)
        tick(f"{workload.name}: warm-up {cmd.label}")
    for _ in range(runs):
        for cmd in workload.commands:
            if cold:
                cold()
            cmd.runs.append(run_once(cmd))
            tick(f"{workload.name}: {cmd.label}")


# -- data ---------------------------------------------------------------------

def _write(path: str, data: memoryview, size: int) -> None:
    """Write ``size`` bytes, repeating ``data``, to a new file ``path``.

    Raises:
        OSError: with ``path`` as its filename (ENOSPC from a write too).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            left = size
            while left > 0:
                left -= os.write(fd, data[:min(left, len(data))])
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, path) from None
        raise


def write_file(path: str, size: int) -> None:
    """Fill ``path`` with ``size`` bytes of incompressible data."""
    _write(path, memoryview(os.urandom(4 * MiB)), size)


def make_tree(root: str, files: int, size: int = 4096) -> None:
    """``files`` small files spread over directories of 100."""
    data = memoryview(os.urandom(size))
    for i in range(files):
        sub = os.path.join(root, f"d{i // 100:04d}")
        if i % 100 == 0:
            os.makedirs(sub, exist_ok=True)
        _write(os.path.join(sub, f"f{i:06d}"), data, size)


def warm(paths: Sequence[str]) -> None:
    """Read files once so the page cache holds them."""
    for path in paths:
        if os.path.isdir(path):
            for dirpath, _, names in os.walk(path):
                warm([os.path.join(dirpath, n) for n in names])
            continue
        with open(path, "rb") as f:
            while f.read(4 * MiB):
                pass


def _files(paths: Sequence[str]) -> Iterator[str]:
    """The files named, and those under the directories named."""
    for path in paths:
        if os.path.isdir(path):
            for dirpath, _, names in os.walk(path):
                for name in names:
                    yield os.path.join(dirpath, name)
        else:
            yield path


def evict(paths: Sequence[str]) -> None:
    """Drop files from the page cache (posix_fadvise DONTNEED; no root needed).

    Dirty pages are written back first: DONTNEED skips them, so data just
    made would otherwise stay cached.
    """
    for path in _files(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_bytes(paths: Sequence[str]) -> int:
    """Bytes of these files in the page cache now (mincore(2), as fincore)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    page = mmap.PAGESIZE
    total = 0
    for path in _files(paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                continue
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), path)
            try:
                pages = (size + page - 1) // page
                vec = (ctypes.c_ubyte * pages)()
                if libc.mincore(addr, size, vec) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), path)
                resident = sum(b & 1 for b in vec)
            finally:
                libc.munmap(addr, size)
            # the last page holds only the file's tail
            if vec[pages - 1] & 1:
                resident -= 1
                total += size - (pages - 1) * page
            total += resident * page
        finally:
            os.close(fd)
    return total


def ours(name: str) -> List[str]:
    """argv prefix for one of our commands, from this interpreter's install."""
    script = os.path.join(os.path.dirname(sys.executable), f"uring-{name}")
    if os.path.exists(script):
        return [script]
    found = shutil.which(f"uring-{name}")
    return [found] if found else [sys.executable, "-m", "uringtools", name]


def digest_baseline(paths: Sequence[str]) -> List[str]:
    """hashlib.file_digest over the files, one thread: the in-Python floor."""
    code = ("import hashlib,sys\n"
            "for p in sys.argv[1:]:\n"
            "    with open(p,'rb') as f: print(hashlib.file_digest(f,'sha256').hexdigest(), p)\n")
    return [sys.executable, "-c", code, *paths]


class DestinationPool:
    """Fresh destination paths under one directory, removed at the end.

    A fresh name each run (DESIGN.md: on ext4, creating 10k files right after
    deleting 10k is slow for minutes), deleted only after measuring.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.count = 0
        os.makedirs(root, exist_ok=True)

    def next(self) -> str:
        self.count += 1
        return os.path.join(self.root, f"dst{self.count:05d}")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def space_needed(size: int, files: int, runs: int,
                 only: Optional[Sequence[str]] = None) -> int:
    """Bytes the data of build_workloads takes at its peak: the big file
    and one copy of it, the four parts, the tree and its copies (kept until
    the end)."""
    def wanted(name: str) -> bool:
        return not only or name in only

    total = 0
    if any(wanted(n) for n in ("cat-null", "cat-pipe", "cp-big", "hash-big")):
        total += size
    if wanted("cp-big"):
        total += size
    if wanted("hash-many"):
        total += 4 * max(size // 4, MiB)
    if wanted("cp-tree") and files > 0:
        # the tree, then a copy per run (and warm-up) of each of 3 contenders
        total += files * 4096 * (1 + 3 * (runs + 1))
    return total


def build_workloads(data_dir: str, size: int, files: int,
                    only: Optional[Sequence[str]] = None
                    ) -> Tuple[List[Workload], Callable[[], None], List[str]]:
    """Make the data and the workloads.

    Returns:
        (workloads, a clean-up function, the data paths for warm/evict).
    """
    want = set(only) if only else None
    big = os.path.join(data_dir, "big")
    parts = [os.path.join(data_dir, f"part{i}") for i in range(4)]
    tree = os.path.join(data_dir, "tree")
    pool = DestinationPool(os.path.join(data_dir, "dst"))
    data_paths: List[str] = []

    def wanted(name: str) -> bool:
        return want is None or name in want

    workloads: List[Workload] = []
    if any(wanted(n) for n in ("cat-null", "cat-pipe", "cp-big", "hash-big")):
        write_file(big, size)
        data_paths.append(big)
    for name, pipe in (("cat-null", False), ("cat-pipe", True)):
        if wanted(name):
            workloads.append(Workload(name, size, [
                Command("uring-cat", ours("cat") + ["--stats-format", "json", big],
                        ours=True, engine="uring", into_pipe=pipe),
                Command("uring-cat --engine sync",
                        ours("cat") + ["--engine", "sync", "--stats-format", "json", big],
                        ours=True, engine="sync", into_pipe=pipe),
                Command("GNU cat", ["cat", big], ours=False, into_pipe=pipe),
            ], peer="GNU cat"))
    if wanted("cp-big"):
        workloads.append(Workload("cp-big", size, [
            _copy_command("uring-cp", ours("cp") + ["--stats-format", "json"], big,
                          pool, ours=True, discard=True),
            _copy_command("uring-cp --engine sync",
                          ours("cp") + ["--engine", "sync", "--stats-format", "json"],
                          big, pool, ours=True, discard=True),
            _copy_command("GNU cp", ["cp"], big, pool, ours=False, discard=True),
        ], peer="GNU cp"))
    if wanted("cp-tree") and files > 0:
        make_tree(tree, files)
        data_paths.append(tree)
        tree_bytes = files * 4096
        workloads.append(Workload("cp-tree", tree_bytes, [
            _copy_command("uring-cp -r", ours("cp") + ["-r", "--stats-format", "json"],
                          tree, pool, ours=True),
            _copy_command("uring-cp -r --engine sync",
                          ours("cp") + ["-r", "--engine", "sync", "--stats-format", "json"],
                          tree, pool, ours=True),
            _copy_command("GNU cp -r", ["cp", "-r"], tree, pool, ours=False),
        ], peer="GNU cp -r"))
    if wanted("hash-big"):
        workloads.append(Workload("hash-big", size, [
            Command("uring-hash", ours("hash") + ["--stats-format", "json", big],
                    ours=True, engine="uring"),
            Command("uring-hash --engine sync",
                    ours("hash") + ["--engine", "sync", "--stats-format", "json", big],
                    ours=True, engine="sync"),
            Command("sha256sum", ["sha256sum", big], ours=False),
            Command("hashlib.file_digest", digest_baseline([big]), ours=False),
        ], peer="sha256sum"))
    if wanted("hash-many"):
        part_size = max(size // 4, MiB)
        for part in parts:
            write_file(part, part_size)
        data_paths.extend(parts)
        workloads.append(Workload("hash-many", 4 * part_size, [
            Command("uring-hash (4 files)", ours("hash") + ["--stats-format", "json", *parts],
                    ours=True, engine="uring"),
            Command("uring-hash --engine sync (4 files)",
                    ours("hash") + ["--engine", "sync", "--stats-format", "json", *parts],
                    ours=True, engine="sync"),
            Command("sha256sum (4 files)", ["sha256sum", *parts], ours=False),
            Command("hashlib.file_digest (4 files)", digest_baseline(parts), ours=False),
        ], peer="sha256sum (4 files)"))

    def cleanup() -> None:
        pool.cleanup()

    return workloads, cleanup, data_paths


def _copy_command(label: str, prefix: List[str], src: str, pool: DestinationPool,
                  *, ours: bool, discard: bool = False) -> Command:
    """A copy whose destination is a fresh path each run; ``discard``: the
    copy (one file) is removed right after its run, so its dirty pages are
    dropped instead of throttling the runs after it with write-back (ext4:
    15 copies of 1 GiB kept until the end made GNU cp take 1.7 s instead
    of 0.4 s). Trees are kept until the end (DESIGN.md trap 16)."""
    cmd = Command(label, prefix + [src, ""], ours=ours)

    def before() -> None:
        cmd.argv[-1] = pool.next()

    def after() -> None:
        try:
            os.unlink(cmd.argv[-1])
        except FileNotFoundError:
            pass

    cmd.before = before
    if discard:
        cmd.after = after
    return cmd


def sweep_commands(path: str, block_sizes: Sequence[int],
                   depths: Sequence[int]) -> Iterator[Tuple[int, int, Command]]:
    """uring-cat through the registered buffers (no splice) to /dev/null,
    for each block size x queue depth: where the ring peaks here."""
    for bs in block_sizes:
        for depth in depths:
            yield bs, depth, Command(
                f"{bs // 1024}K x {depth}",
                ours("cat") + ["--no-splice", "--block-size", str(bs),
                               "--queue-depth", str(depth), "--stats-format",
                               "json", path],
                ours=True, engine="uring")

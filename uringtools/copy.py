"""cp: copy regular files through linked read->write chains, safely.

Every regular destination is written into a temporary file beside it
(created 0600 with O_EXCL|O_NOFOLLOW) and renamed over the destination only
when complete, so a failed or interrupted copy leaves the old destination
(or none). The uring engine keeps many chunks, and many files, in flight in
one ring: each chunk is a read_fixed linked to a write_fixed over a slot of
the registered arena. Small new files skip all that: the uring engine hands
them to :mod:`uringtools.copybatch`, which copies each as one whole-file
chain (open, create, read, write, rename), many files per submit. The sync
engine is a pread/pwrite loop with the same block size. The tree walk and
GNU's checks live in :mod:`uringtools.copytree`.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
from _collections import deque  # not collections: ~6 ms of start-up
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import (Callable, Deque, Dict, Iterable, Iterator, List,
                        Optional, Set, Tuple, Union)

from . import fdio
from .errors import WriteError
from ._uring import lib as _lib
from .ring import (OP_CLOSE, OP_READ, OP_READ_FIXED, OP_WRITE,
                   OP_WRITE_FIXED, SETUP_COOP_TASKRUN, SQE_IO_LINK, Arena,
                   FileRef, Ring)
from .reflink import Cloner
from .splicing import CHAIN_PAIRS, VIA_PIPE, SpliceCopier
from .stats import Stats

if TYPE_CHECKING:
    from .copybatch import BatchCopier, FreshDir

    #: (message) for each failure, already GNU-formatted without the prog name
    ErrorHandler = Callable[[str], None]
    #: bytes copied since the last call
    ProgressHandler = Callable[[int], None]

DEFAULT_BLOCK_SIZE = 128 * 1024
DEFAULT_QUEUE_DEPTH = 4
#: keep the arena about the size of L2 (DESIGN.md): 16 x 128 KiB
ARENA_BYTES = 2 << 20
#: files at least this large go into the registered file table
REGISTER_MIN_SIZE = 1 << 20
#: files at least this large are copied with splice pairs (one copy in the
#: kernel instead of two through the arena); below it, chains batch better
SPLICE_MIN = 1 << 20
#: io-wq workers for a big file's splice pairs (see _splice_one)
SPLICE_WORKERS = 2
#: chains of splice pairs in flight per big file, each through a pipe of
#: its own: one worker writes a chain while another reads the next
SPLICE_PIPES = 2
#: below this many descriptors (RLIMIT_NOFILE), big files skip the splice
#: ring and its three pipes: GNU cp copies with 5, the arena path with 7
SPLICE_MIN_FDS = 16


def _fd_limit() -> int:
    """The soft RLIMIT_NOFILE (how many descriptors this process may hold)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft
#: statfs f_type of tmpfs, the one source filesystem where splice pairs
#: beat the arena (see _splice_pays)
TMPFS_MAGIC = 0x01021994


#: ASCII that GNU's quoting leaves bare and that still lets a name holding a
#: single quote be written "..." (gnulib quotearg's c_and_shell_quote_compat;
#: '#' and '~' count only first in the name, '{' and '}' only alone)
_QUOTE_COMPAT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789%+,-./:@]_ ")
_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                  "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_utf8_ctype: Optional[bool] = None


def _utf8_locale() -> bool:
    """Is LC_CTYPE UTF-8, as a C program started in our environment sees it?

    Asked only for names that are not ASCII, answered once. Python has run
    setlocale(LC_CTYPE, "") at start-up, so the codeset is the locale's,
    except after PEP 538: started in the C locale (LC_ALL, LC_CTYPE and LANG
    unset or C), Python exports LC_CTYPE=C.UTF-8 and turns on UTF-8 mode,
    while GNU stays in C. Other codesets are taken as C takes them.
    """
    global _utf8_ctype
    if _utf8_ctype is None:
        import _locale  # what `locale` re-exports, without its ~3 ms import
        import sys
        env = os.environ
        coerced = (sys.flags.utf8_mode and not env.get("LC_ALL")
                   and env.get("LC_CTYPE") in ("C.UTF-8", "C.utf8", "UTF-8")
                   and env.get("LANG", "") in ("", "C", "POSIX"))
        codeset = _locale.nl_langinfo(_locale.CODESET)
        _utf8_ctype = codeset.replace("-", "").upper() == "UTF8" and not coerced
    return _utf8_ctype


def _printable(c: str) -> bool:
    """glibc's iswprint for a character beyond ASCII: assigned, not a
    control, not U+2028/U+2029 (format, private-use and spaces print)."""
    if c.isprintable():
        return True
    import unicodedata
    return (unicodedata.category(c) in ("Cf", "Co", "Zs")
            and c not in "\u2028\u2029")


def _quote_units(name: str) -> List[Tuple[str, int]]:
    """A name as GNU's quoting sees it: (text, kind) per character.

    kind 1: printed as is, and "..." would do; 0: printed as is, but only
    '...' will do; 2: a single quote; 3: escaped, text is what goes inside
    $'...' (``\\n``, ``\\303\\274``).
    """
    if name.isascii():
        chars, utf8 = name, False
    else:
        raw = os.fsencode(name)
        utf8 = _utf8_locale()
        # outside UTF-8, each byte >= 0x80 is an unprintable character
        chars = (raw.decode("utf-8", "surrogateescape") if utf8
                 else raw.decode("latin-1"))
    units: List[Tuple[str, int]] = []
    for i, c in enumerate(chars):
        if c == "'":
            units.append((c, 2))
        elif (c in _QUOTE_COMPAT or (c in "#~" and i == 0)
              or (c in "{}" and len(chars) == 1)):
            units.append((c, 1))
        elif " " < c < "\x7f":
            units.append((c, 0))
        elif c in _QUOTE_ESCAPES:
            units.append((_QUOTE_ESCAPES[c], 3))
        elif c < "\x80" or not utf8:
            units.append((f"\\{ord(c):03o}", 3))
        elif "\udc80" <= c <= "\udcff":  # a byte that is not UTF-8
            units.append((f"\\{ord(c) - 0xDC00:03o}", 3))
        elif _printable(c):
            units.append((c, 1))
        else:
            units.append(("".join(f"\\{b:03o}" for b in c.encode()), 3))
    return units


def quote(name: str) -> str:
    """Quote a file name as GNU coreutils' quoteaf does (cp's messages, -v).

    gnulib quotearg's shell-escape-always style in the LC_CTYPE locale:
    ``'a b'``, ``"it's"``, ``'x'$'\\n\\t''y'``, ``''$'\\377'``. Under
    LC_ALL=C every byte >= 0x80 is escaped; in a UTF-8 locale only bytes
    that are not UTF-8 and characters that do not print.
    """
    if name.isascii() and name.isprintable() and "'" not in name:
        return f"'{name}'"
    units = _quote_units(name)
    escaping = False
    if any(kind == 2 for _, kind in units):
        if all(kind in (1, 2) for _, kind in units):
            return f'"{name}"'
        # GNU measures such a name in one pass and writes it in a second
        # that starts in the state the first ended in: after a final escape,
        # as if inside $'...' (q'\377 -> '''q'\'''$'\377')
        escaping = units[-1][1] == 3
    out = ["'"]
    for text, kind in units:
        if kind == 3:
            if not escaping:
                out.append("'$'")
                escaping = True
        elif kind == 2:
            text = "'\\''"
            escaping = False
        elif escaping:
            out.append("''")
            escaping = False
        out.append(text)
    out.append("'")
    return "".join(out)


def preserved_mode(st: os.stat_result, chown: Callable[[], None]) -> int:
    """-p: give the copy ``st``'s owner with ``chown``, and return the mode
    bits to set then: all of ``st``'s, or, where the chown is refused, all
    but the set-user-ID, set-group-ID and sticky bits (as GNU cp)."""
    try:
        chown()
    except PermissionError:
        return st.st_mode & 0o777
    return st.st_mode & 0o7777


class CopyOptions:
    """What to copy and how (GNU cp's options).

    A plain class rather than a dataclass: importing dataclasses costs
    start-up time every command pays.
    """

    def __init__(self, recursive: bool = False, preserve: bool = False,
                 dereference: Optional[bool] = None, no_clobber: bool = False,
                 force: bool = False, verbose: bool = False,
                 sparse: str = "auto", fsync: bool = False,
                 engine: str = "uring", block_size: int = DEFAULT_BLOCK_SIZE,
                 queue_depth: int = DEFAULT_QUEUE_DEPTH,
                 direct: bool = False, preserve_links: bool = False,
                 splice: Optional[bool] = None, update: bool = False,
                 reflink: str = "auto") -> None:
        self.recursive = recursive
        self.preserve = preserve          # -p: mode, ownership, timestamps
        self.preserve_links = preserve_links   # -a: hard links stay links
        self.dereference = dereference    # -L True, -P False, None: GNU default
        self.no_clobber = no_clobber
        self.update = update              # -u: only onto older destinations
        self.force = force
        self.verbose = verbose
        self.sparse = sparse              # auto | always | never
        self.fsync = fsync
        self.engine = engine
        self.block_size = block_size
        self.queue_depth = queue_depth
        self.direct = direct              # O_DIRECT reads of the sources
        self.splice = splice              # big files by splice pairs; None: auto
        self.reflink = reflink            # auto | always | never (reflink.py)

    def __repr__(self) -> str:
        return f"CopyOptions({self.__dict__!r})"


class FileJob:
    """One regular-file (or contents) copy, planned by the tree walk.

    Args:
        src: the source path.
        dst: the destination name shown to the user.
        target: the path actually replaced (a symlink's target).
        src_st: the source's stat.
        old_st: the destination being replaced, or None.
        mode: permission bits for the result.
        in_place: the destination is a FIFO, a device, or a file in a
            directory we may not write (``rewrite``: truncated and
            written at its offsets, holes kept): written in place.
        fresh: the destination's directory was made by this run (mode 0700
            until the end), so nothing can be at ``target`` to protect: the
            file is created there directly, no temporary and no rename, and
            removed again if its copy fails or a signal comes.
    """

    __slots__ = ("src", "dst", "target", "src_st", "old_st", "mode",
                 "in_place", "rewrite", "fresh", "fd_in", "fd_out", "tmp",
                 "size", "cloned",
                 "extents", "failure")

    def __init__(self, src: str, dst: str, target: str,
                 src_st: os.stat_result, old_st: Optional[os.stat_result],
                 mode: int, in_place: bool = False, fresh: bool = False) -> None:
        self.src = src
        self.dst = dst
        self.target = target
        self.src_st = src_st
        self.old_st = old_st
        self.mode = mode
        self.in_place = in_place
        self.rewrite = (in_place and old_st is not None
                        and stat.S_ISREG(old_st.st_mode))
        self.fresh = fresh
        # filled while copying
        self.fd_in = -1
        self.fd_out = -1
        self.tmp: Optional[str] = None
        self.size = 0
        self.cloned = False   # shares the source's extents: nothing to copy
        self.extents: List[Tuple[int, int]] = []
        self.failure: Optional[str] = None

    @classmethod
    def fresh_file(cls, src: str, dst: str, st: os.stat_result) -> "FileJob":
        """A regular file copied into a directory this run made: nothing
        is at ``dst`` (GNU's shortcut), its mode is the source's less the
        umask."""
        return cls(src, dst, dst, st, None, st.st_mode & 0o777 & ~UMASK,
                   fresh=True)


class Barrier:
    """Handed to an engine's ``run`` between jobs: every file in flight is
    finished (in place under its name) before the next job starts. A later
    operand's walk may read the directory those files go to."""

    __slots__ = ()


#: the one Barrier the walk hands out
BARRIER = Barrier()


class CopyFailed(OSError):
    """One file could not be copied; the message is GNU-formatted."""


def _strerror(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or 0)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()

# -- per-file set-up and finish, shared by both engines -----------------------

class FileCopier:
    """Opens, finishes and cleans up FileJobs; the engines move the bytes."""

    def __init__(self, options: CopyOptions, stats: Stats,
                 on_error: ErrorHandler,
                 on_progress: Optional[ProgressHandler] = None) -> None:
        self.options = options
        self.stats = stats
        self.on_error = on_error
        self.on_progress = on_progress
        #: what a failure or a signal must remove: temporaries, and fresh
        #: files not yet complete
        self.temps: Set[str] = set()
        self.synced_dirs: Set[str] = set()
        self.ok = True
        self._tag = os.urandom(3).hex()
        self._serial = 0
        self.cloner = Cloner(options.reflink)

    def may_clone(self, src_st: os.stat_result, src: str, dst: str) -> bool:
        """Whether the regular file ``src`` copied to ``dst`` is to be
        cloned first (then it is not for the chains, which cannot)."""
        return (stat.S_ISREG(src_st.st_mode) and self.cloner.worth_trying(
            src_st.st_dev, src, os.path.dirname(dst)))

    def fail(self, message: str) -> None:
        self.ok = False
        self.stats.errors += 1
        self.on_error(message)

    def open(self, job: FileJob) -> bool:
        """Open the source and create the temporary; False (reported) on error."""
        try:
            job.fd_in = self._open_source(job)
        except OSError as exc:
            self.fail(f"cannot open {quote(job.src)} for reading: "
                      f"{_strerror(exc)}")
            return False
        try:
            if job.in_place:
                job.fd_out = os.open(job.target, os.O_WRONLY | os.O_TRUNC
                                     | os.O_CLOEXEC)
            else:
                self._create_temp(job)
        except OSError as exc:
            os.close(job.fd_in)
            job.fd_in = -1
            self.fail(f"cannot create regular file {quote(job.dst)}: "
                      f"{_strerror(exc)}")
            return False
        job.size = job.src_st.st_size
        if not self._clone(job):
            return False
        if job.cloned:
            self.stats.count("files_cloned")
            self.progress(job.size)
        elif not job.in_place or job.rewrite:
            job.extents = self._extents(job)
        return True

    def _clone(self, job: FileJob) -> bool:
        """--reflink: share the source's extents where that is to be tried
        (``job.cloned``); False (reported, nothing left behind) when
        --reflink=always could not."""
        cloner = self.cloner
        if cloner.mode == "never":
            return True
        if cloner.mode == "auto" and (
                (job.in_place and not job.rewrite)
                or not self.may_clone(job.src_st, job.src, job.target)):
            return True
        code = cloner.clone(job.fd_in, job.fd_out, job.src_st.st_dev)
        if code == 0:
            job.cloned = True
        elif cloner.mode == "always":
            self.fail(f"failed to clone {quote(job.dst)} from "
                      f"{quote(job.src)}: {os.strerror(code)}")
            self.release(job)
            return False
        return True

    def _open_source(self, job: FileJob) -> int:
        """--direct: regular sources with O_DIRECT where the filesystem
        allows it (EINVAL: counted as direct_refused, read cached)."""
        flags = os.O_RDONLY | os.O_CLOEXEC
        if (self.options.direct and not job.in_place
                and fdio.is_positional(job.src_st)):
            try:
                fd = os.open(job.src, flags | os.O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.stats.count("direct_refused")
            else:
                self.stats.count("direct_files")
                return fd
        return os.open(job.src, flags)

    def _create_temp(self, job: FileJob) -> None:
        flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC)
        if job.fresh:
            self.temps.add(job.target)
            try:
                job.fd_out = os.open(job.target, flags, job.mode & 0o777)
            except BaseException:
                self.temps.discard(job.target)
                raise
            job.tmp = job.target
            return
        head, tail = os.path.split(job.target)
        for _ in range(100):
            self._serial += 1
            name = os.path.join(head, f".{tail[:180]}.ucp-{self._tag}"
                                      f"{self._serial:x}")
            self.temps.add(name)   # before the open: a signal may come
            try:
                # the final permission bits (never more: no set-id bits
                # while being written); the umask may take some away
                job.fd_out = os.open(name, flags, job.mode & 0o777)
            except FileExistsError:
                self.temps.discard(name)
                continue
            except BaseException:
                self.temps.discard(name)
                raise
            job.tmp = name
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), job.target)

    def _extents(self, job: FileJob) -> List[Tuple[int, int]]:
        """The data extents to copy: holes are skipped unless --sparse=never."""
        size = job.size
        if size == 0:
            return []
        if (self.options.sparse == "never"
                or job.src_st.st_blocks * 512 >= size):
            return [(0, size)]
        extents: List[Tuple[int, int]] = []
        pos = 0
        try:
            while pos < size:
                try:
                    start = os.lseek(job.fd_in, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:
                        break
                    raise
                end = min(os.lseek(job.fd_in, start, os.SEEK_HOLE), size)
                if end > start:
                    extents.append((start, end - start))
                pos = end
        except OSError:
            return [(0, size)]
        self.stats.extra["holes_skipped"] = (
            self.stats.extra.get("holes_skipped", 0) + 1)
        # the holes are done as soon as they are planned: a progress bar
        # whose total is the files' sizes then reaches its end
        self.progress(size - sum(length for _, length in extents))
        return extents

    def finish(self, job: FileJob, close: bool = True) -> bool:
        """Apply size, mode, owner, times; rename into place; close both
        (``close`` False: the caller closes the descriptors, e.g. on the ring)."""
        try:
            if job.failure is not None:
                self.fail(job.failure)
                return False
            fd = job.fd_out
            if (job.rewrite or not job.in_place) and not job.cloned:
                end = job.extents[-1][0] + job.extents[-1][1] if job.extents else 0
                if end < job.size:
                    os.ftruncate(fd, job.size)   # a hole at the end
            if job.rewrite:
                if self.options.preserve and not self._preserve_in_place(job):
                    return False
                if self.options.fsync:
                    os.fsync(fd)
            elif not job.in_place:
                self._apply_attrs(job, fd)
                if self.options.fsync:
                    os.fsync(fd)
                if not job.fresh:
                    try:
                        os.rename(job.tmp, job.target)  # type: ignore[arg-type]
                    except PermissionError as exc:
                        if not (self.options.force and job.old_st is not None):
                            raise
                        # an append-only file: GNU's open fails, then -f's
                        # unlink
                        self.fail(f"cannot remove {quote(job.dst)}: "
                                  f"{_strerror(exc)}")
                        return False
                self.temps.discard(job.tmp)  # type: ignore[arg-type]
                job.tmp = None
                if self.options.fsync:
                    self.synced_dirs.add(os.path.dirname(job.target) or ".")
            elif self.options.fsync:
                try:
                    os.fsync(job.fd_out)
                except OSError:
                    pass
            return True
        except OSError as exc:
            self.fail(f"cannot create regular file {quote(job.dst)}: "
                      f"{_strerror(exc)}")
            return False
        finally:
            self.release(job, close=close)

    def _preserve_in_place(self, job: FileJob) -> bool:
        """-p on a file rewritten in place (maybe someone else's): GNU's
        order and messages, times first; False (reported) if refused."""
        fd, st = job.fd_out, job.src_st
        try:
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            self.fail(f"preserving times for {quote(job.dst)}: {_strerror(exc)}")
            return False
        try:
            os.fchmod(fd, preserved_mode(
                st, lambda: os.fchown(fd, st.st_uid, st.st_gid)))
        except OSError as exc:
            self.fail(f"preserving permissions for {quote(job.dst)}: "
                      f"{_strerror(exc)}")
            return False
        return True

    def _apply_attrs(self, job: FileJob, fd: int) -> None:
        st = job.src_st
        if self.options.preserve:
            os.fchmod(fd, preserved_mode(
                st, lambda: os.fchown(fd, st.st_uid, st.st_gid)))
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
            return
        if job.old_st is not None:
            old = job.old_st
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, old.st_uid, old.st_gid)
                except PermissionError:
                    pass
        if job.mode & 0o777 & ~UMASK != job.mode:  # as the open made it
            os.fchmod(fd, job.mode)

    def release(self, job: FileJob, close: bool = True) -> None:
        """Close the descriptors (unless the ring closes them) and drop the temp."""
        if close:
            for fd in (job.fd_in, job.fd_out):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        job.fd_in = job.fd_out = -1
        if job.tmp is not None:
            try:
                os.unlink(job.tmp)
            except OSError:
                pass
            self.temps.discard(job.tmp)
            job.tmp = None

    def cleanup(self) -> None:
        """Remove every temporary still on disk (failure or signal)."""
        for name in list(self.temps):
            try:
                os.unlink(name)
            except OSError:
                pass
        self.temps.clear()

    def sync_dirs(self) -> None:
        """--fsync: flush the directories that received renames."""
        for d in sorted(self.synced_dirs):
            try:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self.fail(f"cannot fsync {quote(d)}: {_strerror(exc)}")
        self.synced_dirs.clear()

    def progress(self, n: int) -> None:
        if self.on_progress is not None and n:
            self.on_progress(n)


def _read_error(job: FileJob, code: int) -> str:
    return f"error reading {quote(job.src)}: {os.strerror(code)}"


def _write_error(job: FileJob, code: int) -> str:
    return f"error writing {quote(job.dst)}: {os.strerror(code)}"


# -- engines ------------------------------------------------------------------

def _hole_size(fd: int) -> int:
    """--sparse=always: GNU's hole size, the destination's st_blksize (512
    where a filesystem reports none)."""
    return os.fstat(fd).st_blksize or 512


class SyncEngine:
    """pread/pwrite loop, one file after another: the baseline."""

    def __init__(self, files: FileCopier, block_size: int) -> None:
        self.files = files
        self.stats = files.stats
        self.bs = block_size
        # an anonymous mmap is page aligned: O_DIRECT reads can land in it
        self.buf = mmap.mmap(-1, block_size)
        self.view = memoryview(self.buf)
        self.zero = bytes(block_size)

    def open_dir(self, src: str, dst: str, follow: bool,
                 merge: bool = False) -> None:
        """No FreshDirs here: the walk copies entry by entry."""
        return None

    def run(self, jobs: Iterable[Union[FileJob, Barrier]]) -> None:
        for job in jobs:
            if not isinstance(job, Barrier):    # nothing is ever in flight
                self.copy_one(job)

    def copy_one(self, job: FileJob) -> None:
        files = self.files
        if not files.open(job):
            return
        self.stats.files += 1
        try:
            if (job.in_place and not job.rewrite) or \
                    not fdio.is_positional(job.src_st):
                self._stream(job)
            else:
                self._extents(job)
        except BaseException:
            files.release(job)
            raise
        files.finish(job)

    def _stream(self, job: FileJob) -> None:
        """Read to end of file (pipes, /proc files, devices as sources)."""
        stats = self.stats
        # --sparse=always into a new file: holes as from a regular source
        hole = (_hole_size(job.fd_out) if not job.in_place
                and self.files.options.sparse == "always" else 0)
        while True:
            try:
                # fdio.read_into is annotated bytearray; any writable
                # buffer does (os.readv), as in hashing._SyncReader
                n = fdio.read_into(job.fd_in, self.buf, stats)  # type: ignore[arg-type]
            except OSError as exc:
                job.failure = _read_error(job, exc.errno or errno.EIO)
                return
            if n == 0:
                break
            try:
                if job.in_place:
                    fdio.write_all(job.fd_out, self.view[:n], stats)
                elif hole:
                    self._pwrite_data(job, self.view[:n], job.size, hole)
                else:
                    self._pwrite(job, self.view[:n], job.size)
            except OSError as exc:
                job.failure = _write_error(job, exc.errno or errno.EIO)
                return
            job.size += n
            self.files.progress(n)
        # with holes, finish() extends the file to its size
        job.extents = [(0, job.size)] if job.size and not hole else []
        if job.in_place:
            job.size = 0

    def _pwrite(self, job: FileJob, data: memoryview, off: int) -> None:
        stats = self.stats
        while data:
            n = os.pwrite(job.fd_out, data, off)
            stats.count_syscall("pwrite")
            stats.bytes_written += n
            if n < len(data):
                stats.short_writes += 1
            data = data[n:]
            off += n

    def _extents(self, job: FileJob) -> None:
        stats, bs, view = self.stats, self.bs, self.view
        always = self.files.options.sparse == "always"
        job.size = job.size  # the length stat gave; a shrinking file ends early
        direct = self.files.options.direct and bool(
            fcntl.fcntl(job.fd_in, fcntl.F_GETFL) & os.O_DIRECT)
        hole = _hole_size(job.fd_out) if always else 0
        for start, length in list(job.extents):
            off, end = start, start + length
            while off < end:
                want = min(bs, end - off)
                if direct and (off % fdio.DIRECT_ALIGN or want % fdio.DIRECT_ALIGN):
                    fdio.drop_direct(job.fd_in, stats)   # an unaligned tail
                    direct = False
                try:
                    n = os.preadv(job.fd_in, [view[:want]], off)
                except OSError as exc:
                    if direct and exc.errno == errno.EINVAL:
                        fdio.drop_direct(job.fd_in, stats)  # refused after all
                        direct = False
                        stats.resubmissions += 1
                        continue
                    job.failure = _read_error(job, exc.errno or errno.EIO)
                    return
                stats.count_syscall("pread")
                stats.bytes_read += n
                if n == 0:       # the source shrank since stat
                    self._shrunk(job, off)
                    return
                if n < want:
                    stats.short_reads += 1
                try:
                    if always:
                        self._pwrite_data(job, view[:n], off, hole)
                    else:
                        self._pwrite(job, view[:n], off)
                except OSError as exc:
                    job.failure = _write_error(job, exc.errno or errno.EIO)
                    return
                off += n
                self.files.progress(n)
        if always:
            job.extents = []  # ftruncate to the full size at finish

    def _pwrite_data(self, job: FileJob, data: memoryview, off: int,
                     hole: int) -> None:
        """--sparse=always: write the ``hole``-sized pieces of ``data``
        (aligned in the file) that hold a non-zero byte, as GNU does; the
        all-zero ones stay holes."""
        zero, end = self.zero, len(data)
        if data == zero[:end]:
            return
        pos, run = 0, -1      # run: where the pending non-zero pieces start
        while pos < end:
            step = min(hole - (off + pos) % hole, end - pos)
            if data[pos:pos + step] == zero[:step]:
                if run >= 0:
                    self._pwrite(job, data[run:pos], off + run)
                    run = -1
            elif run < 0:
                run = pos
            pos += step
        if run >= 0:
            self._pwrite(job, data[run:end], off + run)

    @staticmethod
    def _shrunk(job: FileJob, off: int) -> None:
        job.size = off
        job.extents = [(s, min(ln, off - s)) for s, ln in job.extents if s < off]

    def close(self) -> None:
        pass


#: completion results that mean "try again", not "this copy failed"
_TRANSIENT = frozenset({-errno.EAGAIN, -errno.EINTR, -errno.ECANCELED})

# slot kinds in user_data (low 2 bits); the slot number sits above them
_K_READ, _K_WRITE, _K_CLOSE = 0, 1, 2


class _Active:
    """A file in flight in the ring."""

    __slots__ = ("job", "src", "dst", "chunks", "retry", "pending", "done",
                 "direct")

    def __init__(self, job: FileJob, src: FileRef, dst: FileRef,
                 bs: int) -> None:
        self.job = job
        self.src = src
        self.dst = dst
        self.chunks: Iterator[Tuple[int, int]] = _chunks(job.extents, bs)
        self.retry: Deque[Tuple[int, int]] = deque()
        self.pending = 0          # slots busy for this file
        self.done = False         # no more chunks to issue
        self.direct = False       # reading with O_DIRECT (set by the engine)

    def next_chunk(self) -> Optional[Tuple[int, int]]:
        if self.retry:
            return self.retry.popleft()
        if self.done:
            return None
        for chunk in self.chunks:
            return chunk
        self.done = True
        return None


def _chunks(extents: List[Tuple[int, int]], bs: int) -> Iterator[Tuple[int, int]]:
    for start, length in extents:
        end = start + length
        for off in range(start, end, bs):
            yield off, min(bs, end - off)


def _fd_room() -> int:
    """How many more descriptors the chunked path may hold open at once
    (two per file in flight, and the ones waiting for their ring close)."""
    soft = _fd_limit()
    if soft == 1 << 30:
        return soft
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 16
    # room for the chain ring, a directory being listed, a spare
    return max(2, soft - used - 4)


class UringEngine:
    """Linked read_fixed -> write_fixed chains, many files in flight."""

    def __init__(self, files: FileCopier, block_size: int,
                 queue_depth: int) -> None:
        self.files = files
        self.stats = files.stats
        self.bs = block_size
        self.queue_depth = queue_depth
        nslots = max(queue_depth, ARENA_BYTES // block_size, 4)
        nslots = min(nslots, 256)
        self.nslots = nslots
        entries = 16
        while entries < 4 * nslots + 8:
            entries *= 2
        self.ring = Ring(entries, stats=self.stats)
        try:
            self.arena = Arena(nslots, block_size)
        except BaseException:
            self.ring.close()
            raise
        # registered on first use: a tree of small files never needs them
        self.registered = False
        self.fixed = self.table = False
        self.read_op, self.write_op = OP_READ, OP_WRITE
        self.sync = SyncEngine(files, block_size)
        self.chains: Optional[BatchCopier] = None  # made by run()
        self.splicer: Optional[SpliceCopier] = None  # made for large files
        self.splice_pays: Dict[int, bool] = {}  # by the source's st_dev
        self.stats.extra["arena"] = f"{nslots} x {block_size}"

    def close(self) -> None:
        if self.chains is not None:
            self.chains.close()
        if self.splicer is not None:
            self.splicer.close()
            self.splicer.ring.close()
        self.ring.close()

    def _chains(self) -> BatchCopier:
        if self.chains is None:
            from .copybatch import BatchCopier
            self.chains = BatchCopier(self.files, self.sync.copy_one)
        return self.chains

    def open_dir(self, src: str, dst: str, follow: bool,
                 merge: bool = False) -> Optional[FreshDir]:
        """A FreshDir whose small files the chains copy with no Python per
        file (see :mod:`uringtools.copybatch`), or None."""
        if self.files.options.direct:
            return None
        return self._chains().open_dir(src, dst, follow, merge)

    def run(self, jobs: Iterable[Union[FileJob, FreshDir, Barrier]]) -> None:
        """Copy ``jobs``: small new files as whole chains, in batches
        (:mod:`uringtools.copybatch`), the others chunk by chunk. A
        FreshDir (from :meth:`open_dir`) has its small files chained; a
        Barrier finishes everything in flight."""
        from .copybatch import FreshDir

        chains = self._chains()
        # --direct: every file takes the chunked path (the whole-file chains
        # read through the page cache)
        direct_off = not self.files.options.direct
        it = iter(jobs)
        stash: List[Union[FileJob, FreshDir, Barrier]] = []

        def plain(first: FileJob) -> Iterator[FileJob]:
            yield first
            for job in it:
                if isinstance(job, (FreshDir, Barrier)) or (
                        direct_off and chains.takes(job) and chains.ready()) \
                        or self._spliceable(job):
                    stash.append(job)
                    return
                yield job

        try:
            while True:
                if stash:
                    job = stash.pop()
                else:
                    for job in it:
                        break
                    else:
                        break
                if isinstance(job, FreshDir):
                    chains.add_dir(job)
                    continue
                if isinstance(job, Barrier):
                    chains.drain()
                    continue
                if direct_off and chains.takes(job) and chains.ready():
                    chains.add(job)
                    continue
                chains.drain()
                if self._spliceable(job):
                    self._splice_one(job)
                    continue
                self._run_chunks(plain(job))
            chains.drain()
        except BaseException:
            # wait for the chains in flight before the caller's clean-up
            chains.close()
            raise

    def _spliceable(self, job: FileJob) -> bool:
        """Large regular files go file -> pipe -> file with splice pairs
        (the kernel copies page cache to page cache once, as GNU cp's
        copy_file_range does) where that pays (see _splice_pays); the
        others go through the arena."""
        options = self.files.options
        return (options.splice is not False and not options.direct
                and options.sparse != "always"
                and not job.in_place and job.src_st.st_size >= SPLICE_MIN
                and fdio.is_positional(job.src_st)
                and (options.splice or self._splice_pays(job))
                and self._splicer_ready())

    def _splice_pays(self, job: FileJob) -> bool:
        """Whether splice pairs beat the arena for this source, as measured
        (bench/README.md): only from tmpfs. From ext4 the arena wins: its
        page-cache reads complete inline in this thread while an io-wq
        worker writes the block before, where two splicing workers take
        turns on the destination's inode lock (1 GiB: 0.76-1.02x GNU cp's
        wall against 1.00-1.43x)."""
        dev = job.src_st.st_dev
        pays = self.splice_pays.get(dev)
        if pays is None:
            kind = _lib.ut_fs_type(os.fsencode(job.src))
            pays = self.splice_pays[dev] = kind == TMPFS_MAGIC
        return pays

    def _splicer_ready(self) -> bool:
        """Make the splicer (its ring and private pipe) on first use; False
        while the descriptors run out (a low ``ulimit -n``): the file is
        then copied through the arena instead.

        Its ring has no DEFER_TASKRUN, which would hand every step of a
        chain back to this thread (splicing.py); COOP_TASKRUN leaves the
        rest for our next enter. The --stats lines describe the main ring.
        """
        if self.splicer is not None and not self.splicer.usable:
            self.splicer.close()   # its pipe could not be renewed
            self.splicer.ring.close()
            self.splicer = None
        if self.splicer is None:
            if _fd_limit() < SPLICE_MIN_FDS:
                # a ring and two pipes would take the descriptors that
                # the copies need (`ulimit -n 8`): the arena path instead
                self.stats.count("splice_no_fds")
                return False
            ring = None
            try:
                ring = Ring(2 * CHAIN_PAIRS * SPLICE_PIPES, stats=self.stats,
                            describe=False,
                            setup_flags=(SETUP_COOP_TASKRUN, 0))
                self.splicer = SpliceCopier(ring, None, VIA_PIPE, self.stats)
            except OSError as exc:
                if ring is not None:
                    ring.close()
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.stats.count("splice_no_fds")
                return False
        return True

    def _splice_one(self, job: FileJob) -> None:
        """Copy one file's extents with splice pairs on the ring."""
        files, stats = self.files, self.stats
        if not files.open(job):
            return
        stats.files += 1
        if not job.cloned:
            stats.count("files_spliced")
        # Every splice runs in an io-wq worker, and the writes into one
        # file take turns on its inode lock: beyond one worker writing and
        # one reading ahead, the others only spin (1 GiB on tmpfs, 9-11
        # rounds: 1.13-1.15x GNU's wall and 1.9-2.1x its CPU capped at 2,
        # against 1.32-1.93x and 2.4-3.4x). Asked per file: cp -r's chain
        # ring sets its own cap on this thread's workers
        splicer = self.splicer
        assert splicer is not None   # _spliceable made it
        splicer.ring.limit_workers(SPLICE_WORKERS)
        try:
            src = FileRef(job.fd_in, 0, job.fd_in, -1)
            dst = FileRef(job.fd_out, 0, job.fd_out, -1)
            for start, length in list(job.extents):
                try:
                    # a pair moves a pipe's worth (1 MiB; 512 KiB pairs
                    # were no faster, bench/README.md "Splice chains");
                    # --queue-depth 1: one chain at a time
                    done, failure = splicer.copy_range(
                        src, dst, start, length,
                        pipes=min(self.queue_depth, SPLICE_PIPES))
                except WriteError as exc:
                    job.failure = _write_error(job, exc.errno or errno.EIO)
                    break
                files.progress(done)
                if failure is not None:
                    job.failure = f"error reading {quote(job.src)}: {failure}"
                    break
                if done < length:          # the source shrank since stat
                    # chains past the short one may have written beyond
                    # it: the copy is the prefix the source still had
                    os.ftruncate(job.fd_out, start + done)
                    SyncEngine._shrunk(job, start + done)
                    break
        except BaseException:
            # requests may still be in flight: let its ring go with them
            self.splicer = None
            splicer.ring.close()
            splicer.close()
            files.release(job)
            raise
        files.finish(job)

    def _register(self) -> None:
        """Register the arena and a file table (each may be refused)."""
        self.registered = True
        self.fixed = self.ring.register_arena(self.arena)
        self.table = self.ring.register_file_table(64)
        self.read_op = OP_READ_FIXED if self.fixed else OP_READ
        self.write_op = OP_WRITE_FIXED if self.fixed else OP_WRITE

    def _run_chunks(self, jobs: Iterable[FileJob]) -> None:
        if not self.registered:
            self._register()
        ring, arena, files = self.ring, self.arena, self.files
        stats = self.stats
        free: List[int] = list(range(self.nslots - 1, -1, -1))
        s_file: List[Optional[_Active]] = [None] * self.nslots
        s_off = [0] * self.nslots
        s_len = [0] * self.nslots       # bytes the chain asked for
        s_wlen = [0] * self.nslots      # bytes the current write asked for
        s_wstart = [0] * self.nslots    # offset inside the slot of that write
        s_rres: List[Optional[int]] = [None] * self.nslots
        s_wres: List[Optional[int]] = [None] * self.nslots
        s_chain = [False] * self.nslots  # read+write, or a lone write
        active: Deque[_Active] = deque()
        closes = 0
        fd_room = _fd_room()
        it = iter(jobs)
        more = True

        def issue(a: _Active, s: int, off: int, length: int) -> None:
            if a.direct and (off % fdio.DIRECT_ALIGN or length % fdio.DIRECT_ALIGN):
                fdio.drop_direct(a.job.fd_in, stats)   # an unaligned tail
                a.direct = False
            if ring.room < 2:
                ring.submit()
            s_file[s] = a
            s_off[s], s_len[s], s_wlen[s], s_wstart[s] = off, length, length, 0
            s_rres[s] = s_wres[s] = None
            s_chain[s] = True
            a.pending += 1
            addr = arena.addr(s)
            ring.prep(self.read_op, a.src.target, addr, length, off,
                      (s << 2) | _K_READ, flags=a.src.sqe_flags | SQE_IO_LINK)
            ring.prep(self.write_op, a.dst.target, addr, length, off,
                      (s << 2) | _K_WRITE, flags=a.dst.sqe_flags)

        def reread(s: int) -> None:
            """The whole chain of slot ``s`` again (its read failed for a
            transient reason, which cancelled its linked write)."""
            a = s_file[s]
            assert a is not None
            if ring.room < 2:
                ring.submit()
            length = s_len[s]
            s_wlen[s], s_wstart[s] = length, 0
            s_rres[s] = s_wres[s] = None
            s_chain[s] = True
            stats.resubmissions += 1
            addr = arena.addr(s)
            ring.prep(self.read_op, a.src.target, addr, length, s_off[s],
                      (s << 2) | _K_READ, flags=a.src.sqe_flags | SQE_IO_LINK)
            ring.prep(self.write_op, a.dst.target, addr, length, s_off[s],
                      (s << 2) | _K_WRITE, flags=a.dst.sqe_flags)

        def rewrite(s: int, start: int, length: int) -> None:
            """A lone write of bytes already in slot ``s``."""
            a = s_file[s]
            assert a is not None
            s_chain[s] = False
            s_wstart[s], s_wlen[s] = start, length
            s_rres[s] = s_wres[s] = None
            stats.resubmissions += 1
            ring.prep(self.write_op, a.dst.target, arena.addr(s, start), length,
                      s_off[s] + start, (s << 2) | _K_WRITE,
                      flags=a.dst.sqe_flags)

        def release_slot(s: int) -> None:
            a = s_file[s]
            assert a is not None
            a.pending -= 1
            s_file[s] = None
            free.append(s)

        def finish(a: _Active) -> None:
            nonlocal closes
            job = a.job
            for ref in (a.src, a.dst):
                ring.detach_file(ref)
            ok_so_far = job.failure is None
            fds = (job.fd_in, job.fd_out)
            if ok_so_far and not job.in_place:
                # finish() closes nothing: the ring closes both in the next enter
                job_fds = fds
                job.fd_in = job.fd_out = -1
                try:
                    self._finish_keep_fds(job, job_fds)
                finally:
                    for fd in job_fds:
                        if ring.room < 1:
                            ring.submit()
                        ring.prep(OP_CLOSE, fd, 0, 0, 0, _K_CLOSE)
                        closes += 1
            else:
                files.finish(job)

        #: a file for the plain engine, held until the files in flight are
        #: done: a FIFO may block its reader, and GNU has finished the
        #: files named before it by then
        waiting: Optional[FileJob] = None
        try:
            while True:
                if waiting is not None and not active:
                    job, waiting = waiting, None
                    self.sync.copy_one(job)
                # start files while there are free slots for them
                while (more and waiting is None and free
                       and len(active) < self.nslots
                       and 2 * len(active) + closes < fd_room):
                    try:
                        job = next(it)
                    except StopIteration:
                        more = False
                        break
                    if (job.in_place or not fdio.is_positional(job.src_st)
                            or files.options.sparse == "always"):
                        if active:
                            waiting = job
                            break
                        self.sync.copy_one(job)
                        continue
                    if not files.open(job):
                        continue
                    stats.files += 1
                    if self.table and job.size >= REGISTER_MIN_SIZE:
                        src = ring.attach_file(job.fd_in)
                        dst = ring.attach_file(job.fd_out)
                    else:
                        src = FileRef(job.fd_in, 0, job.fd_in, -1)
                        dst = FileRef(job.fd_out, 0, job.fd_out, -1)
                    a = _Active(job, src, dst, self.bs)
                    if files.options.direct:
                        a.direct = bool(fcntl.fcntl(job.fd_in, fcntl.F_GETFL)
                                        & os.O_DIRECT)
                    active.append(a)
                    # give it a first chunk now, so small files pack the ring
                    chunk = a.next_chunk()
                    if chunk is not None:
                        issue(a, free.pop(), *chunk)
                # spread the remaining free slots over the active files
                progress = True
                while free and progress:
                    progress = False
                    for a in active:
                        if not free:
                            break
                        if a.job.failure is not None:
                            continue
                        chunk = a.next_chunk()
                        if chunk is not None:
                            issue(a, free.pop(), *chunk)
                            progress = True
                # retire files that are complete
                if active:
                    keep: Deque[_Active] = deque()
                    for a in active:
                        if a.pending == 0 and (a.job.failure is not None
                                               or (a.done and not a.retry)):
                            finish(a)
                        else:
                            keep.append(a)
                    active = keep
                if not active and not more and waiting is None:
                    break
                if ring.in_flight == 0 and ring.room == ring.entries:
                    if not active:
                        continue
                    # every active file waits for a chunk it cannot get
                    continue
                # one enter for about half of what is in flight
                n = ring.wait(max(1, (ring.in_flight + ring.entries
                                      - ring.room) // 2))
                uds, ress = ring.cqe_user_data, ring.cqe_res
                for i in range(n):
                    ud, res = uds[i], ress[i]
                    kind, s = ud & 3, ud >> 2
                    if kind == _K_CLOSE:
                        closes -= 1
                        continue
                    if kind == _K_READ:
                        s_rres[s] = res
                    else:
                        s_wres[s] = res
                    if s_wres[s] is None or (s_chain[s] and s_rres[s] is None):
                        continue
                    a = s_file[s]
                    assert a is not None
                    job = a.job
                    wres = s_wres[s]
                    assert wres is not None
                    if s_chain[s]:
                        rres = s_rres[s]
                        assert rres is not None
                        if rres < 0:
                            if rres == -errno.EINVAL and a.direct:
                                # the filesystem refuses this direct read
                                fdio.drop_direct(job.fd_in, stats)
                                a.direct = False
                                reread(s)
                                continue
                            if rres in _TRANSIENT and job.failure is None:
                                reread(s)
                                continue
                            if job.failure is None:
                                job.failure = _read_error(job, -rres)
                            release_slot(s)
                            continue
                        stats.bytes_read += rres
                        if rres < s_len[s]:
                            stats.short_reads += 1
                            if rres == 0:
                                # the source shrank since stat: stop there
                                self._shrunk(a, s_off[s])
                                release_slot(s)
                                continue
                            # the write was cancelled: write what was read,
                            # and read the rest later
                            a.retry.append((s_off[s] + rres, s_len[s] - rres))
                            s_len[s] = rres
                            rewrite(s, 0, rres)
                            continue
                    if wres < 0:
                        if wres in _TRANSIENT and job.failure is None:
                            rewrite(s, s_wstart[s], s_wlen[s])
                            continue
                        if job.failure is None:
                            job.failure = _write_error(job, -wres)
                        release_slot(s)
                        continue
                    stats.bytes_written += wres
                    files.progress(wres)
                    if wres < s_wlen[s]:
                        stats.short_writes += 1
                        if wres == 0:
                            job.failure = job.failure or _write_error(
                                job, errno.ENOSPC)
                            release_slot(s)
                            continue
                        rewrite(s, s_wstart[s] + wres, s_wlen[s] - wres)
                        continue
                    release_slot(s)
            # the last closes
            ring.submit()
            while ring.in_flight:
                ring.wait(1)
        except BaseException:
            # the kernel may still write into the temporaries: tear the ring
            # down (cancelling), then close and remove what is open
            ring.close()
            for a in active:
                files.release(a.job)
            raise

    def _finish_keep_fds(self, job: FileJob, fds: Tuple[int, int]) -> bool:
        """FileCopier.finish, with the descriptors left for the ring to close."""
        job.fd_in, job.fd_out = fds
        return self.files.finish(job, close=False)

    @staticmethod
    def _shrunk(a: _Active, off: int) -> None:
        job = a.job
        if off < job.size:
            job.size = off
            job.extents = [(s, min(ln, off - s)) for s, ln in job.extents
                           if s < off]
        a.done = True
        a.retry = deque(c for c in a.retry if c[0] < off)


def make_engine(files: FileCopier, engine: str, block_size: int,
                queue_depth: int):  # -> SyncEngine | UringEngine
    """Build the engine; UringUnavailable is raised here, before any work."""
    if block_size < 1 or queue_depth < 1:
        raise ValueError("block size and queue depth must be positive")
    if engine == "uring":
        return UringEngine(files, block_size, queue_depth)
    if engine == "sync":
        return SyncEngine(files, block_size)
    raise ValueError(f"unknown engine {engine!r}")


__all__ = ["CopyOptions", "FileJob", "FileCopier", "SyncEngine", "UringEngine",
           "make_engine", "preserved_mode", "quote", "UMASK", "Dict"]

"""cp's operands and tree walk: GNU's checks, directories, symlinks, special
files; regular files become :class:`~uringtools.copy.FileJob` s that an
engine from :mod:`uringtools.copy` copies, many at a time."""

from __future__ import annotations

import errno
import os
import stat
import sys
from stat import S_ISREG
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import (Callable, Dict, Generator, Iterable, Iterator, List,
                        Optional, Sequence, Set, Tuple)

from .copy import (BARRIER, CopyOptions, FileCopier, FileJob, UMASK,
                   make_engine, preserved_mode, quote)
from .stats import Stats



class _Link:
    """-a: a name to become a hard link to the first copy of its source
    (``key``: the source's device and inode)."""

    __slots__ = ("first", "dst", "src", "src_st", "follow", "key")

    def __init__(self, first: str, dst: str, src: str, src_st: os.stat_result,
                 follow: bool, key: Tuple[int, int]) -> None:
        self.first, self.dst, self.src = first, dst, src
        self.src_st, self.follow, self.key = src_st, follow, key

if TYPE_CHECKING:
    from typing import Union

    from .copy import Barrier, ErrorHandler, ProgressHandler
    from .copybatch import FreshDir

    #: what the walk hands the engine
    Job = Union[FileJob, FreshDir, Barrier]

    #: called with the GNU -v line ('a' -> 'b')
    VerboseHandler = Callable[[str], None]
    #: called with the size of each file found (for a progress total)
    TotalHandler = Callable[[int], None]


def _err(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or 0)


def _join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def _base(path: str) -> str:
    stripped = path.rstrip("/")
    return os.path.basename(stripped) if stripped else "/"


def plan_operands(sources: Sequence[str], dest: Optional[str],
                  target_directory: Optional[str],
                  no_target_directory: bool) -> List[Tuple[str, str]]:
    """Pair each source with its destination name, as GNU cp does.

    Raises:
        ValueError: the target is unusable; the message is GNU's.
    """
    if target_directory is not None:
        try:
            st = os.stat(target_directory)
        except OSError as exc:
            raise ValueError(f"target directory {quote(target_directory)}: "
                             f"{_err(exc)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"target directory {quote(target_directory)}: "
                             "Not a directory")
        return [(s, _join(target_directory, _base(s))) for s in sources]
    assert dest is not None
    if no_target_directory:
        return [(s, dest) for s in sources]
    try:
        dest_st: Optional[os.stat_result] = os.stat(dest)
    except OSError as exc:
        if len(sources) > 1:
            raise ValueError(f"target {quote(dest)}: {_err(exc)}") from None
        dest_st = None
    if dest_st is not None and stat.S_ISDIR(dest_st.st_mode):
        return [(s, _join(dest, _base(s))) for s in sources]
    if len(sources) > 1:
        raise ValueError(f"target {quote(dest)}: Not a directory")
    return [(sources[0], dest)]


def _ident(st: Optional[os.stat_result]) -> Optional[Tuple[int, int]]:
    return None if st is None else (st.st_dev, st.st_ino)


def _temp_beside(path: str) -> str:
    """A fresh temporary name in ``path``'s directory, hidden and marked
    as ours (``.NAME.ucp-XXXXXXXX``), for what is renamed over ``path``."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail[:180]}.ucp-{os.urandom(4).hex()}")


def _link_target(path: str) -> str:
    """The file symlink ``path`` leads to, named as the kernel reaches it:
    each link's text from the directory of the link before ("d/../x"),
    never an absolute path the user may not be allowed to walk (realpath
    would need every directory above the current one to be searchable)."""
    for _ in range(40):     # the kernel's limit; a loop was refused before
        try:
            link = os.readlink(path)
        except OSError:
            break           # not a symlink (any more)
        path = link if link.startswith("/") else _join(
            os.path.dirname(path) or ".", link)
    return path


def _immutable(path: str) -> bool:
    """Whether ``path`` is immutable or append-only (chattr +i / +a), which
    not even root may unlink; False where that cannot be asked."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # FS_IOC_GETFLAGS; the kernel fills an int
        flags = fcntl.ioctl(fd, 0x80086601, bytes(8))
    except OSError:
        return False
    finally:
        os.close(fd)
    # FS_IMMUTABLE_FL | FS_APPEND_FL
    return bool(int.from_bytes(flags[:4], sys.byteorder) & 0x30)


class _Walker:
    """Creates directories, symlinks and special files; yields file jobs."""

    def __init__(self, options: CopyOptions, files: FileCopier,
                 on_verbose: Optional[VerboseHandler],
                 on_total: Optional[TotalHandler]) -> None:
        self.opt = options
        self.files = files
        self.on_verbose = on_verbose
        self.on_total = on_total
        # (dst, src_st, created) for directories, children first
        self.dir_fixups: List[Tuple[str, os.stat_result, bool]] = []
        #: GNU's src_info / dest_info, kept only for two or more operands:
        #: top-level sources seen, and what top-level copies made at which
        #: destination name ("file", "symlink" or "dir"). Names, not inodes:
        #: a file job may not be renamed into place yet.
        self.multi = False
        self.src_seen: Set[Tuple[int, int, str, int, int]] = set()
        self.dst_made: Dict[Tuple[int, int, str], str] = {}
        self.on_warning: Optional[ErrorHandler] = None
        #: (device, inode) of the source directories being copied, root
        #: first: -L can lead back into one of them
        self.ancestors: Set[Tuple[int, int]] = set()
        #: -a: (device, inode) of each source with other links -> where
        #: its first copy goes and what was there before (see _first_made);
        #: and the links to make once copies are in place
        self.link_first: Dict[Tuple[int, int],
                              Tuple[str, Optional[Tuple[int, int]],
                                    Optional[Tuple[int, int]]]] = {}
        #: (device, inode) of the source directories copied as operands
        #: -> their copy
        self.dir_copies: Dict[Tuple[int, int], str] = {}
        self.links: List[_Link] = []
        #: (device, inode) of the existing directories files are copied
        #: into: met as a source, they are read once those files are done
        self.merged_dirs: Set[Tuple[int, int]] = set()
        #: directory -> (errno refusing every change in it, or 0; the one
        #: owner whose files may be replaced there, 0: any), _replace_refusal
        self.dir_rules: Dict[str, Tuple[int, int]] = {}
        #: directory path -> its (device, inode), see _entry; forgotten when
        #: a symlink or special file replaces an entry (a path through a
        #: replaced symlink may name another directory then)
        self.dir_ids: Dict[str, Tuple[int, int]] = {}
        #: the top-level source and destination being copied
        self.top = ("", "")
        #: (device, inode, path) of the first directory the operand's copy
        #: made: met again as a source, the copy went into itself
        self.first_made: Optional[Tuple[int, int, str]] = None
        #: the operand's copy met its own first directory: as GNU, every
        #: directory being walked stops there
        self.into_self = False
        #: the engine's FreshDir maker (its small files are chained with no
        #: Python per file), or None: every entry goes through the walk
        self.open_dir: Optional[Callable[[str, str, bool, bool],
                                         Optional[FreshDir]]] = None

    def fail(self, message: str) -> None:
        self.files.fail(message)

    def verbose(self, src: str, dst: str) -> None:
        if self.on_verbose is not None:
            self.on_verbose(f"{quote(src)} -> {quote(dst)}")

    def warn(self, message: str) -> None:
        if self.on_warning is not None:
            self.on_warning(message)

    def operands(self, pairs: List[Tuple[str, str]]) -> Iterator[Job]:
        self.multi = len(pairs) > 1
        dirs = 0
        for src, dst in pairs:
            if len(self.dir_copies) != dirs:
                # the files of the directory copied just before are in
                # place before this operand is read (`cp -r a D/a/f D`)
                dirs = len(self.dir_copies)
                yield BARRIER
            self.top = (src, dst)
            self.first_made = None
            self.into_self = False
            yield from self.copy(src, dst, top=True)

    def _entry(self, path: str) -> Optional[Tuple[int, int, str]]:
        """A directory entry as GNU's same_name sees it: the directory's
        device and inode, and the last name (None if it cannot be stat'ed).
        Directories are stat'ed once: `cp f1 ... f5000 dir` asks three
        times per operand about the same one."""
        head, sep, tail = (path.rstrip("/") or path).rpartition("/")
        # os.path.split's head, without its cost: "a//b" -> "a", "/x" -> "/"
        head = (head.rstrip("/") or "/") if sep else "."
        ident = self.dir_ids.get(head)
        if ident is None:
            try:
                st = os.stat(head)
            except OSError:
                return None     # not remembered: it may be made later
            ident = self.dir_ids[head] = (st.st_dev, st.st_ino)
        return ident + (tail,)

    def _refused_as_same(self, src: str, src_sb: os.stat_result, dst: str,
                         dst_sb: Optional[os.stat_result],
                         deref_never: bool) -> bool:
        """GNU's check before copying onto an existing ``dst`` (skipped
        under -n): True, with its message, when ``src`` and ``dst`` are the
        same file."""
        if dst_sb is None or self.opt.no_clobber or \
                self._same_file_ok(src, src_sb, dst, dst_sb, deref_never):
            return False
        self.fail(f"{quote(src)} and {quote(dst)} are the same file")
        return True

    def _same_file_ok(self, src: str, src_sb: os.stat_result, dst: str,
                      dst_sb: os.stat_result, deref_never: bool) -> bool:
        """GNU's same_file_ok for cp's options here (no backups, links or
        moves): False when copying ``src`` onto ``dst`` would destroy the
        data being copied ("are the same file")."""
        same = (src_sb.st_dev, src_sb.st_ino) == (dst_sb.st_dev, dst_sb.st_ino)
        if deref_never:
            if stat.S_ISLNK(src_sb.st_mode) and stat.S_ISLNK(dst_sb.st_mode):
                # two symlinks: fine unless they are the same entry
                return self._entry(src) != self._entry(dst)
            src_link, dst_link = src_sb, dst_sb
        else:
            if not same:
                return True
            try:
                src_link, dst_link = os.lstat(src), os.lstat(dst)
            except OSError:
                return True
        if not stat.S_ISLNK(src_link.st_mode) and \
                not stat.S_ISLNK(dst_link.st_mode):
            return (src_link.st_dev, src_link.st_ino) != \
                (dst_link.st_dev, dst_link.st_ino)
        if deref_never:
            # a symlink onto what it points to (or the other way round)
            try:
                src_to = os.stat(src) if stat.S_ISLNK(src_link.st_mode) \
                    else src_link
                dst_to = os.stat(dst) if stat.S_ISLNK(dst_link.st_mode) \
                    else dst_link
            except OSError:
                return True
            return (src_to.st_dev, src_to.st_ino) != (dst_to.st_dev, dst_to.st_ino)
        return False

    def _unlink_refused(self, dst: str, dst_lst: os.stat_result) -> bool:
        """Whether GNU's unlink of ``dst``, which ours renames over, would
        be refused; if so, its 'cannot remove' message."""
        refusal = self._replace_refusal(dst, dst_lst) or (
            errno.EPERM if _immutable(dst) else 0)
        if refusal:
            self.fail(f"cannot remove {quote(dst)}: {os.strerror(refusal)}")
        return bool(refusal)

    def _replace_refusal(self, path: str, st: os.stat_result) -> int:
        """The errno with which ``path`` (owned as ``st`` says) could not be
        unlinked or renamed over, or 0: its directory must take new files
        and, if sticky, be ours or hold a file of ours (root may do
        anything). Each directory is asked once: overwriting a tree asks
        for each of its files."""
        head = os.path.dirname(path) or "."
        rule = self.dir_rules.get(head)
        if rule is None:
            if not os.access(head, os.W_OK | os.X_OK):
                try:
                    read_only = os.statvfs(head).f_flag & os.ST_RDONLY
                except OSError:
                    read_only = 0
                rule = (errno.EROFS if read_only else errno.EACCES, 0)
            else:
                try:
                    dir_st = os.stat(head)
                except OSError as exc:
                    rule = (exc.errno or errno.EACCES, 0)
                else:
                    euid = os.geteuid()
                    sticky = dir_st.st_mode & stat.S_ISVTX \
                        and euid not in (0, dir_st.st_uid)
                    rule = (0, euid if sticky else 0)
            self.dir_rules[head] = rule
        refusal, only_owner = rule
        if not refusal and only_owner and st.st_uid != only_owner:
            refusal = errno.EPERM
        return refusal

    def _made(self, dst: str, kind: str) -> None:
        """Remember what a top-level operand made at ``dst``."""
        key = self._entry(dst)
        if key is not None:
            self.dst_made.setdefault(key, kind)

    def _seen_before(self, src: str, src_st: os.stat_result) -> bool:
        """GNU's 'specified more than once' check for a top-level source."""
        entry = self._entry(src)
        if entry is None:
            return False
        key = entry + (src_st.st_dev, src_st.st_ino)
        if key in self.src_seen:
            kind = "directory" if stat.S_ISDIR(src_st.st_mode) else "file"
            self.warn(f"warning: source {kind} {quote(src)} specified more "
                      "than once")
            return True
        self.src_seen.add(key)
        return False

    def _source_refused(self, src: str, mode: int) -> bool:
        """Before refusing a destination, GNU has opened the source: a
        regular file that cannot be read is reported as such (True) instead."""
        if not stat.S_ISREG(mode):
            return False
        try:
            os.close(os.open(src, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            self.fail(f"cannot open {quote(src)} for reading: {_err(exc)}")
            return True
        return False

    def _forget(self, src: str, src_st: os.stat_result) -> None:
        entry = self._entry(src)
        if entry is not None:
            self.src_seen.discard(entry + (src_st.st_dev, src_st.st_ino))

    def _just_created(self, src: str, dst: str,
                      src_st: os.stat_result) -> Optional[str]:
        """What GNU does when a top-level copy lands on a name an earlier
        operand created: None (go on), "" (skip quietly, -n) or a message."""
        made = self.dst_made.get(self._entry(dst) or (0, 0, ""))
        if made is None:
            return None
        if stat.S_ISDIR(src_st.st_mode):
            if made == "dir":
                return None
            return (f"cannot overwrite non-directory {quote(dst)} "
                    f"with directory {quote(src)}")
        if made == "dir":
            return None   # the usual 'cannot overwrite directory' check
        if self.opt.no_clobber:
            return ""
        if self.opt.update:
            # GNU's -u comes first: the copy just made is not older, unless
            # -p gave it an older source's time; then GNU goes on to refuse
            try:
                if os.stat(dst).st_mtime_ns >= src_st.st_mtime_ns:
                    return ""
            except OSError:
                pass
        if made == "symlink" and stat.S_ISREG(src_st.st_mode):
            return (f"will not copy {quote(src)} through just-created "
                    f"symlink {quote(dst)}")
        return (f"will not overwrite just-created {quote(dst)} with "
                f"{quote(src)}")

    def copy(self, src: str, dst: str, top: bool,
             src_st: Optional[os.stat_result] = None) -> Iterator[Job]:
        opt = self.opt
        follow = (opt.dereference if opt.dereference is not None
                  else (top and not opt.recursive))
        if src_st is None:
            try:
                src_st = os.lstat(src)
                if follow and stat.S_ISLNK(src_st.st_mode):
                    # it may lead to a file this run is writing: GNU, one
                    # file at a time, finds it finished (size included)
                    yield BARRIER
                    src_st = os.stat(src)
            except OSError as exc:
                self.fail(f"cannot stat {quote(src)}: {_err(exc)}")
                return
        if top and self.multi:
            yield from self._operand(src, dst, src_st, follow)
            return
        yield from self._entry_copy(src, dst, top, src_st, follow)

    def _operand(self, src: str, dst: str, src_st: os.stat_result,
                 follow: bool) -> Iterator[Job]:
        """One of several top-level operands: GNU's checks against the
        operands before it, then the copy, remembered."""
        mode = src_st.st_mode
        if stat.S_ISDIR(mode) and self.opt.recursive:
            # the files of earlier operands are in place before this walk
            # reads directories they may have gone into (`cp -r a d d`)
            yield BARRIER
            # for a directory GNU looks at the destination first
            try:
                dst_lst: Optional[os.stat_result] = os.lstat(dst)
            except OSError:
                dst_lst = None
            if self._refused_as_same(src, src_st, dst, dst_lst,
                                     not self.opt.dereference):
                return
            earlier = self.dir_copies.get((src_st.st_dev, src_st.st_ino))
            if earlier is not None and \
                    self._entry(earlier) == self._entry(src):
                # an earlier operand merged this directory into itself
                # (`cp -rn d d parent`): GNU's check of where the
                # directory was copied to fires before the 'more than once'
                self.fail(f"cannot copy a directory, {quote(src)}, "
                          f"into itself, {quote(dst)}")
                return
        if ((self.opt.recursive or not stat.S_ISDIR(mode))
                and self._seen_before(src, src_st)):
            return
        if self.opt.update and not stat.S_ISDIR(mode) and \
                self.dst_made.get(self._entry(dst) or (0, 0, "")):
            yield BARRIER      # -u looks at the time of the copy just made
        refuse = self._just_created(src, dst, src_st)
        if refuse is not None:
            if refuse:
                self.fail(refuse)
            return
        before = self.files.stats.errors
        made = "file"
        for job in self._entry_copy(src, dst, True, src_st, follow):
            made = "job"
            yield job
        if stat.S_ISDIR(mode):
            if os.path.isdir(dst) and not os.path.islink(dst):
                self._made(dst, "dir")
            else:
                # GNU forgets a directory it could not make: named again,
                # it is tried again (and fails again), with no warning
                self._forget(src, src_st)
        elif made == "job":
            # recorded even if the job fails later (it may be in flight):
            # GNU, which knows, would copy the next operand there
            self._made(dst, "file")
        elif self.files.stats.errors == before and os.path.lexists(dst):
            if os.path.islink(dst) and stat.S_ISLNK(mode):
                self._made(dst, "symlink")
            elif not stat.S_ISREG(mode):
                self._made(dst, "file")

    def _entry_copy(self, src: str, dst: str, top: bool,
                    src_st: os.stat_result,
                    follow: bool) -> Iterator[Job]:
        opt = self.opt
        mode = src_st.st_mode
        if stat.S_ISDIR(mode):
            if not opt.recursive:
                self.fail(f"-r not specified; omitting directory {quote(src)}")
                return
            yield from self.copy_dir(src, dst, src_st, top)
            return
        try:
            dst_lst: Optional[os.stat_result] = os.lstat(dst)
        except FileNotFoundError:
            dst_lst = None
        except OSError as exc:
            self.fail(f"cannot stat {quote(dst)}: {_err(exc)}")
            return
        dst_st = dst_lst
        target = dst
        through_error: Optional[OSError] = None
        if dst_lst is not None and stat.S_ISLNK(dst_lst.st_mode):
            try:
                dst_st = os.stat(dst)
            except OSError as exc:
                dst_st = None
                if exc.errno != errno.ENOENT:
                    through_error = exc     # a loop, a denied directory...
        # GNU stats the destination through a symlink only to write a
        # regular file through it
        use_lstat = stat.S_ISLNK(mode) or (
            opt.recursive and not stat.S_ISREG(mode))
        if through_error is not None and not use_lstat:
            self.fail(f"cannot stat {quote(dst)}: {_err(through_error)}")
            return
        dst_sb = dst_lst if use_lstat else dst_st
        if self._refused_as_same(src, src_st, dst, dst_sb, not follow):
            return
        # -n: the destination exists as GNU stats it (through a symlink when
        # the source is a regular file): a dangling symlink is no
        # destination then, and gets the refusal below
        if opt.no_clobber and dst_sb is not None:
            return
        if opt.update and dst_sb is not None and \
                dst_sb.st_mtime_ns >= src_st.st_mtime_ns:
            # -u: the destination is not older; later names of the same
            # file (-a) link to it, as to a copy of it
            yield from self._left_alone(src_st, follow, dst, dst_st)
            return
        if dst_sb is not None and stat.S_ISDIR(dst_sb.st_mode):
            self.fail(f"cannot overwrite directory {quote(dst)} "
                      "with non-directory")
            return
        if (yield from self._linked(src, dst, src_st, follow, dst_lst, dst_st)):
            return
        if stat.S_ISLNK(mode):
            self.copy_symlink(src, dst, src_st, dst_lst is not None)
            return
        special = not stat.S_ISREG(mode) and opt.recursive
        if dst_lst is not None and stat.S_ISLNK(dst_lst.st_mode) and \
                not special:
            if dst_st is None:
                # GNU 9.1 refuses with -f too (only --remove-destination
                # would replace the link itself)
                self.verbose(src, dst)    # GNU's line comes first
                if not self._source_refused(src, mode):
                    self.fail("not writing through dangling symlink "
                              f"{quote(dst)}")
                return
            else:
                target = _link_target(dst)
        if special:
            # GNU -R makes special files anew, -L or not (no --copy-contents),
            # and writes through no symlink for them
            # GNU replaces what is there only when it copies symlinks as
            # symlinks (or keeps hard links and that name has others):
            # under -L, mkfifo/mknod meet it ("File exists")
            self.copy_special(src, dst, src_st, dst_lst is not None and (
                not follow or (opt.preserve_links and dst_lst.st_nlink > 1)))
            return
        old = dst_st if dst_lst is not None else None
        job_mode = mode & 0o777 & ~UMASK
        in_place = False
        announced = False
        if old is not None:
            if not stat.S_ISREG(old.st_mode):
                # a FIFO or device is opened by its name, through any
                # symlinks: /dev/stdout's last link names "pipe:[N]"
                in_place = True
                target = dst
            elif opt.preserve_links and old.st_nlink > 1:
                # -a: GNU unlinks a name that has other links before the
                # copy (they keep the old content) and says so first; ours
                # is renamed over it, and the refusal is GNU's unlink's
                assert dst_lst is not None   # as old is: the name exists
                if self._unlink_refused(dst, dst_lst):
                    return
                self.removed(dst)
                old = None
                target = dst
            elif not opt.force and not os.access(target, os.W_OK):
                self.verbose(src, dst)    # GNU's line comes first
                if not self._source_refused(src, mode):
                    self.fail(f"cannot create regular file {quote(dst)}: "
                              "Permission denied")
                return
            elif opt.force and not os.access(target, os.W_OK):
                # GNU unlinks it and makes a new one: through a symlink,
                # the symlink itself is replaced, not the file it names.
                # Ours is renamed over it once copied; the lines and the
                # refusal are GNU's, as its unlink comes before the copy
                self.verbose(src, dst)
                if self._source_refused(src, mode):
                    return
                assert dst_lst is not None   # as old is: the name exists
                if self._unlink_refused(dst, dst_lst):
                    return
                self.removed(dst)
                announced = True
                old = None
                target = dst
            else:
                job_mode = old.st_mode & 0o7777
                # no temporary can replace a file in a directory we may
                # not write (or sticky, not ours): written in place, as
                # GNU writes every file
                in_place = bool(self._replace_refusal(target, old))
        if self.on_total is not None:
            self.on_total(src_st.st_size)
        if not announced:
            self.verbose(src, dst)
        yield FileJob(src=src, dst=dst, target=target, src_st=src_st,
                      old_st=old, mode=job_mode, in_place=in_place)
        if target != dst:
            # written through a symlink, maybe into a source still to be
            # copied: GNU, one file at a time, would copy the new content
            yield BARRIER

    def copy_dir(self, src: str, dst: str, src_st: os.stat_result,
                 top: bool) -> Iterator[Job]:
        key = (src_st.st_dev, src_st.st_ino)
        first = self.first_made
        if first is not None and key == first[:2] and \
                self._entry(src) == self._entry(first[2]):
            # the copy reached the directory it made inside its source:
            # GNU names the operands and stops walking (what came before
            # stays copied)
            top_src, top_dst = self.top
            self.fail(f"cannot copy a directory, {quote(top_src)}, "
                      f"into itself, {quote(top_dst)}")
            self.into_self = True
            return
        if top:
            self.dir_copies.setdefault(key, dst)
        else:
            earlier = self.dir_copies.get(key)
            if earlier is not None and not self.opt.dereference:
                # an earlier operand copied it: GNU will not make a second
                # copy of a directory
                self.fail(f"will not create hard link {quote(dst)} to "
                          f"directory {quote(earlier)}")
                return
        if key in self.ancestors:
            # -L: a symlink back to a directory being copied (GNU's words)
            self.fail(f"cannot copy cyclic symbolic link {quote(src)}")
            return
        if key in self.merged_dirs:
            # a directory this run copies files into, now read as a source
            # (`cp -r d/. d/sub`): GNU finds those files whole
            yield BARRIER
        self.ancestors.add(key)
        try:
            yield from self._copy_dir(src, dst, src_st, top)
        finally:
            self.ancestors.discard(key)

    def _copy_dir(self, src: str, dst: str, src_st: os.stat_result,
                  top: bool) -> Iterator[Job]:
        try:
            # GNU looks at the destination itself: a symlink there is not
            # a directory to merge into
            dst_st: Optional[os.stat_result] = os.lstat(dst)
        except FileNotFoundError:
            dst_st = None
        except OSError as exc:
            self.fail(f"cannot stat {quote(dst)}: {_err(exc)}")
            return
        if self._refused_as_same(src, src_st, dst, dst_st,
                                 not self.opt.dereference):
            return
        created = False
        if dst_st is None:
            try:
                os.mkdir(dst, 0o700)
                if self.first_made is None:
                    made = os.lstat(dst)
                    self.first_made = (made.st_dev, made.st_ino, dst)
            except OSError as exc:
                self.fail(f"cannot create directory {quote(dst)}: {_err(exc)}")
                return
            created = True
            self.verbose(src, dst)
        elif not stat.S_ISDIR(dst_st.st_mode):
            self.fail(f"cannot overwrite non-directory {quote(dst)} "
                      f"with directory {quote(src)}")
            return
        else:
            self.merged_dirs.add((dst_st.st_dev, dst_st.st_ino))
        opt = self.opt
        follow = bool(opt.dereference)
        cloner = self.files.cloner
        cloning = cloner.worth_trying(src_st.st_dev, src, dst)
        # --reflink=always: each file through FileCopier, which fails as GNU
        if self.open_dir is not None and not (cloning and cloner.mode == "always"):
            fresh = self.open_dir(src, dst, follow, not created)
            if fresh is not None:
                fresh.clone = cloning
                fresh.src_dev = src_st.st_dev
                if self.on_verbose is not None or self.on_total is not None:
                    fresh.announce = self._announce
                try:
                    yield from self._fresh_entries(fresh)
                finally:
                    fresh.release()
                self.dir_fixups.append((dst, src_st, created))
                return
        try:
            with os.scandir(src) as entries:
                # GNU (gnulib savedir) reads entries in inode order
                names = [e.name for e in sorted(entries,
                                                key=lambda e: e.inode())]
        except OSError as exc:
            self.fail(f"cannot access {quote(src)}: {_err(exc)}")
            names = []
        src_dir = src if src.endswith("/") else src + "/"
        dst_dir = dst if dst.endswith("/") else dst + "/"
        for name in names:
            yield from self._child(src_dir + name, dst_dir + name, follow,
                                   created)
            if self.into_self:
                break
        self.dir_fixups.append((dst, src_st, created))

    def _fresh_entries(self, fresh: FreshDir) -> Iterator[Job]:
        """The entries of a directory this run made: the engine chains its
        small files (each ``yield fresh``), the walk copies the others."""
        count = fresh.count
        while fresh.pos < count:
            yield fresh            # the engine moves pos past small files
            pos = fresh.pos
            if pos >= count:
                break
            fresh.pos = pos + 1
            name = fresh.name(pos)
            yield from self._child(fresh.src + name, fresh.dst + name,
                                   fresh.follow, not fresh.merge)
            if self.into_self:
                break

    def _announce(self, fresh: FreshDir, first: int, count: int) -> None:
        """The -v lines and progress sizes of entries the engine chained,
        as :meth:`_child` gives them for the entries it walks."""
        on_total = self.on_total
        for i in range(first, first + count):
            if on_total is not None:
                on_total(fresh.size(i))
            if self.on_verbose is not None:
                name = fresh.name(i)
                self.verbose(fresh.src + name, fresh.dst + name)

    def _child(self, s: str, d: str, follow: bool,
               created: bool) -> Iterator[Job]:
        """Copy directory entry ``s`` to ``d``; ``created``: its directory
        was made by this run."""
        try:
            st = os.lstat(s)
            if follow and stat.S_ISLNK(st.st_mode):
                yield BARRIER     # as in copy(): what this run wrote, done
                st = os.stat(s)
        except OSError as exc:
            self.fail(f"cannot stat {quote(s)}: {_err(exc)}")
            return
        if created and S_ISREG(st.st_mode):
            # GNU's shortcut: nothing exists yet in a directory this run
            # made, so there is no destination to look at
            if (yield from self._linked(s, d, st, follow, None, None)):
                return
            if self.on_total is not None:
                self.on_total(st.st_size)
            if self.on_verbose is not None:
                self.verbose(s, d)
            yield FileJob.fresh_file(s, d, st)
        else:
            yield from self.copy(s, d, False, st)

    def removed(self, dst: str) -> None:
        """-v: GNU's line for a destination it unlinks to make a symlink, a
        special file or a hard link (-a) in its place."""
        if self.on_verbose is not None:
            self.on_verbose(f"removed {quote(dst)}")

    def copy_symlink(self, src: str, dst: str, src_st: os.stat_result,
                     exists: bool = False) -> None:
        """Make a symlink like ``src`` at ``dst``: a temporary renamed over
        what is there, so a failure loses nothing. GNU unlinks an existing
        ``dst`` first; -v lines and messages are GNU's (``removed 'dst'``,
        or ``cannot remove`` where its unlink would have been refused)."""
        if not exists:
            self.verbose(src, dst)   # GNU's line comes before the attempt
        try:
            link = os.readlink(src)
        except OSError as exc:
            self.fail(f"cannot read symbolic link {quote(src)}: {_err(exc)}")
            return
        tmp = _temp_beside(dst)
        files = self.files
        files.temps.add(tmp)
        try:
            os.symlink(link, tmp)
            if self.opt.preserve:
                try:
                    os.chown(tmp, src_st.st_uid, src_st.st_gid,
                             follow_symlinks=False)
                except PermissionError:
                    pass
                try:
                    os.utime(tmp, ns=(src_st.st_atime_ns, src_st.st_mtime_ns),
                             follow_symlinks=False)
                except OSError:
                    pass
            os.rename(tmp, dst)
            if exists:
                self.dir_ids.clear()
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if exists and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                # where the directory refuses changes, GNU's unlink fails
                self.fail(f"cannot remove {quote(dst)}: {_err(exc)}")
                return
            failure: Optional[OSError] = exc
        else:
            failure = None
        finally:
            files.temps.discard(tmp)
        if exists:
            self.removed(dst)    # renamed over here, unlinked by GNU
            self.verbose(src, dst)
        if failure is not None:
            self.fail(f"cannot create symbolic link {quote(dst)}: {_err(failure)}")

    def copy_special(self, src: str, dst: str, src_st: os.stat_result,
                     replace: bool) -> None:
        """Make a FIFO, socket or device like ``src`` at ``dst``, after
        unlinking what is there if ``replace``."""
        if replace:
            self.dir_ids.clear()
            try:
                os.unlink(dst)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.fail(f"cannot remove {quote(dst)}: {_err(exc)}")
                return
            else:
                self.removed(dst)
        self.verbose(src, dst)   # GNU's line comes before the attempt
        try:
            if stat.S_ISFIFO(src_st.st_mode):
                os.mkfifo(dst, src_st.st_mode & 0o777 & ~UMASK)
            elif stat.S_ISSOCK(src_st.st_mode):
                os.mknod(dst, stat.S_IFSOCK | (src_st.st_mode & 0o777 & ~UMASK))
            else:
                os.mknod(dst, src_st.st_mode & ~UMASK, src_st.st_rdev)
        except OSError as exc:
            kind = "fifo" if stat.S_ISFIFO(src_st.st_mode) else "special file"
            self.fail(f"cannot create {kind} {quote(dst)}: {_err(exc)}")
            return
        self._preserve_path(dst, src_st)

    def _preserve_path(self, path: str, st: os.stat_result) -> None:
        if not self.opt.preserve:
            return
        mode = preserved_mode(st, lambda: os.chown(path, st.st_uid, st.st_gid))
        try:
            os.chmod(path, mode)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            self.fail(f"preserving times for {quote(path)}: {_err(exc)}")

    def _left_alone(self, src_st: os.stat_result, follow: bool, dst: str,
                    dst_st: Optional[os.stat_result]) -> Iterator[Job]:
        """-a -u: a name left alone because its destination is not older is
        still the first copy of its file for the names after it (GNU's
        remember_copied), already in place; or, when the file was copied
        under an earlier name, GNU links it to that copy all the same."""
        if not (self.opt.preserve_links and (src_st.st_nlink > 1 or follow)):
            return
        key = (src_st.st_dev, src_st.st_ino)
        if key in self.link_first and \
                (yield from self._link_over(key, dst, None)):
            return
        # "before" None: make_links takes the name as made
        self.link_first[key] = (dst, None, _ident(dst_st))

    def _linked(self, src: str, dst: str, src_st: os.stat_result,
                follow: bool, dst_lst: Optional[os.stat_result],
                dst_st: Optional[os.stat_result]) -> Generator[Job, None, bool]:
        """GNU -a: whether ``src`` was met before (another hard link, or
        the same file through symlinks under -L), so ``dst`` becomes a link
        to its first copy (made by :meth:`make_links`, or at once where a
        name is there to be replaced). Remembers it if not, with what was at
        ``dst`` (``dst_lst``) and what a copy through a symlink there would
        replace (``dst_st``)."""
        if not self.opt.preserve_links or not (src_st.st_nlink > 1 or follow):
            return False
        key = (src_st.st_dev, src_st.st_ino)
        first = self.link_first.get(key)
        if first is not None and dst_lst is not None:
            if (yield from self._link_over(key, dst, src)):
                return True
            first = None     # that copy failed: this name is the first
        if first is None:
            self.link_first[key] = (dst, _ident(dst_lst), _ident(dst_st))
            return False
        self.verbose(src, dst)
        self.links.append(_Link(first[0], dst, src, src_st, follow, key))
        return True

    def _link_over(self, key: Tuple[int, int], dst: str,
                   src: Optional[str]) -> Generator[Job, None, bool]:
        """-a: replace the existing name ``dst`` with a link to the first
        copy of file ``key`` once that copy is done (GNU, one file at a
        time, says 'removed' only once the link is made), after -v's line
        for ``src`` if given. False if that copy failed: GNU has forgotten
        it."""
        yield BARRIER
        if not self._first_made(key):
            return False
        if src is not None:
            self.verbose(src, dst)
        self._link_now(self.link_first[key][0], dst, replacing=True)
        return True

    def _link_now(self, first: str, dst: str, replacing: bool) -> bool:
        """Make ``dst`` a hard link to ``first``: linked beside it under a
        temporary name and renamed over it, so a refused link (to a
        directory, to another user's file under protected_hardlinks...)
        loses nothing at ``dst``. -v's 'removed' when it replaced a name."""
        tmp = _temp_beside(dst)
        self.files.temps.add(tmp)     # removed if we are stopped meanwhile
        failure: Optional[OSError] = None
        try:
            os.link(first, tmp, follow_symlinks=False)
        except OSError as exc:
            failure = exc
        else:
            try:
                os.rename(tmp, dst)
            except OSError as exc:
                failure = exc
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self.files.temps.discard(tmp)
        if failure is not None:
            self.fail(f"cannot create hard link {quote(dst)} to "
                      f"{quote(first)}: {_err(failure)}")
            return False
        self.dir_ids.clear()
        if replacing:
            self.removed(dst)
        return True

    def _first_made(self, key: Tuple[int, int]) -> bool:
        """Whether the first copy of a linked source is in place: a copy
        replaces what it writes (by a rename), so a name still missing, or
        still naming what it had before, and through a symlink the same
        file as before, means that copy failed (a dangling symlink it
        refused, say)."""
        first, before, before_through = self.link_first[key]
        try:
            lst = os.lstat(first)
        except OSError:
            return False
        if before is None or _ident(lst) != before:
            return True
        if not stat.S_ISLNK(lst.st_mode):
            return False
        try:
            return _ident(os.stat(first)) != before_through
        except OSError:
            return False     # still dangling

    def make_links(self, run: Callable[[Iterable[Job]], None]) -> None:
        """-a: the hard links to first copies, now that those are in place
        (each replaces what is at its name, as GNU's does). A first copy
        that failed is forgotten, as GNU forgets it: the next name of that
        file is copied (through ``run``, the engine) and the later names
        link to that copy."""
        while self.links:
            links, self.links = self.links, []
            made: Dict[Tuple[int, int], bool] = {}
            orphans: List[_Link] = []
            for link in links:
                ok = made.get(link.key)
                if ok is None:
                    ok = made[link.key] = self._first_made(link.key)
                if not ok:
                    orphans.append(link)
                    continue
                self._link_now(link.first, link.dst, replacing=False)
            for key in made:
                if not made[key]:
                    del self.link_first[key]   # the next name is the first
            if orphans:
                run(self._recopy(orphans))

    def _recopy(self, orphans: List["_Link"]) -> Iterator[Job]:
        """Copy each name whose first copy failed, as a file of its own
        (its -v line was printed as a link already)."""
        on_verbose, self.on_verbose = self.on_verbose, None
        try:
            for link in orphans:
                yield from self._entry_copy(link.src, link.dst, False,
                                            link.src_st, link.follow)
        finally:
            self.on_verbose = on_verbose

    def fix_dirs(self) -> None:
        """Directory modes and times, after their contents are in place."""
        for dst, st, created in self.dir_fixups:
            try:
                if self.opt.preserve:
                    self._preserve_path(dst, st)
                elif created:
                    os.chmod(dst, st.st_mode & 0o777 & ~UMASK)
            except OSError as exc:
                self.fail(f"setting permissions for {quote(dst)}: {_err(exc)}")
        self.dir_fixups.clear()


def copy_paths(sources: Sequence[str], dest: Optional[str], *,
               options: CopyOptions, target_directory: Optional[str] = None,
               no_target_directory: bool = False,
               stats: Optional[Stats] = None,
               on_error: Optional[ErrorHandler] = None,
               on_verbose: Optional[VerboseHandler] = None,
               on_progress: Optional[ProgressHandler] = None,
               on_total: Optional[TotalHandler] = None,
               on_warning: Optional[ErrorHandler] = None) -> bool:
    """Copy ``sources`` to ``dest`` (or into ``target_directory``) like GNU cp.

    Args:
        sources: the source operands.
        dest: the last operand (None with ``target_directory``).
        options: GNU cp's options and the engine settings.
        target_directory: ``-t DIR``.
        no_target_directory: ``-T``: treat ``dest`` as a normal file.
        stats: counters to fill.
        on_error: called with each GNU-formatted message (no program name).
        on_verbose: called with each ``'a' -> 'b'`` line (``-v``).
        on_progress: called with the bytes copied since the last call (a
            sparse file's holes count once they are planned).
        on_total: called with the size of each regular file found.
        on_warning: called with GNU's warnings (``warning: source file 'a'
            specified more than once``), which do not fail the copy;
            ``on_error`` when omitted.

    Returns:
        True when everything was copied.

    Raises:
        UringUnavailable: engine "uring" and io_uring cannot be set up
            (raised before anything is touched).
        KeyboardInterrupt: after removing every temporary file.
    """
    stats = stats if stats is not None else Stats(command="cp")
    stats.engine = options.engine
    stats.block_size = options.block_size
    stats.queue_depth = options.queue_depth
    report: ErrorHandler = on_error or (lambda message: None)
    files = FileCopier(options, stats, report, on_progress)
    engine = make_engine(files, options.engine, options.block_size,
                         options.queue_depth)
    stats.start()
    walker = _Walker(options, files, on_verbose, on_total)
    walker.on_warning = on_warning or on_error
    walker.open_dir = engine.open_dir
    try:
        try:
            pairs = plan_operands(sources, dest, target_directory,
                                  no_target_directory)
        except ValueError as exc:
            files.fail(str(exc))
            return False
        engine.run(walker.operands(pairs))
        walker.make_links(engine.run)
        walker.fix_dirs()
        if options.fsync:
            files.sync_dirs()
    except BaseException:
        files.cleanup()
        raise
    finally:
        engine.close()
        stats.stop()
    return files.ok

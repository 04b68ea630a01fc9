"""The ring: io_uring set-up with feature probing, a registered buffer arena,
a registered file table, batched submit and reap, and the counters.

Nothing else in uringtools knows liburing. Callers describe requests with
:meth:`Ring.prep`, send them with :meth:`Ring.submit` or :meth:`Ring.wait`
(one ``io_uring_enter`` each), and read completions from
:attr:`Ring.cqe_user_data` / :attr:`Ring.cqe_res`.
"""

from __future__ import annotations

import _thread
import errno
import mmap
import os
import struct
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Iterable, List, Optional, Tuple, Union

from .records import record
from ._uring import ffi, lib
from .stats import Stats

#: per-thread state: the io-wq worker cap this thread last set
_THREAD = _thread._local()

OP_READ = lib.IORING_OP_READ
OP_WRITE = lib.IORING_OP_WRITE
OP_READV = lib.IORING_OP_READV
OP_WRITEV = lib.IORING_OP_WRITEV
OP_READ_FIXED = lib.IORING_OP_READ_FIXED
OP_WRITE_FIXED = lib.IORING_OP_WRITE_FIXED
OP_POLL_ADD = lib.IORING_OP_POLL_ADD
OP_OPENAT = lib.IORING_OP_OPENAT
OP_CLOSE = lib.IORING_OP_CLOSE
OP_STATX = lib.IORING_OP_STATX
OP_FSYNC = lib.IORING_OP_FSYNC
OP_SPLICE = lib.IORING_OP_SPLICE
OP_NOP = lib.IORING_OP_NOP
OP_RENAMEAT = lib.IORING_OP_RENAMEAT

# the two C calls that move requests in and out of the rings (tests wrap
# them to raise a signal's exception at the moment a handler could run)
_queue = lib.ut_queue
_reap = lib.ut_reap

SQE_FIXED_FILE = lib.IOSQE_FIXED_FILE
SQE_IO_LINK = lib.IOSQE_IO_LINK
SQE_ASYNC = lib.IOSQE_ASYNC
SQE_CQE_SKIP_SUCCESS = lib.IOSQE_CQE_SKIP_SUCCESS
SETUP_COOP_TASKRUN = lib.IORING_SETUP_COOP_TASKRUN
#: splice_flags bit: the splice input names a registered file
SPLICE_F_FD_IN_FIXED = 1 << 31

OP_NAMES = {
    OP_NOP: "nop", OP_READ: "read", OP_WRITE: "write", OP_READV: "readv",
    OP_WRITEV: "writev", OP_READ_FIXED: "read_fixed",
    OP_WRITE_FIXED: "write_fixed", OP_POLL_ADD: "poll_add",
    OP_OPENAT: "openat", OP_CLOSE: "close", OP_STATX: "statx",
    OP_FSYNC: "fsync", OP_SPLICE: "splice", OP_RENAMEAT: "renameat",
}
READ_OPS = frozenset({OP_READ, OP_READV, OP_READ_FIXED})
WRITE_OPS = frozenset({OP_WRITE, OP_WRITEV, OP_WRITE_FIXED})

#: errnos meaning "io_uring is not usable here" rather than "this request failed".
UNAVAILABLE_ERRNOS = frozenset({errno.EPERM, errno.EACCES, errno.ENOSYS,
                                errno.EOPNOTSUPP, errno.ENOMEM})

_SETUP_CANDIDATES: Tuple[Tuple[int, Tuple[str, ...]], ...] = (
    (lib.IORING_SETUP_SINGLE_ISSUER | lib.IORING_SETUP_DEFER_TASKRUN,
     ("SINGLE_ISSUER", "DEFER_TASKRUN")),
    (lib.IORING_SETUP_COOP_TASKRUN, ("COOP_TASKRUN",)),
    (0, ()),
)

_SETUP_NAMES = ((lib.IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER"),
                (lib.IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN"),
                (lib.IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"))


def _flag_names(flags: int) -> Tuple[str, ...]:
    """The setup flags in ``flags`` by name; any others in hex."""
    names = [name for bit, name in _SETUP_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in _SETUP_NAMES)
    return tuple(names + ([f"0x{rest:x}"] if rest else []))


_RETRY_ENTER = frozenset({errno.EINTR, errno.EAGAIN, errno.EBUSY})

#: struct ut_sqe as a struct-module format, for Ring.queue_packed: opcode,
#: flags, buf_index, fd, len, op_flags, addr, off, addr2, file_index,
#: splice_fd_in, user_data (the fields of Ring.prep, in this order)
PACKED_SQE = "=BBHiIIQQQIiQ"


#: NOP flag: complete with the result given in ``len`` (kernel 6.10+)
_NOP_INJECT_RESULT = 1
_FAULT_ERRNOS = {"eagain": errno.EAGAIN, "eintr": errno.EINTR,
                 "ecanceled": errno.ECANCELED, "eio": errno.EIO,
                 "enospc": errno.ENOSPC}
_FAULT_OPS = {
    "read": READ_OPS,
    "write": WRITE_OPS,
    "splice": frozenset({OP_SPLICE}),
    "any": READ_OPS | WRITE_OPS | frozenset({OP_SPLICE}),
}


class FaultPlan:
    """Test-only fault injection, set by the URINGTOOLS_FAULTS variable.

    Rules, comma-separated, each ``OP:FAULT:N`` (every Nth matching request)
    or ``OP:FAULT:@N`` (only the Nth): OP is read, write, splice or any;
    FAULT is ``short`` (the request asks for half its length, so the kernel
    really returns short; never applied to a request that heads a link) or an errno name (eagain, eintr, ecanceled, eio,
    enospc: the request becomes a NOP that completes with that error, which
    breaks a link chain as a real failure would). Off unless the variable is
    set; counted in stats.extra["faults_injected"].
    """

    def __init__(self, spec: str) -> None:
        self.rules: List[Tuple[frozenset, str, int, bool]] = []
        self.seen: List[int] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            try:
                op, fault, when = part.split(":")
                once = when.startswith("@")
                n = int(when.lstrip("@"))
                if op not in _FAULT_OPS or n < 1 or (
                        fault != "short" and fault not in _FAULT_ERRNOS):
                    raise ValueError
            except ValueError:
                raise ValueError(f"bad URINGTOOLS_FAULTS rule {part!r}") from None
            self.rules.append((_FAULT_OPS[op], fault, n, once))
            self.seen.append(0)

    def rewrite(self, opcode: int, flags: int, length: int, op_flags: int,
                stats: Stats) -> Tuple[int, int, int, int]:
        """The SQE fields to send instead, for one request.

        Every rule counts every request it matches; the first rule that
        hits decides the fault.
        """
        fault = ""
        for i, (ops, kind, n, once) in enumerate(self.rules):
            if opcode not in ops:
                continue
            self.seen[i] += 1
            hit = self.seen[i] == n if once else self.seen[i] % n == 0
            # A shortened request that heads a link would look complete to
            # the kernel and feed its partner stale bytes: only unlinked
            # requests and chain tails are shortened.
            if hit and not fault and (kind != "short" or (
                    length > 1 and not flags & SQE_IO_LINK)):
                fault = kind
        if not fault:
            return opcode, flags, length, op_flags
        stats.extra["faults_injected"] = stats.extra.get("faults_injected", 0) + 1
        if fault == "short":
            return opcode, flags, length // 2, op_flags
        code = _FAULT_ERRNOS[fault]
        return (OP_NOP, flags & ~SQE_FIXED_FILE, (-code) & 0xFFFFFFFF,
                _NOP_INJECT_RESULT)
        return opcode, flags, length, op_flags


_PACKED_SIZE = struct.calcsize(PACKED_SQE)
if _PACKED_SIZE != ffi.sizeof("struct ut_sqe"):  # pragma: no cover
    raise ImportError("PACKED_SQE does not match struct ut_sqe")


class UringUnavailable(OSError):
    """io_uring cannot be set up here (seccomp, sysctl, old kernel, memory)."""

    def hint(self) -> str:
        """One line naming the reason, for the fallback warning."""
        reason = os.strerror(self.errno) if self.errno else str(self)
        if self.errno in (errno.EPERM, errno.EACCES):
            why = "blocked by seccomp or kernel.io_uring_disabled"
        elif self.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            why = "not supported by this kernel"
        elif self.errno == errno.ENOMEM:
            why = "not enough locked memory"
        else:
            why = "set-up failed"
        return f"io_uring unavailable ({why}: {reason})"


def check(res: int, filename: Optional[str] = None) -> int:
    """Return ``res`` if it is >= 0, else raise the matching OSError.

    Args:
        res: a liburing return value or a CQE result (``-errno`` on failure).
        filename: the name to attach to the exception.

    Raises:
        OSError: the subclass for ``-res`` (FileNotFoundError, ...).
    """
    if res < 0:
        raise error(res, filename)
    return res


def error(res: int, filename: Optional[str] = None) -> OSError:
    """The OSError subclass for a negative result (what :func:`check` raises)."""
    return OSError(-res, os.strerror(-res), filename)


_HUGE_PAGE = 2 << 20


class Arena:
    """One block of memory owned by Python, split into equal slots.

    An anonymous mmap owns the memory; ``ffi.from_buffer`` keeps it exported,
    so it cannot be unmapped while a pointer into it may still be in use.
    """

    def __init__(self, slots: int, slot_size: int) -> None:
        if slots < 1 or slot_size < 1:
            raise ValueError("an arena needs at least one slot of one byte")
        self.slots = slots
        self.slot_size = slot_size
        self.size = slots * slot_size
        self._mem = mmap.mmap(-1, self.size,
                              flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if self.size >= _HUGE_PAGE:
            # a few huge pages instead of a fault (and a pin) per 4 KiB
            # page, where THP is "madvise"; a hint, refused harmlessly
            try:
                self._mem.madvise(mmap.MADV_HUGEPAGE)
            except (AttributeError, OSError):
                pass
        self.cdata = ffi.from_buffer(self._mem)
        self.base = int(ffi.cast("uintptr_t", self.cdata))
        self.view = memoryview(self._mem)

    def addr(self, slot: int, offset: int = 0) -> int:
        """Address of byte ``offset`` inside ``slot``."""
        return self.base + slot * self.slot_size + offset

    def slot_view(self, slot: int, length: int, offset: int = 0) -> memoryview:
        """A zero-copy view of ``length`` bytes of ``slot``."""
        start = slot * self.slot_size + offset
        return self.view[start:start + length]


class FileRef(record("FileRef", "target sqe_flags fd slot")):  # type: ignore[misc]
    """How SQEs name a file: a registered index (with FIXED_FILE) or a plain fd.

    Fields (ints): target (what the SQE's fd field holds), sqe_flags, fd
    (the process descriptor), slot (in the registered file table; -1 when
    not registered). collections.namedtuple: typing stays off start-up.
    """

    __slots__ = ()


class Ring:
    """An io_uring instance with batched submission and reaping.

    Args:
        entries: submission queue size; also the most SQEs one submit queues.
        stats: counters to fill (a new Stats when omitted).
        setup_flags: force these setup flags instead of probing, or a
            tuple of flag sets to try in turn (the first the kernel takes).
        describe: write the set-up flags and registration notes into
            ``stats`` (False for a helper ring sharing another ring's Stats;
            its counters still add up).

    Raises:
        UringUnavailable: io_uring cannot be set up here.
    """

    def __init__(self, entries: int = 64, *, stats: Optional[Stats] = None,
                 setup_flags: Union[None, int, Tuple[int, ...]] = None,
                 describe: bool = True) -> None:
        self.stats = stats if stats is not None else Stats()
        # notes go to a throw-away Stats when another ring describes ``stats``
        self._notes = self.stats if describe else Stats()
        self._ring = ffi.new("struct io_uring *")
        self._closed = True
        params = ffi.new("struct io_uring_params *")
        if isinstance(setup_flags, int):
            setup_flags = (setup_flags,)
        candidates: Iterable[Tuple[int, Tuple[str, ...]]] = (
            _SETUP_CANDIDATES if setup_flags is None
            else tuple((f, _flag_names(f)) for f in setup_flags))
        res = -errno.EINVAL
        names: Tuple[str, ...] = ()
        for flags, names in candidates:
            ffi.memmove(params, b"\0" * ffi.sizeof("struct io_uring_params"),
                        ffi.sizeof("struct io_uring_params"))
            params.flags = flags
            res = lib.io_uring_queue_init_params(entries, self._ring, params)
            if res != -errno.EINVAL:
                break
        if res < 0:
            code = -res
            raise UringUnavailable(code, os.strerror(code), "io_uring_setup")
        self._closed = False
        self.entries = params.sq_entries
        self.cq_entries = params.cq_entries
        self.features = params.features
        self.setup_flag_names: List[str] = list(names)
        self._notes.setup_flags = list(names)
        self._descs = ffi.new("struct ut_sqe[]", self.entries)
        self._nq = 0
        self._silent = 0  # queued SQEs flagged CQE_SKIP_SUCCESS
        self._submitted = ffi.new("unsigned *")
        self.cqe_user_data = ffi.new("uint64_t[]", self.cq_entries)
        self.cqe_res = ffi.new("int32_t[]", self.cq_entries)
        self._op_counts = ffi.new("uint64_t[]", lib.IORING_OP_LAST + 1)
        # requests queued and not yet reaped; ut_reap counts them down
        self._in_flight = ffi.new("int64_t[1]")
        self.arena: Optional[Arena] = None
        self.buffers_registered = False
        self._file_table = 0
        self._free_slots: List[int] = []
        self._keep: List[object] = []
        spec = os.environ.get("URINGTOOLS_FAULTS")
        self._faults = FaultPlan(spec) if spec else None

    # -- registration -------------------------------------------------------

    def register_arena(self, arena: Arena) -> bool:
        """Register ``arena`` as fixed buffer 0; False (and a note) if refused.

        Refusal is normal for unprivileged users with a small RLIMIT_MEMLOCK
        (ENOMEM); the arena is then used with plain read/write requests.
        """
        self.arena = arena
        iov = ffi.new("struct iovec *")
        iov.iov_base = arena.cdata
        iov.iov_len = arena.size
        res = lib.io_uring_register_buffers(self._ring, iov, 1)
        if res < 0:
            reason = os.strerror(-res)
            if -res == errno.ENOMEM:
                reason += " (RLIMIT_MEMLOCK too small)"
            self._notes.registered_buffers = False
            self._notes.registered_buffers_note = reason
            self.buffers_registered = False
            return False
        self._notes.registered_buffers = True
        self._notes.registered_buffers_note = f"1 x {arena.size} bytes"
        self.buffers_registered = True
        return True

    def register_file_table(self, size: int) -> bool:
        """Make a sparse registered file table of ``size`` slots.

        Returns False (and notes why) when refused, e.g. EMFILE under a low
        ``ulimit -n``; files are then named by plain descriptors.
        """
        res = lib.io_uring_register_files_sparse(self._ring, size)
        if res < 0:
            self._notes.registered_files_note = os.strerror(-res)
            return False
        self._file_table = size
        self._free_slots = list(range(size - 1, -1, -1))
        self._notes.registered_files_note = f"table of {size}"
        return True

    def limit_workers(self, bounded: int) -> bool:
        """Let at most ``bounded`` io-wq workers run blocking requests at
        once (IORING_REGISTER_IOWQ_MAX_WORKERS); False if the kernel
        refused. The cap belongs to the calling thread's io-wq, which
        serves all the rings it submits to: a ring that wants its own cap
        asks again before each use (a cap already set costs no call).
        Noted in stats.extra["iowq_max_workers"]."""
        if getattr(_THREAD, "iowq_bounded", None) == bounded:
            return True
        values = ffi.new("unsigned[2]", [bounded, 0])   # 0: unbounded as is
        if lib.io_uring_register_iowq_max_workers(self._ring, values) < 0:
            return False
        _THREAD.iowq_bounded = bounded
        self.stats.extra["iowq_max_workers"] = bounded
        return True

    def attach_file(self, fd: int) -> FileRef:
        """Put ``fd`` in the registered file table if there is room."""
        if self._free_slots:
            index = self._free_slots.pop()
            fds = ffi.new("int[1]", [fd])
            res = lib.io_uring_register_files_update(self._ring, index, fds, 1)
            if res >= 0:
                self.stats.registered_files += 1
                return FileRef(index, SQE_FIXED_FILE, fd, index)
            self._free_slots.append(index)
            self._notes.registered_files_note = (
                f"update failed: {os.strerror(-res)}")
        return FileRef(fd, 0, fd, -1)

    def detach_file(self, ref: FileRef) -> None:
        """Drop ``ref`` from the table (its requests must all be reaped)."""
        if ref.slot < 0:
            return
        fds = ffi.new("int[1]", [-1])
        lib.io_uring_register_files_update(self._ring, ref.slot, fds, 1)
        self._free_slots.append(ref.slot)

    # -- submission ---------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests queued to the kernel whose CQEs are not yet reaped."""
        return int(self._in_flight[0])

    @property
    def room(self) -> int:
        """How many more SQEs fit before the next submit."""
        return self.entries - self._nq

    def prep(self, opcode: int, fd: int, addr: int, length: int, offset: int,
             user_data: int, *, flags: int = 0, buf_index: int = 0,
             op_flags: int = 0, addr2: int = 0, file_index: int = 0,
             splice_fd_in: int = 0) -> None:
        """Describe one SQE; it is queued and sent by the next submit/wait.

        ``offset`` of -1 means "the file's current position" (pipes, ttys,
        O_APPEND files). ``addr`` must stay valid until the CQE is reaped.
        An SQE flagged SQE_CQE_SKIP_SUCCESS is not counted in flight: use it
        only inside a link chain that posts exactly one CQE whatever happens
        (a failing skipped request posts its own CQE and silences the
        requests it cancels).
        """
        if self._nq == self.entries:
            self.submit()
        if self._faults is not None:
            opcode, flags, length, op_flags = self._faults.rewrite(
                opcode, flags, length, op_flags, self.stats)
        if flags & SQE_CQE_SKIP_SUCCESS:
            self._silent += 1
        d = self._descs[self._nq]
        d.opcode = opcode
        d.flags = flags
        d.buf_index = buf_index
        d.fd = fd
        d.len = length
        d.op_flags = op_flags
        d.addr = addr & 0xFFFFFFFFFFFFFFFF
        d.off = offset & 0xFFFFFFFFFFFFFFFF
        d.addr2 = addr2
        d.file_index = file_index
        d.splice_fd_in = splice_fd_in
        d.user_data = user_data
        self._nq += 1

    def queue_packed(self, data: bytes, n: int, silent: int = 0) -> None:
        """Describe ``n`` SQEs packed back to back in PACKED_SQE format.

        The same as ``n`` calls of :meth:`prep`, with one memmove instead of a
        dozen cffi field stores per SQE; ``silent`` of them carry
        SQE_CQE_SKIP_SUCCESS. They must fit: ``n <= room`` after a submit.
        """
        if len(data) != n * _PACKED_SIZE:
            raise ValueError("packed SQEs do not match their count")
        self.queue_descs(ffi.from_buffer("struct ut_sqe[]", data), n, silent)

    def queue_descs(self, descs: object, n: int, silent: int = 0) -> None:
        """Like :meth:`queue_packed`, from a ``struct ut_sqe[]`` (cdata: a C
        helper filled it, or packed bytes seen through it)."""
        if n > self.entries:
            raise ValueError("SQEs do not fit this ring")
        if self._nq + n > self.entries:
            self.submit()
        if self._faults is not None:  # each request passes the fault plan
            for k in range(n):
                d = descs[k]  # type: ignore[index]
                self.prep(d.opcode, d.fd, d.addr, d.len, d.off, d.user_data,
                          flags=d.flags, buf_index=d.buf_index,
                          op_flags=d.op_flags, addr2=d.addr2,
                          file_index=d.file_index,
                          splice_fd_in=d.splice_fd_in)
            return
        ffi.memmove(self._descs + self._nq, descs, n * _PACKED_SIZE)
        self._nq += n
        self._silent += silent

    def submit(self, wait_nr: int = 0) -> int:
        """Queue the described SQEs and make one io_uring_enter call.

        Retries the enter on EINTR/EAGAIN/EBUSY (counted as enter_retries):
        SQEs the kernel did not take stay queued and go with the retry.

        Returns:
            how many SQEs the kernel consumed.

        Raises:
            OSError: io_uring_enter failed for another reason.
        """
        stats = self.stats
        n = self._nq
        if n:
            # Counted before they are queued, with no call in between:
            # Python runs a signal's handler at a call (or a loop's back
            # edge), so a KeyboardInterrupt lands either before these lines
            # (nothing queued, nothing counted) or after _queue (both); a
            # clean-up that submits and drains then neither sends these SQEs
            # twice nor waits for CQEs that will never come.
            silent = self._silent
            in_flight = self._in_flight[0] + n - silent
            self._in_flight[0] = in_flight
            self._nq = self._silent = 0
            stats.sqes += n
            # requests in flight as this batch goes out: those with a CQE
            # to come, and this batch's silent ones (earlier batches' may
            # have finished unseen)
            if in_flight + silent > stats.max_in_flight:
                stats.max_in_flight = in_flight + silent
            if _queue(self._ring, self._descs, n, self._op_counts) != n:
                # cannot happen: room is checked in prep
                raise RuntimeError("submission queue overflow")
        if wait_nr > self.in_flight:
            raise RuntimeError(
                f"waiting for {wait_nr} completions with {self.in_flight} in flight")
        while True:
            ret = lib.ut_enter(self._ring, wait_nr, self._submitted)
            stats.enters += 1
            if ret >= 0:
                return ret
            if -ret not in _RETRY_ENTER:
                check(ret, "io_uring_enter")
            stats.enter_retries += 1
            if -ret != errno.EINTR and self.in_flight:
                # The kernel is out of resources for new work: let it finish
                # something first, then retry.
                wait_nr = max(wait_nr, 1)

    def reap(self) -> int:
        """Copy the ready CQEs into cqe_user_data/cqe_res; return how many."""
        n = _reap(self._ring, self.cq_entries, self.cqe_user_data,
                  self.cqe_res, self._in_flight)
        self.stats.cqes += n
        return n

    def wait(self, wait_nr: int = 1) -> int:
        """submit(wait_nr) then reap(): at least ``wait_nr`` completions."""
        self.submit(wait_nr)
        return self.reap()

    def keep(self, obj: object) -> None:
        """Hold ``obj`` (a buffer an SQE points into) until the ring closes."""
        self._keep.append(obj)

    def flush_op_counts(self) -> None:
        """Move the C-side per-opcode counters into stats.ops."""
        ops = self.stats.ops
        for code, name in OP_NAMES.items():
            n = self._op_counts[code]
            if n:
                ops[name] = ops.get(name, 0) + int(n)
                self._op_counts[code] = 0

    # -- life cycle ---------------------------------------------------------

    def close(self) -> None:
        """Tear the ring down; the kernel cancels what is still in flight."""
        if self._closed:
            return
        self.flush_op_counts()
        self._closed = True
        lib.io_uring_queue_exit(self._ring)
        self._keep.clear()

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def fd(self) -> int:
        """The ring's own file descriptor."""
        return lib.ut_ring_fd(self._ring)

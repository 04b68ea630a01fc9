"""Plain-descriptor helpers shared by the engines: what kind of file a
descriptor is, waiting on non-blocking descriptors, and blocking-style
read/write loops that survive EAGAIN."""

from __future__ import annotations

import fcntl
import os
import select
import stat
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

from .stats import Stats

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
PIPE_SIZE_WANTED = 1 << 20


def wait_ready(fd: int, writable: bool) -> None:
    """Block until ``fd`` is readable (or writable)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT if writable else select.POLLIN)
    poller.poll()


def _call_waiting(op: Callable[[int, Any], int], fd: int, arg: Any,
                  writable: bool) -> int:
    """``op(fd, arg)``, waiting out EAGAIN and retrying EINTR."""
    while True:
        try:
            return op(fd, arg)
        except BlockingIOError:
            wait_ready(fd, writable)
        except InterruptedError:
            pass


def write_all(fd: int, data: memoryview, stats: Optional[Stats] = None) -> None:
    """Write every byte of ``data`` to ``fd``, waiting out EAGAIN.

    Raises:
        OSError: the write failed (EPIPE, ENOSPC, EIO, ...).
    """
    view = memoryview(data)
    while view:
        n = _call_waiting(os.write, fd, view, True)
        if stats is not None:
            stats.count_syscall("write")
            stats.bytes_written += n
            if n < len(view):
                stats.short_writes += 1
        view = view[n:]


def read_into(fd: int, buf: bytearray, stats: Optional[Stats] = None) -> int:
    """One read(2) into ``buf``, waiting out EAGAIN; returns the count (0 at EOF)."""
    n = _call_waiting(os.readv, fd, [buf], False)
    if stats is not None:
        stats.count_syscall("read")
        stats.bytes_read += n
    return n


def enlarge_pipe(fd: int, st: os.stat_result) -> None:
    """Grow a pipe's buffer toward 1 MiB (fewer wake-ups); ignore refusals."""
    if not stat.S_ISFIFO(st.st_mode):
        return
    try:
        if fcntl.fcntl(fd, F_GETPIPE_SZ) < PIPE_SIZE_WANTED:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE_WANTED)
    except OSError:
        pass


def is_positional(st: os.stat_result) -> bool:
    """Can this file be read at explicit offsets, several blocks at once?

    Only regular files that claim a size: /proc and /sys files claim 0 and
    are read as streams until a read returns 0.
    """
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


#: offsets, lengths and buffer addresses of O_DIRECT reads are multiples of this
DIRECT_ALIGN = 4096


def is_direct(fd: int) -> bool:
    """Is ``fd`` open with O_DIRECT?"""
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


def drop_direct(fd: int, stats: Stats) -> bool:
    """Read the rest of ``fd`` through the page cache (an unaligned tail, a
    block size that is not a multiple of 4096, or EINVAL from a read).

    Returns True if it was direct (counted as direct_fallbacks).
    """
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_DIRECT:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        stats.count("direct_fallbacks")
        return True
    return False

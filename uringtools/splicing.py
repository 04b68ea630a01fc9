"""Zero-copy cat of regular files with IORING_OP_SPLICE.

When nothing transforms the bytes, a regular file need not pass through
our memory at all: the kernel moves page references from the file into a
pipe. Into a pipe (``uring-cat f | prog``) one splice per request does the
whole job; into /dev/null or a regular file a private pipe sits in between,
and each request is a linked pair file -> pipe -> output. The reading half
is flagged CQE_SKIP_SUCCESS, so a pair posts exactly one CQE: the write's,
or the read's own when it came up short (which cancels the write silently).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

from .errors import WriteError
from .fdio import F_GETPIPE_SZ, F_SETPIPE_SZ, PIPE_SIZE_WANTED
from .ring import (OP_POLL_ADD, OP_SPLICE, SPLICE_F_FD_IN_FIXED,
                   SQE_CQE_SKIP_SUCCESS, SQE_IO_LINK, FileRef, Ring, error)
from .stats import Stats

POLLOUT = 0x004
_NULL_DEVICE = os.makedev(1, 3)
_RETRY = (-errno.EAGAIN, -errno.EINTR, -errno.ECANCELED)

# user_data of our requests
_UD_IN, _UD_OUT, _UD_POLL = 11, 12, 13

DIRECT = "splice"            # file -> output pipe
VIA_PIPE = "splice via pipe"  # file -> private pipe -> output


def splice_mode(out_fd: int, out_st: os.stat_result) -> Optional[str]:
    """How splice can reach this output, or None when it cannot.

    Pipes take a splice directly; /dev/null and regular files (not
    O_APPEND, which splice refuses) through a private pipe. Terminals,
    sockets and other devices keep the read/write path.
    """
    mode = out_st.st_mode
    if stat.S_ISFIFO(mode):
        return DIRECT
    if stat.S_ISCHR(mode) and out_st.st_rdev == _NULL_DEVICE:
        return VIA_PIPE
    if stat.S_ISREG(mode):
        try:
            if fcntl.fcntl(out_fd, fcntl.F_GETFL) & os.O_APPEND:
                return None
        except OSError:
            return None
        return VIA_PIPE
    return None


class SpliceCopier:
    """Copy regular files onto one output with splice requests on ``ring``."""

    def __init__(self, ring: Ring, out: Optional[FileRef], mode: str,
                 stats: Stats) -> None:
        self.ring = ring
        self.out = out or FileRef(-1, 0, -1, -1)
        self.mode = mode
        self.stats = stats
        self.mid_r = self.mid_w = -1
        #: more private pipes, for pairs in flight (copy_range)
        self.spares: List[Optional[Tuple[int, int, int]]] = []
        if mode == VIA_PIPE:
            self.mid_r, self.mid_w = os.pipe2(os.O_CLOEXEC)
            _grow_pipe(self.mid_w)
            self.chunk = fcntl.fcntl(self.mid_w, F_GETPIPE_SZ)
        else:
            _grow_pipe(self.out.fd)
            self.chunk = fcntl.fcntl(self.out.fd, F_GETPIPE_SZ)

    def close(self) -> None:
        for fd in (self.mid_r, self.mid_w):
            if fd >= 0:
                os.close(fd)
        self.mid_r = self.mid_w = -1
        for k in range(len(self.spares)):
            self._drop_spare(k)

    def copy(self, src: FileRef, start: int, size: int) -> Tuple[Optional[str], int]:
        """Splice ``src`` from ``start`` until a read returns 0.

        ``size`` (from fstat) only sizes the requests; the end is where a
        splice returns 0, as with read(2).

        Returns:
            (reason the input failed or None, bytes copied).

        Raises:
            WriteError: the output refused the bytes.
        """
        offset = start
        in_fd = src.target
        in_flags = SPLICE_F_FD_IN_FIXED if src.sqe_flags else 0
        while True:
            length = self.chunk
            if offset < size:
                length = min(length, size - offset)
            if self.mode == DIRECT:
                res = self._direct(in_fd, in_flags, offset, length)
                if res < 0:
                    if res == -errno.EPIPE:
                        raise WriteError(errno.EPIPE, os.strerror(errno.EPIPE))
                    return error(res).strerror, offset - start
                if res == 0:
                    return None, offset - start
                self.stats.bytes_read += res
                self.stats.bytes_written += res
                if res < length:
                    self.stats.short_reads += 1
                offset += res
                continue
            moved, failure = self._via_pipe(in_fd, in_flags, offset, length)
            if failure is not None:
                return failure, offset - start
            if moved == 0:
                return None, offset - start
            offset += moved

    def copy_range(self, src: FileRef, dst: FileRef, offset: int, length: int,
                   chunk: int = 0, pairs: int = 1) -> Tuple[int, Optional[str]]:
        """Splice ``length`` bytes of ``src`` at ``offset`` into ``dst`` at
        the same offset, through private pipes (file to file: one copy,
        page cache to page cache, as copy_file_range would), at most
        ``chunk`` bytes (default: the pipe's size) per request.

        ``pairs`` > 1 keeps that many pairs in flight, each through a pipe
        of its own: the io-wq worker goes from one pair to the next without
        waiting for this thread to wake up and submit. The writes are
        positional, so their order does not matter.

        Returns:
            (bytes copied, reason the input failed or None); fewer bytes
            than asked and no reason means the source ended early.

        Raises:
            WriteError: the destination refused the bytes (ENOSPC, EIO).
        """
        if self.mode != VIA_PIPE:
            raise ValueError("copy_range needs the private pipe")
        in_flags = SPLICE_F_FD_IN_FIXED if src.sqe_flags else 0
        chunk = min(chunk, self.chunk) if chunk > 0 else self.chunk
        done = 0
        if pairs > 1 and length > chunk and self._spare_pipes(2):
            done, failure = self._pairs_in_flight(
                src.target, in_flags, dst, offset, length, chunk, pairs)
            if failure is not None:
                return done, failure
        # one pair at a time: all of it, or the rest from the first pair in
        # flight that did not move its whole chunk (short read at the end
        # of a shrunk file, short write, a retry)
        while done < length:
            want = min(chunk, length - done)
            moved, failure = self._via_pipe(src.target, in_flags, offset + done,
                                            want, dst, offset + done)
            if failure is not None:
                return done, failure
            if moved == 0:
                return done, None
            done += moved
        return done, None

    def _pairs_in_flight(self, in_fd: int, in_flags: int, dst: FileRef,
                         offset: int, length: int, chunk: int,
                         pairs: int) -> Tuple[int, Optional[str]]:
        """Up to ``pairs`` linked pairs in flight over pipes of their own.

        Stops issuing at the first pair that did not move its whole chunk,
        waits for the others, and drops the pipes that may hold bytes.

        Returns:
            (bytes from ``offset`` certainly copied, read failure or None).

        Raises:
            WriteError: the destination refused a pair's bytes.
        """
        ring, stats = self.ring, self.stats
        pipes = self._spare_pipes(pairs)
        chunk = min([chunk] + [cap for _, _, cap in pipes])
        free = list(range(len(pipes) - 1, -1, -1))
        flying: Dict[int, Tuple[int, int]] = {}
        end = offset + length
        next_off = offset
        first_bad = end + 1
        read_failure: Optional[str] = None
        write_failure: Optional[OSError] = None
        while True:
            while free and next_off < end and first_bad > end:
                k = free.pop()
                mid_r, mid_w, _ = pipes[k]
                want = min(chunk, end - next_off)
                ring.prep(OP_SPLICE, mid_w, next_off, want, -1,
                          (k << 8) | _UD_IN,
                          flags=SQE_IO_LINK | SQE_CQE_SKIP_SUCCESS,
                          op_flags=in_flags, splice_fd_in=in_fd)
                ring.prep(OP_SPLICE, dst.target, -1, want, next_off,
                          (k << 8) | _UD_OUT, flags=dst.sqe_flags,
                          splice_fd_in=mid_r)
                flying[k] = (next_off, want)
                next_off += want
            if not flying:
                break
            n = ring.wait(1)
            for i in range(n):
                ud, res = ring.cqe_user_data[i], ring.cqe_res[i]
                k = ud >> 8
                off, want = flying.pop(k)
                if ud & 0xFF == _UD_OUT and res == want:
                    stats.bytes_read += want
                    stats.bytes_written += want
                    free.append(k)
                    continue
                # this pair stopped short: its pipe may hold bytes
                self._drop_spare(k)
                first_bad = min(first_bad, off)
                if res < 0 and res not in _RETRY:
                    if ud & 0xFF == _UD_IN:
                        read_failure = read_failure or error(res).strerror
                    else:
                        write_failure = write_failure or error(res)
        if write_failure is not None:
            raise WriteError.of(write_failure)
        if first_bad > end:
            return length, None
        self.stats.resubmissions += 1
        return first_bad - offset, read_failure

    def _spare_pipes(self, count: int) -> List[Tuple[int, int, int]]:
        """``count`` private pipes for pairs in flight (made on first use)."""
        spares = self.spares
        while len(spares) < count:
            spares.append(None)
        for k in range(count):
            if spares[k] is None:
                try:
                    mid_r, mid_w = os.pipe2(os.O_CLOEXEC)
                except OSError as exc:
                    if exc.errno not in (errno.EMFILE, errno.ENFILE):
                        raise
                    break    # out of descriptors: fewer pairs in flight
                _grow_pipe(mid_w)
                spares[k] = (mid_r, mid_w, fcntl.fcntl(mid_w, F_GETPIPE_SZ))
        return [p for p in spares[:count] if p is not None]

    def _drop_spare(self, k: int) -> None:
        pipe = self.spares[k]
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])
            self.spares[k] = None

    # -- file -> output pipe ----------------------------------------------

    def _direct(self, in_fd: int, in_flags: int, offset: int, length: int) -> int:
        ring, out = self.ring, self.out
        while True:
            ring.prep(OP_SPLICE, out.target, offset, length, -1, _UD_OUT,
                      flags=out.sqe_flags, op_flags=in_flags,
                      splice_fd_in=in_fd)
            res = self._one()
            if res not in _RETRY:
                return res
            self._retry(res)

    # -- file -> private pipe -> output -----------------------------------

    def _via_pipe(self, in_fd: int, in_flags: int, offset: int, length: int,
                  out: Optional[FileRef] = None,
                  out_off: int = -1) -> Tuple[int, Optional[str]]:
        """One linked pair; returns (bytes moved, input failure).

        ``out_off`` -1 writes at the output's file position, else there.
        """
        ring = self.ring
        out = out or self.out
        while True:
            ring.prep(OP_SPLICE, self.mid_w, offset, length, -1, _UD_IN,
                      flags=SQE_IO_LINK | SQE_CQE_SKIP_SUCCESS,
                      op_flags=in_flags, splice_fd_in=in_fd)
            ring.prep(OP_SPLICE, out.target, -1, length, out_off, _UD_OUT,
                      flags=out.sqe_flags, splice_fd_in=self.mid_r)
            n = ring.wait(1)
            ud, res = ring.cqe_user_data[0], ring.cqe_res[0]
            if n != 1:
                raise RuntimeError("a splice pair posted more than one completion")
            if ud != _UD_IN:
                break
            # the read came up short or failed; its write was cancelled
            if res in _RETRY:
                self.stats.resubmissions += 1
                continue
            if res < 0:
                return 0, error(res).strerror
            self.stats.short_reads += 1
            self.stats.bytes_read += res
            self._drain_mid(res, out, out_off)
            return res, None
        self.stats.bytes_read += length
        if res == length:
            self.stats.bytes_written += res
            return res, None
        if res > 0:
            self.stats.bytes_written += res
            self.stats.short_writes += 1
        elif res not in _RETRY:
            raise WriteError.of(error(res))
        done = max(res, 0)
        self._drain_mid(length - done, out, out_off + done if out_off >= 0 else -1)
        return length, None

    def _drain_mid(self, pending: int, out: Optional[FileRef] = None,
                   out_off: int = -1) -> None:
        """Move ``pending`` bytes still in the private pipe to the output."""
        ring = self.ring
        out = out or self.out
        while pending > 0:
            ring.prep(OP_SPLICE, out.target, -1, pending, out_off, _UD_OUT,
                      flags=out.sqe_flags, splice_fd_in=self.mid_r)
            self.stats.resubmissions += 1
            res = self._one()
            if res in _RETRY:
                self._retry(res)
                continue
            if res <= 0:
                code = -res if res < 0 else errno.EIO
                raise WriteError(code, os.strerror(code))
            self.stats.bytes_written += res
            if res < pending:
                self.stats.short_writes += 1
            pending -= res
            if out_off >= 0:
                out_off += res

    # -- helpers -------------------------------------------------------------

    def _one(self) -> int:
        """Wait for the single request in flight; return its result."""
        ring = self.ring
        n = ring.wait(1)
        while n == 0:
            n = ring.wait(1)
        return int(ring.cqe_res[n - 1])

    def _retry(self, res: int) -> None:
        """Before resubmitting after EAGAIN, wait until the output has room."""
        self.stats.resubmissions += 1
        if res == -errno.EAGAIN:
            out = self.out
            self.ring.prep(OP_POLL_ADD, out.target, 0, 0, 0, _UD_POLL,
                           flags=out.sqe_flags, op_flags=POLLOUT)
            self._one()


def _grow_pipe(fd: int) -> None:
    try:
        if fcntl.fcntl(fd, F_GETPIPE_SZ) < PIPE_SIZE_WANTED:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE_WANTED)
    except OSError:
        pass

"""Zero-copy cat of regular files with IORING_OP_SPLICE.

When nothing transforms the bytes, a regular file need not pass through
our memory at all: the kernel moves page references from the file into a
pipe. Into a pipe (``uring-cat f | prog``) one splice per request does the
whole job; into /dev/null or a regular file a private pipe sits in between,
and each chunk is a linked pair file -> pipe -> output. Up to CHAIN_PAIRS
pairs go out as one linked chain in one submit, every request but the last
flagged CQE_SKIP_SUCCESS: the chain posts exactly one CQE, the last
write's, or that of the first request that failed or came up short (which
cancels the rest silently). Splices always run in io-wq workers; on a ring
without DEFER_TASKRUN the worker goes from one request of a chain to the
next by itself, where DEFER_TASKRUN hands every step back to this thread
(1 GiB into /dev/null, in-process: 62 ms a chain of 16 against 176 ms a
pair per enter on a DEFER_TASKRUN ring).
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
#: pairs (of a pipe's size each, 1 MiB) per linked chain: one submit, one
#: CQE and one io-wq hand-off per 16 MiB (bench/README.md, "Splice chains")
CHAIN_PAIRS = 16
#: every request of a chain but its last
_LINKED = SQE_IO_LINK | SQE_CQE_SKIP_SUCCESS
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
    """Copy regular files onto one output with splice requests on ``ring``.

    The ring should be set up without DEFER_TASKRUN (see the module's
    docstring) and hold 2 * CHAIN_PAIRS SQEs for the longest chains.
    """

    def __init__(self, ring: Ring, out: Optional[FileRef], mode: str,
                 stats: Stats) -> None:
        self.ring = ring
        #: the most pairs one chain takes: both halves of each in one submit
        self.chain_pairs = max(1, min(CHAIN_PAIRS, ring.entries // 2))
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
            if self.mode == VIA_PIPE:
                moved, failure = self._chain(
                    in_fd, in_flags, offset,
                    self._lengths(offset, size, self.chunk, self.chain_pairs))
                offset += moved
                if failure is not None:
                    return failure, offset - start
                if moved == 0:
                    return None, offset - start
                continue
            length = self.chunk
            if offset < size:
                length = min(length, size - offset)
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

    def copy_range(self, src: FileRef, dst: FileRef, offset: int, length: int,
                   chunk: int = 0, pipes: int = 1) -> Tuple[int, Optional[str]]:
        """Splice ``length`` bytes of ``src`` at ``offset`` into ``dst`` at
        the same offset, through private pipes (file to file: one copy,
        page cache to page cache, as copy_file_range would), at most
        ``chunk`` bytes (default: the pipe's size) per pair, in chains.

        ``pipes`` > 1 keeps that many chains in flight, each through a pipe
        of its own: while one worker writes a chain's chunks, another reads
        the next chain's into its pipe. The writes are positional, so their
        order does not matter.

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
        if pipes > 1 and length > chunk and self._spare_pipes(2):
            done, failure = self._chains_in_flight(
                src.target, in_flags, dst, offset, length, chunk, pipes)
            if failure is not None:
                return done, failure
        # one chain at a time: all of it, or the rest from the first chain
        # in flight that did not move its whole length (short read at the
        # end of a shrunk file, short write, a retry)
        end = offset + length
        while done < length:
            moved, failure = self._chain(
                src.target, in_flags, offset + done,
                self._lengths(offset + done, end, chunk, self.chain_pairs),
                dst, offset + done)
            done += moved
            if failure is not None:
                return done, failure
            if moved == 0:
                return done, None
        return done, None

    def _chains_in_flight(self, in_fd: int, in_flags: int, dst: FileRef,
                          offset: int, length: int, chunk: int,
                          pipes: int) -> Tuple[int, Optional[str]]:
        """Up to ``pipes`` chains in flight, each over a pipe of its own.

        Stops issuing at the first chain that did not move its whole
        length, waits for the others, and drops the pipes that may hold
        bytes.

        Returns:
            (bytes from ``offset`` certainly copied, read failure or None).

        Raises:
            WriteError: the destination refused a chain's bytes.
        """
        ring = self.ring
        slots = self._spare_pipes(pipes)
        spares = [self.spares[k] for k in slots]
        chunk = min([chunk] + [cap for _, _, cap in spares])  # type: ignore[misc]
        # every chain in flight has its SQEs in one submit
        per_chain = max(1, min(self.chain_pairs, ring.entries // (2 * len(spares))))
        free = list(range(len(spares) - 1, -1, -1))
        flying: Dict[int, Tuple[int, List[int]]] = {}
        end = offset + length
        next_off = offset
        first_bad = end + 1
        read_failure: Optional[str] = None
        write_failure: Optional[OSError] = None
        while True:
            while free and next_off < end and first_bad > end:
                k = free.pop()
                mid_r, mid_w, _ = spares[k]  # type: ignore[misc]
                lengths = self._lengths(next_off, end, chunk, per_chain)
                self._queue_chain(in_fd, in_flags, mid_r, mid_w, next_off,
                                  lengths, dst, next_off, k << 8)
                flying[k] = (next_off, lengths)
                next_off += sum(lengths)
            if not flying:
                break
            n = ring.wait(1)
            for i in range(n):
                ud, res = ring.cqe_user_data[i], ring.cqe_res[i]
                k = (ud >> 8) & 0xFF
                start, lengths = flying.pop(k)
                j = ud >> 16
                if ud & 0xFF == _UD_OUT and res == lengths[j]:
                    # only a chain's last write posts on success
                    free.append(k)
                    continue
                # this chain stopped short: its pipe may hold bytes
                self._drop_spare(slots[k])
                first_bad = min(first_bad, start + sum(lengths[:j]))
                if res < 0 and res not in _RETRY:
                    if ud & 0xFF == _UD_IN:
                        read_failure = read_failure or error(res).strerror
                    else:
                        write_failure = write_failure or error(res)
        # counted once, what is certainly in place: the chains past a
        # short one are copied again from there
        done = length if first_bad > end else first_bad - offset
        self.stats.bytes_read += done
        self.stats.bytes_written += done
        if write_failure is not None:
            raise WriteError.of(write_failure)
        if first_bad > end:
            return length, None
        self.stats.resubmissions += 1
        return done, read_failure

    def _spare_pipes(self, count: int) -> List[int]:
        """Up to ``count`` private pipes for chains in flight (made on first
        use): their indices in ``self.spares``."""
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
        return [k for k in range(count) if spares[k] is not None]

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

    @staticmethod
    def _lengths(offset: int, end: int, chunk: int, pairs: int) -> List[int]:
        """Chunk sizes for one chain from ``offset`` towards ``end``: at
        least one pair, a whole ``chunk`` once past ``end`` (the read that
        finds EOF, or bytes the file gained since fstat)."""
        if offset >= end:
            return [chunk]
        count = min(pairs, -(-(end - offset) // chunk))
        lengths = [chunk] * count
        lengths[-1] = min(chunk, end - offset - chunk * (count - 1))
        return lengths

    def _queue_chain(self, in_fd: int, in_flags: int, mid_r: int, mid_w: int,
                     offset: int, lengths: List[int], out: FileRef,
                     out_off: int, tag: int = 0) -> None:
        """Queue one linked chain of pairs file -> pipe -> output, a pair
        per length, all in the next submit.

        It posts exactly one CQE: the last write's, or the first failing
        or short request's (the rest are cancelled silently), whose
        user_data is ``tag`` | the pair's index << 16 | _UD_IN or _UD_OUT.
        ``out_off`` -1 writes at the output's file position, else there.
        """
        ring = self.ring
        if ring.room < 2 * len(lengths):
            ring.submit()   # a chain cut in two would run as two
        last = len(lengths) - 1
        for j, length in enumerate(lengths):
            ud = tag | j << 16
            ring.prep(OP_SPLICE, mid_w, offset, length, -1, ud | _UD_IN,
                      flags=_LINKED, op_flags=in_flags, splice_fd_in=in_fd)
            ring.prep(OP_SPLICE, out.target, -1, length, out_off, ud | _UD_OUT,
                      flags=out.sqe_flags | (_LINKED if j < last else 0),
                      splice_fd_in=mid_r)
            offset += length
            if out_off >= 0:
                out_off += length

    def _chain(self, in_fd: int, in_flags: int, offset: int,
               lengths: List[int], out: Optional[FileRef] = None,
               out_off: int = -1) -> Tuple[int, Optional[str]]:
        """One chain through the private pipe, waited for.

        Returns:
            (bytes moved, input failure or None); 0 bytes and no failure is
            the end of the input at ``offset``.

        Raises:
            WriteError: the output refused the bytes.
        """
        try:
            return self._chain_once(in_fd, in_flags, offset, lengths, out,
                                    out_off)
        except WriteError:
            # the pipe may still hold the failed pair's bytes: the next
            # file (cp goes on after a write error) must not get them
            self._renew_mid()
            raise

    def _chain_once(self, in_fd: int, in_flags: int, offset: int,
                    lengths: List[int], out: Optional[FileRef],
                    out_off: int) -> Tuple[int, Optional[str]]:
        ring, stats = self.ring, self.stats
        out = out or self.out
        while True:
            self._queue_chain(in_fd, in_flags, self.mid_r, self.mid_w, offset,
                              lengths, out, out_off)
            n = ring.wait(1)
            if n != 1:
                raise RuntimeError("a splice chain posted more than one completion")
            ud, res = ring.cqe_user_data[0], ring.cqe_res[0]
            j = ud >> 16
            moved = sum(lengths[:j])   # the pairs before j moved it all
            stats.bytes_read += moved
            stats.bytes_written += moved
            length = lengths[j]
            at = out_off + moved if out_off >= 0 else -1
            if ud & 0xFF == _UD_OUT:
                stats.bytes_read += length
                if res == length:
                    stats.bytes_written += res
                    return moved + res, None
                if res > 0:
                    stats.bytes_written += res
                    stats.short_writes += 1
                elif res not in _RETRY:
                    raise WriteError.of(error(res))
                written = max(res, 0)
                self._drain_mid(length - written, out,
                                at + written if at >= 0 else -1)
                return moved + length, None
            # a read failed or came up short; its write and the rest of
            # the chain were cancelled
            if res in _RETRY:
                stats.resubmissions += 1
                if moved:
                    return moved, None
                lengths = lengths[:1]   # retry the first pair on its own
                continue
            if res < 0:
                return moved, error(res).strerror
            stats.short_reads += 1
            stats.bytes_read += res
            self._drain_mid(res, out, at)
            return moved + res, None

    def _renew_mid(self) -> None:
        """Replace the private pipe with an empty one (closing both ends
        first, so the new one finds the descriptors it needs)."""
        for fd in (self.mid_r, self.mid_w):
            if fd >= 0:
                os.close(fd)
        self.mid_r = self.mid_w = -1
        try:
            self.mid_r, self.mid_w = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            return   # not usable: the owner makes another splicer
        _grow_pipe(self.mid_w)
        self.chunk = min(self.chunk, fcntl.fcntl(self.mid_w, F_GETPIPE_SZ))

    @property
    def usable(self) -> bool:
        """False once the private pipe could not be renewed."""
        return self.mode != VIA_PIPE or self.mid_r >= 0

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

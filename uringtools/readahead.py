"""Read-ahead: one file read into the slots of an arena, handed out in order.

cat writes the filled slots to its output, hash digests them; both drive
the same :class:`ReadAhead` and route its read completions to it. The caller
may queue its own requests on the same ring: user_data carries a kind in its
low KIND_BITS bits, K_READ for the reads (slot number above the kind), K_POLL
for the polls linked in front of retried requests (no handling needed);
kinds from K_CALLER on are the caller's.
"""

from __future__ import annotations

import errno
import os
from _collections import deque  # not collections: ~6 ms of start-up
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Deque, Optional, Tuple

from . import fdio
from .ring import (OP_POLL_ADD, OP_READ, OP_READ_FIXED, SQE_ASYNC,
                   SQE_IO_LINK, Arena, FileRef, Ring)
from .stats import Stats

KIND_BITS = 3
KIND_MASK = (1 << KIND_BITS) - 1
K_READ = 1
K_POLL = 2
K_CALLER = 3

POLLIN = 0x001

# slot states; a slot taken by the caller stays _FILLED until release()
_FREE, _READING, _FILLED, _END = range(4)
_RETRY = (-errno.EAGAIN, -errno.EINTR, -errno.ECANCELED)
_NOTHING = (0, 0, 0)
_UNBOUNDED = 1 << 62


def ring_with_arena(depth: int, block_size: int, stats: Stats,
                    extra: int, setup_flags: Optional[Tuple[int, ...]] = None
                    ) -> Tuple[Ring, Arena]:
    """A ring with room for ``depth`` reads, a poll linked to each, and
    ``extra`` requests of the caller, and an arena of ``depth`` slots
    registered on it (plain reads if refused: ring.buffers_registered).
    ``setup_flags``: as :class:`Ring` takes them (default: probed).

    Raises:
        UringUnavailable: io_uring cannot be set up here.
    """
    entries = 8
    while entries < 2 * depth + extra:
        entries *= 2
    ring = Ring(entries, stats=stats, setup_flags=setup_flags)
    try:
        arena = Arena(depth, block_size)
        ring.register_arena(arena)
    except BaseException:
        ring.close()
        raise
    return ring, arena


class ReadAhead:
    """Reads one file ahead into an arena's slots, hands them out in order.

    A regular file that claims a size (fdio.is_positional) gets a read at
    an explicit offset in flight per slot; a stream (pipe, tty, /proc file)
    one read at a time at its position. A short positional read means the
    blocks queued behind it were read from the wrong offsets: they are
    discarded and read again from where the short one ended. EOF is a read
    that returns 0. EAGAIN/EINTR/ECANCELED (and EINVAL on O_DIRECT, which
    then falls back to cached reads) re-queue the read, counted in
    stats.resubmissions; another error ends the file (``failure``).

    Args:
        ring: the ring the reads go through (read_fixed when it has the
            arena registered).
        arena: one slot per read in flight.
        src: how SQEs name the file.
        st: its fstat.
        stats: counters: bytes_read (as blocks are taken), short_reads,
            resubmissions, direct_fallbacks.
        bounded: queue no read beyond the size ``st`` gave, but for one at
            that offset to see EOF or growth; else read on until a read
            returns 0.
        direct: ``src`` is open O_DIRECT; unaligned offsets (or block size)
            fall back to cached reads.
        async_reads: flag positional reads IOSQE_ASYNC.
    """

    def __init__(self, ring: Ring, arena: Arena, src: FileRef,
                 st: os.stat_result, stats: Stats, *, bounded: bool = True,
                 direct: bool = False, async_reads: bool = False) -> None:
        self.ring, self.src, self.stats = ring, src, stats
        self.fd, self.target = src.fd, src.target
        self.base = arena.base
        self.bs = bs = arena.slot_size
        self.depth = depth = arena.slots
        self.positional = positional = fdio.is_positional(st)
        #: where reading started (-1 for a stream)
        self.start = os.lseek(self.fd, 0, os.SEEK_CUR) if positional else -1
        self.offset = self.start          # of the next read queued
        self.step = bs if positional else 0
        self.limit = (self.start + st.st_size if positional and bounded
                      else _UNBOUNDED)
        self.max_reads = depth if positional else 1
        self.op = OP_READ_FIXED if ring.buffers_registered else OP_READ
        self.flags = src.sqe_flags | (SQE_ASYNC if async_reads and positional
                                      else 0)
        if direct and (not positional or bs % fdio.DIRECT_ALIGN
                       or self.start % fdio.DIRECT_ALIGN):
            fdio.drop_direct(self.fd, stats)
            direct = False
        self.direct = direct
        self.state = [_FREE] * depth
        self.length = [0] * depth
        self.slot_off = [0] * depth
        self.discard = [False] * depth
        self.order: Deque[int] = deque()  # slots queued, in file order
        self.next_slot = 0
        #: reads in flight, discarded ones included
        self.reads = 0
        #: EOF or an error seen: queue no more reads
        self.ended = False
        #: every block has been taken: EOF or ``failure`` reached
        self.done = False
        #: errno of the first read that failed, else 0
        self.failure = 0
        #: bytes handed to the caller
        self.taken = 0

    def fill(self) -> bool:
        """Queue reads into the free slots, in cyclic order; True if any."""
        state = self.state
        s = self.next_slot
        if self.ended or state[s] != _FREE:
            return False
        slot_off, order = self.slot_off, self.order
        max_reads, limit, step = self.max_reads, self.limit, self.step
        queued = False
        while (self.reads < max_reads and state[s] == _FREE
               and self.offset <= limit):
            state[s] = _READING
            slot_off[s] = self.offset
            self.offset += step
            self._prep(s)
            self.reads += 1
            order.append(s)
            s = self.next_slot = (s + 1) % self.depth
            queued = True
        return queued

    def _prep(self, s: int) -> None:
        off = self.slot_off[s]
        if self.direct and off % fdio.DIRECT_ALIGN:
            fdio.drop_direct(self.fd, self.stats)
            self.direct = False
        self.ring.prep(self.op, self.target, self.base + s * self.bs, self.bs,
                       off, (s << KIND_BITS) | K_READ, flags=self.flags)

    def complete(self, user_data: int, res: int) -> None:
        """Take in the completion of one read (user_data kind K_READ)."""
        s = user_data >> KIND_BITS
        self.reads -= 1
        if self.discard[s]:
            self.discard[s] = False
            self.state[s] = _FREE
        elif res > 0:
            self.length[s] = res
            self.state[s] = _FILLED
            off = self.slot_off[s]
            if off + res > self.limit:
                self.limit = off + res    # the file grew
            if res < self.bs:
                self.stats.short_reads += 1
                if self.positional:
                    # the blocks queued after this one were read from the
                    # wrong offsets: read them again from where it ended
                    self._drop_after(s)
                    self.offset = off + res
                    self.ended = self.failure != 0
        elif res == 0:
            self.state[s] = _END
            self.ended = True
        elif res in _RETRY or (res == -errno.EINVAL and self.direct):
            self.stats.resubmissions += 1
            if res == -errno.EINVAL:
                # this filesystem refuses the direct read
                fdio.drop_direct(self.fd, self.stats)
                self.direct = False
            if res == -errno.EAGAIN:
                src = self.src
                self.ring.prep(OP_POLL_ADD, src.target, 0, 0, 0, K_POLL,
                               flags=src.sqe_flags | SQE_IO_LINK,
                               op_flags=POLLIN)
            self._prep(s)
            self.reads += 1
        else:
            self.state[s] = _END
            self.failure = self.failure or -res
            self.ended = True

    def _drop_after(self, keep: int) -> None:
        """Forget every slot queued after slot ``keep`` (all if not queued)."""
        order, state, discard = self.order, self.state, self.discard
        while order and order[-1] != keep:
            t = order.pop()
            if state[t] == _READING:
                discard[t] = True
            else:
                state[t] = _FREE
        self.next_slot = (keep + 1) % self.depth

    def take(self, run: bool = False) -> Tuple[int, int, int]:
        """Take the next filled block in file order; it is the caller's until
        :meth:`release`.

        Args:
            run: also take the filled blocks right behind it in the arena,
                each after a full one (one write can carry them all).

        Returns:
            (first slot, blocks, bytes); 0 blocks when the next one is not
            read yet, or when ``done``.
        """
        order = self.order
        if order:
            state = self.state
            s = order[0]
            if state[s] == _FILLED:
                order.popleft()
                length = self.length
                nbytes = length[s]
                n = 1
                if run:
                    bs, last = self.bs, s
                    while (order and order[0] == last + 1
                           and state[last + 1] == _FILLED
                           and length[last] == bs):
                        last = order.popleft()
                        nbytes += length[last]
                    n = last - s + 1
                self.taken += nbytes
                self.stats.bytes_read += nbytes
                return s, n, nbytes
            if state[s] == _END:
                order.popleft()
                state[s] = _FREE
                self._drop_after(-1)
                self.ended = self.done = True
        elif self.failure and not self.reads:
            # the failed read was dropped after an earlier short one
            self.ended = self.done = True
        return _NOTHING

    def release(self, first: int, n: int = 1) -> None:
        """Give back ``n`` taken slots from ``first`` to be read into."""
        state = self.state
        if n == 1:
            state[first] = _FREE
        else:
            for t in range(first, first + n):
                state[t] = _FREE

"""Small files copied as whole chains on the ring, many files per submit.

Each file is one linked chain, so a batch of files costs one
``io_uring_enter`` instead of about seven system calls per file::

    openat(src) -> openat(temporary, O_CREAT|O_EXCL) -> read -> write
                -> renameat(temporary, destination)

or, for a fresh file (its directory made by this run, see FileJob), four
requests: the destination itself is created, and there is no rename::

    openat(src) -> openat(destination, O_CREAT|O_EXCL) -> read -> write

Both files are opened straight into slots of the registered file table
(openat_direct: no process descriptors, so ``ulimit -n`` is no limit), and
every request but the last is flagged CQE_SKIP_SUCCESS, so a chain posts
exactly one completion: the last request's on success, or the failing
request's (which cancels the rest, rename included: a file is renamed into
place only when all of it was written). A file whose chain fails for any
reason (a short write included) has its temporary or fresh file removed and
is copied again by the plain engine, which reports
GNU's message (a vanished source, a short read, ENOSPC...).

Two batches are in flight at a time: the kernel runs one while the tree walk
plans the next. The ring is set up without DEFER_TASKRUN, so an io-wq worker
that finishes the O_CREAT open runs the rest of the chain itself, on the other
core, instead of waiting for this thread to enter the kernel.
"""

from __future__ import annotations

import errno
import os
import resource
import struct
import sys
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Callable, List, Optional

from . import fdio
from ._uring import ffi
from .copy import UMASK, FileCopier, FileJob
from .ring import (OP_CLOSE, OP_OPENAT, OP_READ, OP_RENAMEAT, OP_WRITE,
                   PACKED_SQE, SETUP_COOP_TASKRUN, SQE_CQE_SKIP_SUCCESS,
                   SQE_FIXED_FILE, SQE_IO_LINK, Arena, Ring)

AT_FDCWD = -100
#: files up to this size take the chain path (one read, one write)
SMALL_MAX = 64 << 10
#: files per batch
BATCH_FILES = 128
#: batches in flight (each with its region of the arena and the file table:
#: two table slots per file)
FLYING = 2
#: bytes of buffer per batch (the arena holds two)
BATCH_BYTES = 1 << 20
_ALIGN = 4096

_OPEN_SRC = os.O_RDONLY          # no O_CLOEXEC: EINVAL with direct slots
_OPEN_TMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_LINK = SQE_IO_LINK | SQE_CQE_SKIP_SUCCESS
_LINK_FIXED = _LINK | SQE_FIXED_FILE
_AT_FDCWD_U32 = AT_FDCWD & 0xFFFFFFFF
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()
_OPEN_READ_WRITE = struct.Struct(PACKED_SQE + PACKED_SQE[1:] * 3).pack
_RENAME = struct.Struct(PACKED_SQE).pack


#: chain steps, in the low 3 bits of user_data
_S_OPEN_SRC, _S_OPEN_TMP, _S_READ, _S_WRITE, _S_RENAME, _S_CLOSE = range(6)
_STEP_NAMES = ("openat", "openat", "read", "write", "renameat", "close")


class _Batch:
    """Files whose chains were submitted together."""

    __slots__ = ("first", "jobs", "tmps", "paths", "res", "step", "left",
                 "region", "keep")

    def __init__(self, first: int, region: int) -> None:
        self.first = first               # user_data sequence of jobs[0]
        self.region = region             # which region of arena and table
        self.jobs: List[FileJob] = []
        self.tmps: List[str] = []
        self.paths: List[str] = []       # src, tmp, dst per file
        self.res: List[int] = []
        self.step: List[int] = []
        self.left = 0                    # chains without their completion
        self.keep: object = None         # the path bytes the kernel reads


class BatchCopier:
    """Copies small new files as ring chains; see the module docstring.

    Args:
        files: opens, names and cleans up temporaries; reports errors.
        fallback: copies one job the plain way (after a chain failed).
        max_files: files per batch; fewer under a low RLIMIT_NOFILE.

    The ring is set up by :meth:`ready` on first use; if that is refused
    (memory, RLIMIT_NOFILE), every file is left to the plain engine.
    """

    def __init__(self, files: FileCopier, fallback: Callable[[FileJob], None],
                 max_files: int = BATCH_FILES) -> None:
        self.files = files
        self.stats = files.stats
        self.fallback = fallback
        opts = files.options
        self.enabled = not (opts.preserve or opts.fsync
                            or opts.sparse == "always")
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            # the table size is checked against RLIMIT_NOFILE
            max_files = min(max_files, soft // (2 * FLYING))
        self.enabled = self.enabled and max_files >= 1
        self.max_files = max_files
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.ring: Optional[Ring] = None
        self.seq = 0
        self.batch: Optional[_Batch] = None   # being filled
        self.used = 0                           # its buffer bytes
        self.flying: List[_Batch] = []          # submitted, oldest first
        self.closes = 0                         # CLOSEs in flight
        self.region_files = [0] * FLYING        # most files a region held

    def ready(self) -> bool:
        """Set the ring up on first use; False (noted in stats) if refused."""
        if self.ring is not None:
            return True
        if not self.enabled:
            return False
        max_files = self.max_files
        entries = 16
        while entries < 6 * max_files:
            entries *= 2
        stats = self.stats
        try:
            # no DEFER_TASKRUN: the io-wq worker carries a chain to its end;
            # COOP_TASKRUN: what it leaves for this thread (freeing requests,
            # posting completions) waits for our next enter instead of
            # interrupting the tree walk with an IPI each time (tmpfs, 10k
            # files: 254 ms instead of 292). The --stats lines describe the
            # main ring, this one goes in extra.
            ring = Ring(entries, stats=stats, describe=False,
                        setup_flags=(SETUP_COOP_TASKRUN, 0))
        except OSError as exc:
            self._refused(exc)
            return False
        try:
            # plain buffers: pinning them costs more than small
            # files gain from fixed ones
            self.arena = Arena(FLYING, BATCH_BYTES)
            if not ring.register_file_table(2 * FLYING * max_files):
                raise OSError(errno.EMFILE, "no registered file table")
        except OSError as exc:
            ring.close()
            self._refused(exc)
            return False
        stats.extra["chains"] = (
            f"{max_files} files x {FLYING} batches, "
            f"table of {2 * FLYING * max_files}")
        self.ring = ring
        self.stats.extra["chain_batches"] = 0
        return True

    def _refused(self, exc: OSError) -> None:
        self.enabled = False
        self.stats.extra["chains"] = f"off: {exc.strerror or exc}"

    # -- planning -------------------------------------------------------------

    def takes(self, job: FileJob) -> bool:
        """Whether ``job`` can be copied as one chain."""
        if not self.enabled or job.in_place:
            return False
        st = job.src_st
        size = st.st_size
        if size > SMALL_MAX or not fdio.is_positional(st):
            return False     # size 0 too: it may be a /proc-like file
        if size and st.st_blocks * 512 < size and self.files.options.sparse != "never":
            return False     # holes: the plain engine looks for them
        if job.mode & 0o777 & ~UMASK != job.mode:
            return False     # needs an fchmod after the open
        old = job.old_st
        if old is not None and (old.st_uid, old.st_gid) != (self.euid, self.egid):
            return False     # needs an fchown
        return True

    def add(self, job: FileJob) -> None:
        """Plan ``job`` into the current batch (submitting when it is full)."""
        size = job.src_st.st_size
        need = (size + _ALIGN - 1) & -_ALIGN
        batch = self.batch
        if batch is not None and (len(batch.jobs) == self.max_files
                                  or self.used + need > BATCH_BYTES):
            self.launch()
            batch = None
        if batch is None:
            if len(self.flying) == FLYING:
                self._complete(self.flying[0])
            region = (self.flying[-1].region + 1) % FLYING if self.flying else 0
            batch = self.batch = _Batch(self.seq, region)
            self.used = 0
        if job.fresh:
            tmp = job.target
        else:
            files = self.files
            head, sep, tail = job.target.rpartition("/")
            files._serial += 1
            tmp = f"{head}{sep}.{tail[:180]}.ucp-{files._tag}{files._serial:x}"
        batch.jobs.append(job)
        batch.tmps.append(tmp)
        batch.paths += (job.src, tmp, job.target)
        batch.res.append(0)
        batch.step.append(-1)
        self.used += need
        self.seq += 1

    def launch(self) -> None:
        """Queue the current batch's chains and submit them (one enter)."""
        batch = self.batch
        if batch is None:
            return
        self.batch = None
        ring = self.ring
        assert ring is not None
        blob = bytearray(("\0".join(batch.paths) + "\0").encode(
            _FS_ENCODING, _FS_ERRORS))
        lens = [n + 1 for n in map(len, blob.split(b"\0"))]
        cdata = ffi.from_buffer(blob)
        batch.keep = (blob, cdata)
        addr = int(ffi.cast("uintptr_t", cdata))
        buf = self.arena.addr(batch.region)
        slot = batch.region * 2 * self.max_files
        ud = batch.first << 3
        self.files.temps.update(batch.tmps)   # before the kernel creates them
        sqes: List[bytes] = []
        k = 0
        renames = 0
        for job in batch.jobs:
            size = job.src_st.st_size
            fresh = job.fresh
            a_src = addr
            a_tmp = a_src + lens[k]
            a_dst = a_tmp + lens[k + 1]
            addr = a_dst + lens[k + 2]
            k += 3
            sqes.append(_OPEN_READ_WRITE(
                OP_OPENAT, _LINK, 0, AT_FDCWD, 0, _OPEN_SRC, a_src, 0, 0,
                slot + 1, 0, ud | _S_OPEN_SRC,
                OP_OPENAT, _LINK, 0, AT_FDCWD, job.mode & 0o777, _OPEN_TMP,
                a_dst if fresh else a_tmp, 0, 0, slot + 2, 0, ud | _S_OPEN_TMP,
                OP_READ, _LINK_FIXED, 0, slot, size, 0, buf, 0, 0, 0, 0,
                ud | _S_READ,
                OP_WRITE, SQE_FIXED_FILE if fresh else _LINK_FIXED, 0,
                slot + 1, size, 0, buf, 0, 0, 0, 0, ud | _S_WRITE))
            if not fresh:
                renames += 1
                sqes.append(_RENAME(
                    OP_RENAMEAT, 0, 0, AT_FDCWD, _AT_FDCWD_U32, 0, a_tmp,
                    a_dst, 0, 0, 0, ud | _S_RENAME))
            buf += (size + _ALIGN - 1) & -_ALIGN
            ud += 8
            slot += 2
        chains = len(batch.jobs)
        # every request but each chain's last is CQE_SKIP_SUCCESS
        ring.queue_packed(b"".join(sqes), 4 * chains + renames,
                          3 * chains + renames)
        batch.left = len(batch.jobs)
        r = batch.region
        self.region_files[r] = max(self.region_files[r], batch.left)
        ring.submit()
        self.flying.append(batch)
        self.stats.extra["chain_batches"] += 1

    # -- completion -------------------------------------------------------------

    def _reap(self, wait_nr: int) -> None:
        """One enter waiting for ``wait_nr`` completions; route them all."""
        ring = self.ring
        assert ring is not None   # reaping: batches are in flight
        n = ring.wait(min(wait_nr, ring.in_flight))
        uds, ress = ring.cqe_user_data, ring.cqe_res
        flying = self.flying
        for k in range(n):
            ud = uds[k]
            step = ud & 7
            if step == _S_CLOSE:
                self.closes -= 1
                continue
            seq = ud >> 3
            for batch in flying:
                i = seq - batch.first
                if 0 <= i < len(batch.jobs):
                    batch.step[i] = step
                    batch.res[i] = ress[k]
                    batch.left -= 1
                    break

    def _complete(self, batch: _Batch) -> None:
        """Wait for every chain of ``batch``; finish its files in order."""
        while batch.left:
            self._reap(batch.left)
        self.flying.remove(batch)
        files, stats = self.files, self.stats
        temps = files.temps
        failed: List[int] = []
        for i, job in enumerate(batch.jobs):
            step, res = batch.step[i], batch.res[i]
            if (res == 0 and step == _S_RENAME) or (
                    step == _S_WRITE and job.fresh and res == job.src_st.st_size):
                temps.discard(batch.tmps[i])
                size = job.src_st.st_size
                stats.files += 1
                stats.bytes_read += size
                stats.bytes_written += size
                if files.on_progress is not None:
                    files.progress(size)
            else:
                failed.append(i)
        batch.keep = None
        if failed:
            self._retry(batch, failed)

    def _retry(self, batch: _Batch, failed: List[int]) -> None:
        """Close the failed chains' slots, drop their temporaries, copy again."""
        ring, files = self.ring, self.files
        assert ring is not None   # the batch completed on it
        base = batch.region * 2 * self.max_files
        for i in failed:
            for slot in (base + 2 * i, base + 2 * i + 1):
                if ring.room < 1:
                    ring.submit()
                ring.prep(OP_CLOSE, 0, 0, 0, 0, _S_CLOSE, file_index=slot + 1)
                self.closes += 1
        while self.closes:
            self._reap(1)
        extra = self.stats.extra
        for i in failed:
            step = batch.step[i]
            tmp = batch.tmps[i]
            key = f"chain_failed_{_STEP_NAMES[step]}"
            extra[key] = extra.get(key, 0) + 1
            # the temporary exists once its open succeeded
            if step > _S_OPEN_TMP:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            files.temps.discard(tmp)
            self.fallback(batch.jobs[i])

    def drain(self) -> None:
        """Submit what is planned and finish every batch, in order."""
        self.launch()
        while self.flying:
            self._complete(self.flying[0])

    def close(self) -> None:
        """Finish what is in flight, close every slot, close the ring.

        After an error or a signal the chains in flight are still waited
        for: a torn-down ring could create a temporary after the clean-up
        removed the ones it knew of.
        """
        ring = self.ring
        if ring is None:
            return
        self.ring = None
        self.enabled = False
        try:
            while ring.in_flight:
                ring.wait(1)
            for r in range(FLYING):
                base = r * 2 * self.max_files
                for slot in range(base, base + 2 * self.region_files[r]):
                    if ring.room < 1:
                        ring.submit()
                    ring.prep(OP_CLOSE, 0, 0, 0, 0, _S_CLOSE,
                              file_index=slot + 1)
            ring.submit()
            while ring.in_flight:
                ring.wait(1)
        finally:
            ring.close()

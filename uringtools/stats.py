"""Counters kept while the work runs. Nothing here is estimated."""

from __future__ import annotations

import os
import time
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


class Stats:
    """What the ring (or the sync loop) and the pipeline actually did.

    A plain class rather than a dataclass: importing dataclasses costs
    start-up time every command pays.
    """

    def __init__(self, engine: str = "uring", command: str = "",
                 block_size: int = 0, queue_depth: int = 0) -> None:
        self.engine = engine
        self.command = command
        self.block_size = block_size
        self.queue_depth = queue_depth
        self.setup_flags: List[str] = []
        self.registered_buffers = False
        self.registered_buffers_note = ""
        self.registered_files = 0
        self.registered_files_note = ""
        self.fallback_reason = ""
        self.sqes = 0
        self.cqes = 0
        self.enters = 0
        self.enter_retries = 0
        self.ops: Dict[str, int] = {}
        self.syscalls: Dict[str, int] = {}
        self.bytes_read = 0
        self.bytes_written = 0
        self.short_reads = 0
        self.short_writes = 0
        self.resubmissions = 0
        self.max_in_flight = 0
        self.files = 0
        self.errors = 0
        self.elapsed_s = 0.0
        self.cpu_user_s = 0.0
        self.cpu_sys_s = 0.0
        self.extra: Dict[str, Any] = {}
        self._t0 = 0.0
        self._cpu0: Optional[os.times_result] = None

    def start(self) -> None:
        """Mark the start of the measured work."""
        self._t0 = time.perf_counter()
        self._cpu0 = os.times()

    def stop(self) -> None:
        """Mark the end of the measured work: wall and CPU time since start()."""
        if self._cpu0 is None:
            return
        self.elapsed_s = time.perf_counter() - self._t0
        now = os.times()
        self.cpu_user_s = now.user - self._cpu0.user
        self.cpu_sys_s = now.system - self._cpu0.system

    def count(self, key: str, n: int = 1) -> None:
        """Add to a named counter in ``extra`` (shown by --stats)."""
        self.extra[key] = self.extra.get(key, 0) + n

    def count_syscall(self, name: str, n: int = 1) -> None:
        """Count a syscall the sync engine (or set-up) made."""
        self.syscalls[name] = self.syscalls.get(name, 0) + n

    def merge(self, other: "Stats") -> None:
        """Add another Stats' counters into this one (worker threads).

        Numeric ``extra`` entries are counters and add up; other entries are
        notes, and the first one seen is kept.
        """
        for name in ("sqes", "cqes", "enters", "enter_retries", "bytes_read",
                     "bytes_written", "short_reads", "short_writes",
                     "resubmissions", "files", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_in_flight = max(self.max_in_flight, other.max_in_flight)
        for src, dst in ((other.ops, self.ops), (other.syscalls, self.syscalls)):
            for key, value in src.items():
                dst[key] = dst.get(key, 0) + value
        for key, value in other.extra.items():
            mine = self.extra.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and isinstance(mine, (int, float)):
                self.extra[key] = mine + value   # counters add up
            elif key not in self.extra:
                self.extra[key] = value          # notes: the first one stands

    def classic_syscalls(self) -> int:
        """read+write calls a one-block-at-a-time loop makes for these bytes.

        Each block of input costs one read and one write, plus the read
        that sees end of file for each file.
        """
        bs = self.block_size or 1
        reads = -(-self.bytes_read // bs) + self.files
        writes = -(-self.bytes_written // bs)
        return reads + writes

    def to_dict(self) -> Dict[str, Any]:
        """The counters as a JSON-ready dict."""
        data: Dict[str, Any] = {
            key: value for key, value in self.__dict__.items()
            if not key.startswith("_")
        }
        data["throughput_bytes_per_s"] = (
            max(self.bytes_read, self.bytes_written) / self.elapsed_s
            if self.elapsed_s > 0 else 0.0
        )
        data["sqes_per_enter"] = self.sqes / self.enters if self.enters else 0.0
        data["classic_syscalls"] = self.classic_syscalls()
        return data

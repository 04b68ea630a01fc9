"""Everything rich: the --stats table and the --progress bar. Imported only
when one of them is shown."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress,
                           TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

from ..stats import Stats


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return str(n)


def print_stats_table(stats: Stats) -> None:
    """Render the counters as a table on stderr."""
    console = Console(stderr=True)
    data = stats.to_dict()
    table = Table(title=f"uringtools {stats.command or ''} statistics".replace("  ", " "),
                  show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    uring = stats.engine == "uring"

    def row(name: str, value: object) -> None:
        table.add_row(name, str(value))

    row("engine", stats.engine + (f" ({stats.fallback_reason})"
                                  if stats.fallback_reason else ""))
    row("queue depth x block size",
        f"{stats.queue_depth} x {_bytes(stats.block_size)}")
    if uring:
        row("setup flags", ", ".join(stats.setup_flags) or "none")
        row("registered buffers",
            stats.registered_buffers_note if stats.registered_buffers
            else f"no: {stats.registered_buffers_note or 'not attempted'}")
        row("registered files",
            f"{stats.registered_files} ({stats.registered_files_note})"
            if stats.registered_files_note else str(stats.registered_files))
        for op, count in sorted(stats.ops.items()):
            row(f"SQEs: {op}", f"{count:,}")
        row("SQEs", f"{stats.sqes:,}")
        row("CQEs", f"{stats.cqes:,}")
        row("io_uring_enter calls", f"{stats.enters:,}")
        row("SQEs per enter", f"{data['sqes_per_enter']:.2f}")
        row("most requests in flight", stats.max_in_flight)
        row("enter retries (EINTR/EAGAIN)", stats.enter_retries)
    for call, count in sorted(stats.syscalls.items()):
        row(f"syscalls: {call}", f"{count:,}")
    for key, value in sorted(stats.extra.items()):
        row(key.replace("_", " "), value)
    row("files", stats.files)
    row("bytes read", f"{stats.bytes_read:,}")
    row("bytes written", f"{stats.bytes_written:,}")
    row("throughput", f"{_bytes(data['throughput_bytes_per_s'])}/s")
    row("short reads / writes", f"{stats.short_reads} / {stats.short_writes}")
    row("resubmissions", stats.resubmissions)
    row("wall / user / sys", f"{stats.elapsed_s:.3f} s / {stats.cpu_user_s:.3f} s"
        f" / {stats.cpu_sys_s:.3f} s")
    classic = stats.classic_syscalls()
    made = stats.enters + sum(stats.syscalls.values()) if uring \
        else sum(stats.syscalls.values())
    row("syscalls made (I/O)", f"{made:,}")
    row("a read/write loop would make", f"{classic:,}")
    console.print(table)


class ProgressBar:
    """A transient byte-count bar on stderr, fed with the bytes the pipeline
    reports; :meth:`advance` and :meth:`add_total` may be called from any
    thread."""

    def __init__(self, description: str, total: int = 0) -> None:
        self._lock = threading.Lock()
        console = Console(stderr=True)
        # a transient bar cannot be erased from a file or a pipe: there it
        # draws nothing (not even rich's closing blank line)
        self.progress = Progress(
            "[progress.description]{task.description}", BarColumn(),
            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=console, redirect_stdout=False, redirect_stderr=False,
            transient=True, disable=not console.is_terminal)
        self.task = self.progress.add_task(description, total=total or None)
        self.total = total
        self.found = 0
        self.progress.start()

    def advance(self, n: int) -> None:
        """``n`` more bytes done."""
        with self._lock:
            self.progress.advance(self.task, n)

    def add_total(self, n: int) -> None:
        """``n`` more bytes found to do; the total grows once they exceed
        the one given at the start."""
        with self._lock:
            self.found += n
            if self.found > self.total:
                self.total = self.found
                self.progress.update(self.task, total=self.total)

    def close(self) -> None:
        """Stop and erase the bar."""
        self.progress.stop()

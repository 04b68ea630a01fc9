"""uring-cat: GNU cat over io_uring.

The work lives in :func:`run_cat`, which needs no Click: ``uring-cat FILE...``
without options skips importing Click altogether (start-up time is part of
the product). Options go through the Click command in cat_command.py.
"""

from __future__ import annotations

import errno
import signal
import sys
from typing import Optional, Sequence

from ..cat import WriteError, cat_files
from ..catfmt import CatFormat
from ..stats import Stats
from .common import (Reporter, Settings, die_of_signal, emit_stats,
                     guard_std_fds, run_main, with_engine)

PROG = "uring-cat"


def run_cat(files: Sequence[str], fmt: CatFormat, settings: Settings,
            splice: bool = True, direct: bool = False) -> None:
    """Run uring-cat on ``files`` and exit with GNU cat's status."""
    reporter = Reporter(PROG)
    closed = guard_std_fds()

    def body() -> int:
        names = list(files) or ["-"]
        if 1 in closed:
            reporter.error("standard output", "Bad file descriptor")
            return 1
        stats = Stats(command="cat")

        def work(engine: str) -> bool:
            return cat_files(names, 1, engine=engine,
                             block_size=settings.block_size,
                             queue_depth=settings.queue_depth, fmt=fmt,
                             stats=stats, on_error=reporter.error,
                             splice=splice, direct=direct,
                             stdin_closed=0 in closed)

        try:
            with_engine(settings, reporter, stats, work)
        except WriteError as exc:
            if exc.errno == errno.EPIPE:
                die_of_signal(signal.SIGPIPE)
            reporter.error(None, f"write error: {exc.strerror}")
        emit_stats(settings, stats)
        if 0 in closed and "-" in names:
            # GNU closes stdin at exit and reports that it could not
            reporter.error("closing standard input", "Bad file descriptor")
        return reporter.status

    run_main(reporter, body)


def _operands_only(argv: Sequence[str]) -> Optional[Sequence[str]]:
    """argv when it holds only file operands (no options), else None."""
    for arg in argv:
        if arg.startswith("-") and arg != "-":
            return None
    return argv


def main() -> None:
    """Entry point of the ``uring-cat`` script."""
    operands = _operands_only(sys.argv[1:])
    if operands is not None:
        run_cat(operands, CatFormat(), Settings())
    from .cat_command import cat_command

    cat_command.main(prog_name=PROG)

"""uring-cat: GNU cat over io_uring."""

from __future__ import annotations

import errno
import signal
from typing import Tuple

import click

from ..cat import WriteError, cat_files
from ..catfmt import CatFormat
from ..stats import Stats
from .common import (Reporter, Settings, die_of_signal, emit_stats,
                     engine_options, guard_std_fds, run_main, with_engine)

PROG = "uring-cat"


@click.command(name="cat", context_settings={"help_option_names": ["--help"]})
@click.option("-A", "--show-all", is_flag=True, help="equivalent to -vET")
@click.option("-b", "--number-nonblank", is_flag=True,
              help="number nonempty output lines, overrides -n")
@click.option("-e", "show_e", is_flag=True, help="equivalent to -vE")
@click.option("-E", "--show-ends", is_flag=True,
              help="display $ at end of each line")
@click.option("-n", "--number", is_flag=True, help="number all output lines")
@click.option("-s", "--squeeze-blank", is_flag=True,
              help="suppress repeated empty output lines")
@click.option("-t", "show_t", is_flag=True, help="equivalent to -vT")
@click.option("-T", "--show-tabs", is_flag=True,
              help="display TAB characters as ^I")
@click.option("-u", "unbuffered", is_flag=True, help="(ignored)")
@click.option("-v", "--show-nonprinting", is_flag=True,
              help="use ^ and M- notation, except for LFD and TAB")
@click.argument("files", nargs=-1)
@engine_options
def cat_command(files: Tuple[str, ...], show_all: bool, number_nonblank: bool,
                show_e: bool, show_ends: bool, number: bool,
                squeeze_blank: bool, show_t: bool, show_tabs: bool,
                unbuffered: bool, show_nonprinting: bool,
                settings: Settings) -> None:
    """Concatenate FILE(s) to standard output, through io_uring.

    With no FILE, or when FILE is -, read standard input.
    """
    fmt = CatFormat(
        number=number,
        number_nonblank=number_nonblank,
        squeeze_blank=squeeze_blank,
        show_ends=show_ends or show_all or show_e,
        show_tabs=show_tabs or show_all or show_t,
        show_nonprinting=show_nonprinting or show_all or show_e or show_t,
    )
    reporter = Reporter(PROG)
    closed = guard_std_fds()

    def body() -> int:
        names = list(files) or ["-"]
        if 1 in closed:
            reporter.error("standard output", "Bad file descriptor")
            return 1
        if 0 in closed and "-" in names:
            # fd 0 now holds /dev/null: report the operand, as GNU does
            for name in names:
                if name == "-":
                    reporter.error("-", "Bad file descriptor")
            names = [name for name in names if name != "-"]
        stats = Stats(command="cat")

        def work(engine: str) -> bool:
            return cat_files(names, 1, engine=engine,
                             block_size=settings.block_size,
                             queue_depth=settings.queue_depth, fmt=fmt,
                             stats=stats, on_error=reporter.error)

        try:
            with_engine(settings, reporter, stats, work)
        except WriteError as exc:
            if exc.errno == errno.EPIPE:
                die_of_signal(signal.SIGPIPE)
            reporter.error(None, f"write error: {exc.strerror}")
        emit_stats(settings, stats)
        return reporter.status

    run_main(reporter, body)


def main() -> None:
    """Entry point of the ``uring-cat`` script."""
    cat_command.main(prog_name=PROG)

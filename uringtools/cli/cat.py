"""uring-cat: GNU cat over io_uring.

The work lives in :func:`run_cat`, which needs no Click: a command line
:func:`fast_parse` can read (GNU's options, ours, spelt out in full) skips
importing Click altogether (start-up time is part of the product). --help,
--version, abbreviations and errors go through the Click command, built on
first use.
"""

from __future__ import annotations

import errno
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any, Dict, List, Sequence, Tuple

from ..cat import DEFAULT_BLOCK_SIZE, WriteError, cat_files
from ..catfmt import CatFormat
from ..stats import Stats
from .common import (LazyCommand, Reporter, Settings, broken_pipe,
                     emit_stats, guard_std_fds, run_main, with_engine)

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

        def on_error(name: str, reason: str) -> None:
            from ..checkfile import quotef  # GNU cat quotes the name
            reporter.error(quotef(name), reason)

        def work(engine: str) -> bool:
            return cat_files(names, 1, engine=engine,
                             block_size=settings.block_size or DEFAULT_BLOCK_SIZE,
                             queue_depth=settings.queue_depth, fmt=fmt,
                             stats=stats, on_error=on_error,
                             splice=splice, direct=direct,
                             stdin_closed=0 in closed,
                             closed_fds=closed)

        try:
            with_engine(settings, reporter, stats, work)
        except WriteError as exc:
            if exc.errno == errno.EPIPE:
                broken_pipe()
            reporter.error(None, f"write error: {exc.strerror}")
        emit_stats(settings, stats)
        if 0 in closed and "-" in names:
            # GNU closes stdin at exit and reports that it could not
            reporter.error("closing standard input", "Bad file descriptor")
        return reporter.status

    run_main(reporter, body)


def _build_command() -> Any:
    """The Click command (imported for --help, abbreviations, errors...)."""
    import click

    from .common import engine_options, gnu_command_class

    GnuCommand = gnu_command_class()

    @click.command(name="cat", cls=GnuCommand,
                   context_settings={"help_option_names": ["--help"]})
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
    @click.option("--splice/--no-splice", default=True, show_default=True,
                  help="move regular files into pipes, /dev/null and files "
                       "with zero-copy splice requests (uring engine, no "
                       "formatting); --no-splice copies through the "
                       "registered buffers")
    @click.option("--direct", is_flag=True,
                  help="read files with O_DIRECT into the aligned registered "
                       "buffers, bypassing the page cache (implies --no-splice)")
    @click.argument("files", nargs=-1)
    @engine_options
    def cat_command(files: Tuple[str, ...], show_all: bool,
                    number_nonblank: bool, show_e: bool, show_ends: bool,
                    number: bool, squeeze_blank: bool, show_t: bool,
                    show_tabs: bool, unbuffered: bool, show_nonprinting: bool,
                    splice: bool, direct: bool, settings: Settings) -> None:
        """Concatenate FILE(s) to standard output, through io_uring.

        With no FILE, or when FILE is -, read standard input.
        """
        given = (show_all, number_nonblank, show_e, show_ends, number,
                 squeeze_blank, show_t, show_tabs, unbuffered, show_nonprinting)
        letters = "".join(c for c, on in zip(_FLAGS, given) if on)
        run_cat(files, cat_format(letters), settings, splice, direct)

    return cat_command


#: GNU cat's short flags -> the CatFormat fields each one turns on
_FLAGS = {
    "A": ("show_nonprinting", "show_ends", "show_tabs"),
    "b": ("number_nonblank",), "e": ("show_nonprinting", "show_ends"),
    "E": ("show_ends",), "n": ("number",), "s": ("squeeze_blank",),
    "t": ("show_nonprinting", "show_tabs"), "T": ("show_tabs",), "u": (),
    "v": ("show_nonprinting",),
}


def cat_format(letters: str) -> CatFormat:
    """The output transformations GNU cat's short flags ``letters`` ask for."""
    return CatFormat(**{field: True for letter in letters
                        for field in _FLAGS[letter]})


def _fast_options() -> Dict[str, Tuple[str, Any]]:
    """The options common.fast_parse reads for uring-cat (Click the rest)."""
    return {
        **{f"-{letter}": ("letters*", letter) for letter in _FLAGS},
        "--show-all": ("letters*", "A"), "--number-nonblank": ("letters*", "b"),
        "--show-ends": ("letters*", "E"), "--number": ("letters*", "n"),
        "--squeeze-blank": ("letters*", "s"), "--show-tabs": ("letters*", "T"),
        "--show-nonprinting": ("letters*", "v"),
        "--splice": ("splice", True), "--no-splice": ("splice", False),
        "--direct": ("direct", True),
    }


def _run_arguments(operands: List[str], found: Dict[str, Any],
                   settings: Settings) -> Dict[str, Any]:
    """run_cat's arguments from what fast_parse found."""
    return dict(files=operands, fmt=cat_format("".join(found.get("letters", ()))),
                settings=settings, splice=found.get("splice", True),
                direct=found.get("direct", False))


COMMAND = LazyCommand("cat_command", _build_command, PROG, _fast_options,
                      _run_arguments, run_cat)
__getattr__ = COMMAND.module_getattr
fast_parse = COMMAND.fast_parse
main = COMMAND.main   # the entry point of ``uring-cat``

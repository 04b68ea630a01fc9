"""The Click command for uring-cat (options; the work is in cli/cat.py)."""

from __future__ import annotations

from typing import Tuple

import click

from ..catfmt import CatFormat
from .cat import run_cat
from .common import Settings, engine_options


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
@click.option("--splice/--no-splice", default=True, show_default=True,
              help="move regular files into pipes, /dev/null and files with "
                   "zero-copy splice requests (uring engine, no formatting); "
                   "--no-splice copies through the registered buffers")
@click.option("--direct", is_flag=True,
              help="read files with O_DIRECT into the aligned registered "
                   "buffers, bypassing the page cache (implies --no-splice)")
@click.argument("files", nargs=-1)
@engine_options
def cat_command(files: Tuple[str, ...], show_all: bool, number_nonblank: bool,
                show_e: bool, show_ends: bool, number: bool,
                squeeze_blank: bool, show_t: bool, show_tabs: bool,
                unbuffered: bool, show_nonprinting: bool, splice: bool,
                direct: bool,
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
    run_cat(files, fmt, settings, splice, direct)

"""--progress/--no-progress, shared by uring-cp and uring-hash: the option,
when the bar is shown by default, and opening it (rich is imported only
then, through ui.py)."""

from __future__ import annotations

import os
import stat
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

if TYPE_CHECKING:
    from .ui import ProgressBar

#: --progress defaults to on (on a terminal) from this many bytes
AUTO_BYTES = 256 << 20


def progress_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--progress/--no-progress`` (``progress``: None when not given)."""
    import click

    return click.option(
        "--progress/--no-progress", default=None,
        help="show a progress bar on stderr [default: on a terminal, "
             "for large jobs]")(func)


#: the same, for the commands' own parse (common.fast_parse)
PROGRESS_OPTIONS = {"--progress": ("progress", True),
                    "--no-progress": ("progress", False)}


def operand_bytes(names: Iterable[str]) -> int:
    """The total size of the regular files among ``names`` (others count 0)."""
    total = 0
    for name in names:
        try:
            st = os.stat(name)
        except (OSError, ValueError):
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total


def wanted(flag: Optional[bool], job_bytes: Callable[[], int]) -> bool:
    """--progress / --no-progress as given, else: stderr is a terminal and
    ``job_bytes()`` (asked only then) is at least AUTO_BYTES."""
    if flag is not None:
        return flag
    try:
        return os.isatty(2) and job_bytes() >= AUTO_BYTES
    except OSError:
        return False


def open_bar(description: str, total: int = 0) -> "ProgressBar":
    """Start a bar on stderr (``total`` 0: unknown until add_total)."""
    from .ui import ProgressBar

    return ProgressBar(description, total)

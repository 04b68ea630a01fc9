"""The command-line interface. Importing this package costs no Click:
the ``uringtools`` group lives in group.py."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any, Dict, Tuple

#: subcommand -> (module, attribute); imported only when invoked (cat, cp
#: and hash build their Click command on first use: common.LazyCommand)
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    "bench": ("uringtools.cli.bench", "bench_command"),
    "cat": ("uringtools.cli.cat", "cat_command"),
    "cp": ("uringtools.cli.cp", "cp_command"),
    "hash": ("uringtools.cli.hash", "hash_command"),
}


def main(*args: Any, **kwargs: Any) -> None:
    """Entry point of the ``uringtools`` script."""
    import sys

    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name in ("cat", "cp", "hash"):
        # a command line the subcommand reads itself skips Click (exits)
        module = __import__(SUBCOMMANDS[name][0], fromlist=["COMMAND"])
        module.COMMAND.run_fast(sys.argv[2:])
    from .common import click_main
    from .group import cli

    click_main(cli, kwargs.get("prog_name", "uringtools"))

"""The ``uringtools`` command group; subcommands load on first use."""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Tuple

import click

from .. import __version__

#: subcommand -> (module, attribute); imported only when invoked
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    "cat": ("uringtools.cli.cat", "cat_command"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="uringtools")
def cli() -> None:
    """cat, cp and checksum tools whose I/O runs through io_uring."""


def main(*args: Any, **kwargs: Any) -> None:
    """Entry point of the ``uringtools`` script."""
    cli.main(*args, **kwargs)

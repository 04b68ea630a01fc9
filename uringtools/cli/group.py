"""The ``uringtools`` Click group; subcommands are imported on first use."""

from __future__ import annotations

import importlib
from typing import List, Optional

import click

from .. import __version__
from . import SUBCOMMANDS


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

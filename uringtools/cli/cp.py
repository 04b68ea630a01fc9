"""uring-cp: GNU cp over io_uring, writing through temporaries so that
nothing is lost when a copy fails or is interrupted."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import (Any, Callable, Dict, List, Optional, Sequence, Tuple,
                        Union)

from ..copy import DEFAULT_BLOCK_SIZE, CopyOptions, quote
from ..stats import Stats
from . import common
from .common import (LazyCommand, Reporter, Settings, StdioOut, Takes,
                     emit_stats, guard_std_fds, run_main, with_engine)
from .progress import PROGRESS_OPTIONS, open_bar, operand_bytes, wanted

if TYPE_CHECKING:
    from .ui import ProgressBar

PROG = "uring-cp"


def _build_command() -> Any:
    """The Click command (imported for --help, abbreviations, errors...)."""
    import click

    from ..checkfile import locale_quote
    from ..reflink import MODES
    from .common import engine_options, gnu_command_class
    from .progress import progress_option

    class GnuChoice(click.ParamType):
        """A WHEN argument as GNU's argmatch takes it: a unique prefix of
        one of the words will do; else GNU's message and the words."""
        name = "WHEN"

        def __init__(self, words: Tuple[str, ...]) -> None:
            self.words = words

        def convert(self, value: Any, param: Any, ctx: Any) -> str:
            matches = [w for w in self.words if w.startswith(value)]
            if value in self.words or len(matches) == 1:
                return value if value in self.words else matches[0]
            kind = "ambiguous" if len(matches) > 1 else "invalid"
            option = param.opts[0] if param is not None else "WHEN"
            raise click.UsageError(
                f"{kind} argument {locale_quote(value)} for "
                f"{locale_quote(option)}\nValid arguments are:"
                + "".join(f"\n  - {locale_quote(w)}" for w in self.words),
                ctx)

    @click.command(name="cp", cls=gnu_command_class(),
                   context_settings={"help_option_names": ["--help"]})
    # -a, -L and -P in command-line order: -a means -P too, and the last
    # of the three decides, as in GNU cp
    @click.option("-a", "--archive", "deref_seq", flag_value="a", multiple=True,
                  help="same as -dR --preserve=all")
    @click.option("-f", "--force", is_flag=True,
                  help="if an existing destination file cannot be opened, "
                       "replace it anyway")
    @click.option("-L", "--dereference", "deref_seq", flag_value="L",
                  multiple=True, help="always follow symbolic links in SOURCE")
    @click.option("-P", "--no-dereference", "deref_seq", flag_value="P",
                  multiple=True, help="never follow symbolic links in SOURCE")
    @click.option("-n", "--no-clobber", is_flag=True,
                  help="do not overwrite an existing file")
    @click.option("-u", "--update", is_flag=True,
                  help="copy only when the SOURCE file is newer than the "
                       "destination file or when the destination file is "
                       "missing")
    @click.option("-p", "preserve", is_flag=True,
                  help="preserve mode, ownership and timestamps")
    @click.option("--preserve", "preserve_long", is_flag=True,
                  help="same as -p")
    @click.option("-r", "-R", "--recursive", is_flag=True,
                  help="copy directories recursively")
    @click.option("--sparse", type=GnuChoice(("never", "auto", "always")),
                  default="auto", show_default=True,
                  help="control creation of sparse files")
    @click.option("--reflink", type=GnuChoice(MODES), default="auto",
                  is_flag=False, flag_value="always", metavar="[=WHEN]",
                  help="clone (share the source's blocks, as on XFS or btrfs) "
                       "instead of copying: auto (the default) where the "
                       "filesystem can, always (clone or fail, also as "
                       "--reflink alone), never")
    @click.option("-t", "--target-directory", metavar="DIRECTORY",
                  multiple=True, help="copy all SOURCE arguments into DIRECTORY")
    @click.option("-T", "--no-target-directory", is_flag=True,
                  help="treat DEST as a normal file")
    @click.option("-v", "--verbose", is_flag=True,
                  help="explain what is being done")
    @click.option("--fsync", is_flag=True,
                  help="flush each file before renaming it into place, and its "
                       "directory after")
    @click.option("--direct", is_flag=True,
                  help="read sources with O_DIRECT into the aligned buffers "
                       "(no page cache); unaligned tails and filesystems that "
                       "refuse it fall back to cached reads")
    @click.option("--splice/--no-splice", default=None,
                  help="copy files of 1 MiB and more with splice pairs "
                       "(file -> pipe -> file) rather than through the "
                       "registered buffers  [default: when the source is on "
                       "tmpfs, where splicing measures faster]")
    @progress_option
    @click.argument("operands", nargs=-1)
    @engine_options
    def cp_command(operands: Tuple[str, ...], deref_seq: Tuple[str, ...],
                   force: bool, no_clobber: bool, update: bool,
                   preserve: bool,
                   preserve_long: bool, recursive: bool, sparse: str,
                   target_directory: Tuple[str, ...], no_target_directory: bool,
                   verbose: bool, fsync: bool, direct: bool,
                   splice: Optional[bool], progress: Optional[bool],
                   reflink: str, settings: Settings) -> None:
        """Copy SOURCE to DEST, or multiple SOURCE(s) to DIRECTORY, through
        io_uring. Each file is written to a temporary beside its destination and
        renamed into place only when complete.

        \b
        Usage: uring-cp [OPTION]... [-T] SOURCE DEST
          or:  uring-cp [OPTION]... SOURCE... DIRECTORY
          or:  uring-cp [OPTION]... -t DIRECTORY SOURCE...
        """
        return run_cp(operands, **_links(deref_seq), force=force,
                      no_clobber=no_clobber, update=update,
                      preserve=preserve,
                      preserve_long=preserve_long, recursive=recursive,
                      sparse=sparse, target_directory=target_directory,
                      no_target_directory=no_target_directory, verbose=verbose,
                      fsync=fsync, progress=progress, settings=settings,
                      direct=direct, splice=splice, reflink=reflink)

    return cp_command


def run_cp(operands: Sequence[str], *, archive: bool = False,
           force: bool = False, deref: Optional[str] = None,
           no_clobber: bool = False, update: bool = False,
           preserve: bool = False,
           preserve_long: bool = False, recursive: bool = False,
           sparse: str = "auto",
           target_directory: Union[None, str, Sequence[str]] = None,
           no_target_directory: bool = False, verbose: bool = False,
           fsync: bool = False, progress: Optional[bool] = None,
           settings: Optional[Settings] = None, direct: bool = False,
           splice: Optional[bool] = None, reflink: str = "auto") -> None:
    """Run uring-cp with parsed options; exits with GNU's status.

    ``target_directory``: one -t DIRECTORY, or each one given, in order
    (GNU refuses a second one, even the same)."""
    settings = settings if settings is not None else Settings()
    reporter = Reporter(PROG)
    if not isinstance(target_directory, str):
        targets = tuple(target_directory or ())
        if len(targets) > 1:   # as GNU, while reading the options
            reporter.fail("multiple target directories specified")
        target_directory = targets[0] if targets else None
    guard_std_fds()

    def body() -> int:
        from ..copytree import copy_paths

        if reflink == "always" and sparse != "auto":
            reporter.usage("--reflink can be used only with --sparse=auto")
        if target_directory is not None and no_target_directory:
            reporter.fail("cannot combine --target-directory (-t) and "
                          "--no-target-directory (-T)")
        sources: Sequence[str]
        dest: Optional[str]
        if target_directory is not None:
            sources, dest = operands, None
            if not sources:
                reporter.usage("missing file operand")
        else:
            if not operands:
                reporter.usage("missing file operand")
            if len(operands) == 1:
                reporter.usage("missing destination file operand after "
                               f"{quote(operands[0])}")
            if no_target_directory and len(operands) > 2:
                reporter.usage(f"extra operand {quote(operands[2])}")
            sources, dest = operands[:-1], operands[-1]
        dereference = {"L": True, "P": False}.get(deref or "")
        if archive and deref is None:
            dereference = False
        stats = Stats(command="cp")
        options = CopyOptions(
            recursive=recursive or archive, preserve=preserve or preserve_long
            or archive, dereference=dereference, no_clobber=no_clobber,
            force=force, verbose=verbose, sparse=sparse, fsync=fsync,
            block_size=settings.block_size or DEFAULT_BLOCK_SIZE,
            queue_depth=settings.queue_depth,
            direct=direct, preserve_links=archive, splice=splice,
            update=update, reflink=reflink)

        show = wanted(progress, lambda: operand_bytes(sources))
        bar: Optional[ProgressBar] = None
        on_verbose: Optional[Callable[[str], None]] = None
        out: Optional[StdioOut] = None
        if verbose:
            # a reader gone: the copy cleans up, then run_main dies of
            # SIGPIPE like GNU (PipeGone, raised once: its SIGPIPE came too)
            out = StdioOut(lambda exc: common.pipe_gone())
            reporter.before_say = out.flush
            write = out.write
            on_verbose = lambda line: write(  # noqa: E731
                line.encode("utf-8", "surrogateescape") + b"\n")

        def on_error(message: str) -> None:
            reporter.error(None, message)

        def work(engine: str) -> bool:
            nonlocal bar
            assert settings is not None
            options.engine = engine
            if show and bar is None:
                bar = open_bar("copying")
            extra: Any = {}
            if bar is not None:
                extra = {"on_progress": bar.advance, "on_total": bar.add_total}
            return copy_paths(sources, dest, options=options,
                              target_directory=target_directory,
                              no_target_directory=no_target_directory,
                              stats=stats,
                              on_error=on_error, on_warning=reporter.say,
                              on_verbose=on_verbose, **extra)

        try:
            with_engine(settings, reporter, stats, work)
        finally:
            if bar is not None:
                bar.close()
        if out is not None:
            out.close(reporter)
        emit_stats(settings, stats)
        return reporter.status

    # a reader gone (-v, stderr, a pipe as destination) unwinds: nothing
    # half-written stays, as for SIGTERM
    run_main(reporter, body, unwind_on_sigpipe=True)


#: what the last of -a, -L, -P means for symbolic links
_LAST_DEREF = {"a": "P", "L": "L", "P": "P"}


def _links(deref_seq: Sequence[str]) -> Dict[str, Any]:
    """run_cp's archive and deref from -a, -L and -P in command-line order:
    -a means -P too, and the last of the three decides, as in GNU cp."""
    return {"archive": "a" in deref_seq,
            "deref": _LAST_DEREF[deref_seq[-1]] if deref_seq else None}


def _fast_options() -> Dict[str, Tuple[str, Any]]:
    from ..reflink import MODES

    target = ("target_directory*", Takes())
    flags = {"archive": ("links*", "a"), "force": ("force", True),
             "dereference": ("links*", "L"), "no-clobber": ("no_clobber", True),
             "update": ("update", True), "recursive": ("recursive", True),
             "no-target-directory": ("no_target_directory", True),
             "verbose": ("verbose", True)}
    shorts = {"a": "archive", "f": "force", "L": "dereference",
              "n": "no-clobber", "u": "update", "r": "recursive",
              "R": "recursive", "T": "no-target-directory", "v": "verbose"}
    return {
        **{f"-{letter}": flags[name] for letter, name in shorts.items()},
        **{f"--{name}": option for name, option in flags.items()},
        "-P": ("links*", "P"), "--no-dereference": ("links*", "P"),
        "-p": ("preserve", True), "--preserve": ("preserve_long", True),
        "-t": target, "--target-directory": target,
        "--sparse": ("sparse", Takes(("never", "auto", "always"))),
        "--reflink": ("reflink", Takes(MODES, bare="always")),
        "--fsync": ("fsync", True), "--direct": ("direct", True),
        "--splice": ("splice", True), "--no-splice": ("splice", False),
        **PROGRESS_OPTIONS,
    }


def _run_arguments(operands: List[str], found: Dict[str, Any],
                   settings: Settings) -> Dict[str, Any]:
    """run_cp's arguments from what fast_parse found."""
    links = _links(found.pop("links", ()))
    return dict(found, **links, operands=operands, settings=settings)


COMMAND = LazyCommand("cp_command", _build_command, PROG, _fast_options,
                      _run_arguments, run_cp)
__getattr__ = COMMAND.module_getattr
fast_parse = COMMAND.fast_parse
main = COMMAND.main   # the entry point of ``uring-cp``

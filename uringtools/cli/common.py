"""What every command shares: the engine options, signal and exit-status
conventions, GNU-style messages, the io_uring fallback, and --stats."""

from __future__ import annotations

import errno
import os
# the C module: `signal` wraps it in enums (~5 ms of start-up)
import _signal as signal
import _thread
import sys
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import (Any, Callable, Dict, List, NoReturn, Optional,
                        Sequence, Set, Tuple, TypeVar)

from .. import __version__
from ..stats import Stats

if TYPE_CHECKING:
    T = TypeVar("T")

#: SIGPIPE was ignored (``trap '' PIPE``) or blocked when we were started
#: (the C launcher tells us, cli/launch.py): a reader gone is then GNU's
#: "write error: Broken pipe", status 1, instead of death by SIGPIPE.
SIGPIPE_IGNORED = False

DEFAULT_BLOCK_SIZE = 128 * 1024
DEFAULT_QUEUE_DEPTH = 4
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``128K`` -> 131072: a byte count with an optional K/M/G suffix.

    Raises:
        ValueError: not a size between 512 bytes and 1 GiB.
    """
    raw = str(text).strip().upper()
    for unit in ("IB", "B"):
        if raw.endswith(unit) and len(raw) > len(unit):
            raw = raw[:-len(unit)]
            break
    suffix = raw[-1:] if raw[-1:] in _SUFFIXES and raw[-1:] else ""
    number = raw[:-1] if suffix else raw
    if not number.isdigit():
        raise ValueError(f"invalid size {text!r}")
    size = int(number) * _SUFFIXES[suffix]
    if size < 512 or size > (1 << 30):
        raise ValueError(f"{text!r} is not between 512 and 1G")
    return size


class LazyCommand:
    """A command: its own parse of the command lines it can read, and its
    Click object, built on first use for the rest (--help, abbreviations,
    errors), so that ``uring-cat FILE`` never imports Click.

    A command module makes one at its end, from a function that imports
    Click and builds the command, its option table for :func:`fast_parse`
    (a function returning it), a function turning what that parse found
    (operands, options, Settings) into the run function's keyword
    arguments, and the run function::

        COMMAND = LazyCommand("cp_command", _build_command, PROG,
                              _fast_options, _run_arguments, run_cp)
        __getattr__ = COMMAND.module_getattr   # cli.SUBCOMMANDS: cp_command
        fast_parse = COMMAND.fast_parse
        main = COMMAND.main                    # the entry point
    """

    def __init__(self, attr: str, build: Callable[[], Any], prog: str,
                 options: Callable[[], Dict[str, Tuple[str, Any]]],
                 arguments: Callable[[List[str], Dict[str, Any], "Settings"],
                                     Dict[str, Any]],
                 run: Callable[..., None]) -> None:
        self.attr = attr
        self.prog = prog
        self._build = build
        self._options = options
        self._arguments = arguments
        self._run = run
        self._command: Optional[Any] = None

    def get(self) -> Any:
        """The click.Command (built, and Click imported, on the first call)."""
        if self._command is None:
            self._command = self._build()
        return self._command

    def module_getattr(self, name: str) -> Any:
        """A module ``__getattr__`` that builds the command when asked
        for it by name."""
        if name == self.attr:
            return self.get()
        raise AttributeError(name)

    def fast_parse(self, argv: Sequence[str]) -> Optional[Dict[str, Any]]:
        """The run function's arguments for ``argv``, as Click would give
        them, or None when Click must parse it (--help, abbreviations,
        errors...)."""
        parsed = fast_parse(argv, self._options())
        return None if parsed is None else self._arguments(*parsed)

    def run_fast(self, argv: Sequence[str]) -> None:
        """Run the command on ``argv`` if its own parse reads it (and exit);
        else return, for Click to parse it."""
        parsed = self.fast_parse(argv)
        if parsed is not None:
            self._run(**parsed)

    def main(self) -> None:
        """The entry point: run on ``sys.argv``, parsed by the command
        itself when it can, else by Click."""
        self.run_fast(sys.argv[1:])
        click_main(self.get(), self.prog)


def click_main(command: Any, prog: str) -> None:
    """Run a Click command (or group) on ``sys.argv``, a bad command line
    reported as GNU's getopt does: ``prog: unrecognized option '--x'``
    (``invalid option -- 'x'``, ``option requires an argument -- 't'``),
    then ``Try 'prog --help' for more information.``, status 1 (Click
    prints its usage and exits 2)."""
    import click

    try:
        code = command.main(prog_name=prog, standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog
        name = getattr(exc, "option_name", None) or ""
        text = exc.format_message()
        # "--": a '-' in a bundle (-u-), as GNU's invalid option -- '-'
        if isinstance(exc, click.NoSuchOption) and name.startswith("--") \
                and name != "--":
            line = f"unrecognized option '{name}'"
        elif isinstance(exc, click.NoSuchOption) and name:
            line = f"invalid option -- '{name[1:]}'"
        elif isinstance(exc, click.BadOptionUsage) and "requires an argument" in text:
            line = (f"option '{name}' requires an argument" if name.startswith("--")
                    else f"option requires an argument -- '{name.lstrip('-')}'")
        elif isinstance(exc, click.BadOptionUsage) and "does not take a value" in text:
            line = f"option '{name}' doesn't allow an argument"
        else:
            line = text[:1].lower() + text[1:]
        write_stderr(f"{where}: {line}\n"
                     f"Try '{where} --help' for more information.\n")
        raise SystemExit(1)
    except click.Abort:
        raise SystemExit(1)
    except SystemExit:
        # Click catches EPIPE itself, swaps in its PacifyFlushWrapper
        # (_PacifyFlushWrapper since 8.2) and exits 1
        if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
            stdout_failed(prog, errno.EPIPE)
        raise
    except OSError as exc:
        if not _raised_in_click(exc):
            raise
        stdout_failed(prog, exc.errno or 0)   # --help or --version
    raise SystemExit(code if isinstance(code, int) else 0)


#: long options of ours that GNU's tools do not have: a prefix that also
#: names one of GNU's options means GNU's (``--sta`` is --status, not
#: --stats), as it does for GNU
EXTRA_LONG_OPTIONS = frozenset({
    "engine", "block-size", "queue-depth", "stats", "stats-format", "direct",
    "splice", "no-splice", "progress", "no-progress", "algorithm"})


def expand_long_options(args: Sequence[str], longs: Dict[str, Any],
                        posix: bool = False, shorts: str = "") -> List[str]:
    """``args`` as getopt_long reads them, spelt out for Click: each long
    option abbreviated as getopt_long allows written out in full
    (``--number-n`` is ``--number-nonblank`` when no other name in
    ``longs`` starts so; an exact name wins), and one whose value is
    optional, given bare, with the value that means (getopt never takes
    the next argument for it; Click would). ``longs``: name -> True (takes
    a value), False (a flag) or the value a bare optional one means, in
    the command's order; ``shorts``: the short letters that take a value.
    Unknown names are left as they are (Click reports them), as is
    everything after ``--``, an option's separate value and, with
    ``posix``, the first operand and what follows it.

    Raises:
        ValueError: an ambiguous name, with GNU's message.
    """
    out: List[str] = []
    rest = iter(args)

    def value_follows() -> None:
        out.extend(value for _, value in zip(range(1), rest))  # as given

    for arg in rest:
        if arg == "--" or (posix and (arg == "-" or arg[:1] != "-")):
            out.append(arg)
            break
        if arg[:1] == "-" and arg[1:2] not in ("-", ""):
            out.append(arg)
            for i, letter in enumerate(arg[1:], 2):
                if letter in shorts:     # the rest of the bundle, or the next
                    if i == len(arg):
                        value_follows()
                    break
            continue
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name not in longs:
                found = [full for full in longs if full.startswith(name)]
                gnus = [full for full in found if full not in EXTRA_LONG_OPTIONS]
                if len(found) > 1 and len(gnus) == 1:
                    found = gnus
                if len(found) == 1:
                    name = found[0]
                    arg = f"--{name}{eq}{value}"
                elif found and (name or eq):    # GNU names all of --=x
                    raise ValueError(
                        f"option '{arg}' is ambiguous; possibilities:"
                        + "".join(f" '--{full}'" for full in found))
            kind = longs.get(name)
            if isinstance(kind, str) and not eq:
                arg = f"--{name}={kind}"
            out.append(arg)
            if kind is True and not eq:
                value_follows()
        else:
            out.append(arg)
    out.extend(rest)
    return out


_GNU_COMMAND: Any = None


def gnu_command_class() -> Any:
    """A click.Command reading long options as GNU getopt_long does: an
    unambiguous prefix names its option (``--squeeze`` is
    ``--squeeze-blank``; an ambiguous one gets GNU's message), an optional
    value is never the next argument (``--reflink a b``), and with
    POSIXLY_CORRECT the first operand ends the options. Made on first use
    (Click is imported only when options need it)."""
    global _GNU_COMMAND
    if _GNU_COMMAND is not None:
        return _GNU_COMMAND
    import click

    class GnuCommand(click.Command):
        def parse_args(self, ctx: Any, args: List[str]) -> List[str]:
            posix = "POSIXLY_CORRECT" in os.environ
            if posix:
                ctx.allow_interspersed_args = False
            longs: Dict[str, Any] = {}
            shorts = ""
            for param in self.get_params(ctx):
                if isinstance(param, click.Option):
                    # an optional value (--reflink[=WHEN]): what bare means
                    kind = (param.flag_value
                            if getattr(param, "_flag_needs_value", False)
                            else not (param.is_flag or param.count))
                    for name in (*param.opts, *param.secondary_opts):
                        if name.startswith("--"):
                            longs.setdefault(name[2:], kind)
                        elif kind is True:
                            shorts += name[1:]
            try:
                args = expand_long_options(args, longs, posix, shorts)
            except ValueError as exc:
                raise click.UsageError(str(exc), ctx) from None
            # each optional value is now given (--reflink=always): else
            # Click reads --reflink=-v as a bare --reflink, then -v
            optional = [param for param in self.get_params(ctx)
                        if getattr(param, "_flag_needs_value", False)]
            for param in optional:
                setattr(param, "_flag_needs_value", False)
            try:
                return super().parse_args(ctx, args)
            finally:
                for param in optional:
                    setattr(param, "_flag_needs_value", True)

    _GNU_COMMAND = GnuCommand
    return GnuCommand


def stdout_failed(prog: str, code: int) -> NoReturn:
    """Output written through sys.stdout (Click's --help, a report) could
    not be written (``>&-``, a full disk, a reader gone): GNU's "write
    error", status 1; EPIPE dies of SIGPIPE unless it is ignored."""
    if code == errno.EPIPE:
        broken_pipe()
    sys.stdout = None      # nothing more to flush at exit
    sys.stderr.write(f"{prog}: write error: {strerror(code)}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _raised_in_click(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in Click's own code (its output)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(
        tb.tb_frame.f_globals.get("__name__", "")).startswith("click.")


class Takes:
    """How :func:`fast_parse` reads an option that takes a value: any value
    (``words`` None) or exactly one of ``words``; ``convert`` may turn it
    into something else, raising ValueError for a bad one; ``bare``: the
    value of a long option given without ``=VALUE`` (an optional value,
    never the next argument, as getopt_long's)."""

    __slots__ = ("words", "bare", "convert")

    def __init__(self, words: Optional[Sequence[str]] = None,
                 bare: Optional[str] = None,
                 convert: Optional[Callable[[str], Any]] = None) -> None:
        self.words = words
        self.bare = bare
        self.convert = convert


class _Bad(Exception):
    """A command line fast_parse leaves to Click."""


def _queue_depth(text: str) -> int:
    depth = int(text)       # as Click's IntRange reads it
    if not 1 <= depth <= 4096:
        raise ValueError(text)
    return depth


#: the options every command shares (engine_options), for fast_parse
ENGINE_OPTIONS: Dict[str, Tuple[str, Any]] = {
    "--engine": ("engine", Takes(("uring", "sync"))),
    "--block-size": ("block_size", Takes(convert=parse_size)),
    "--queue-depth": ("queue_depth", Takes(convert=_queue_depth)),
    "--stats": ("stats", True),
    "--stats-format": ("stats_format", Takes(("table", "json"))),
}


def fast_parse(argv: Sequence[str], options: Dict[str, Tuple[str, Any]],
               ) -> Optional[Tuple[List[str], Dict[str, Any], "Settings"]]:
    """Parse a command line as Click would, without importing Click (it
    costs ~30 ms of start-up): (operands, the options found, Settings).

    ``options`` maps each spelling (``-c``, ``--check``) to (key, action):
    a :class:`Takes`, or the constant the key gets. A key ending in ``*``
    collects a tuple, in command-line order. Short options bundle
    (``-cw``, ``-asha1``), a value follows ``=`` or comes next, and with
    POSIXLY_CORRECT the first operand ends the options, as in getopt_long.
    The engine options (ENGINE_OPTIONS) make the Settings.

    None for anything Click must judge or explain: --help and --version,
    ``--``, an unknown or abbreviated option, a missing or bad value.
    """
    if "--" in argv:
        return None
    posix = "POSIXLY_CORRECT" in os.environ
    operands: List[str] = []
    found: Dict[str, Any] = {}
    rest = iter(argv)

    def value_of(action: Takes, value: Optional[str]) -> Any:
        if value is None or (action.words is not None
                             and value not in action.words):
            raise _Bad
        if action.convert is None:
            return value
        try:
            return action.convert(value)
        except ValueError:
            raise _Bad from None

    def store(key: str, value: Any) -> None:
        if key[-1:] == "*":
            found[key[:-1]] = found.get(key[:-1], ()) + (value,)
        else:
            found[key] = value

    try:
        for arg in rest:
            if arg[:1] != "-" or arg == "-":
                operands.append(arg)
                if posix:
                    operands.extend(rest)
                continue
            if arg[:2] == "--":
                name, eq, given = arg.partition("=")
                key, action = options.get(name) or ENGINE_OPTIONS[name]
                if type(action) is not Takes:
                    if eq:
                        raise _Bad   # a flag given a value
                    store(key, action)
                    continue
                value: Optional[str] = given
                if not eq:
                    value = action.bare if action.bare is not None \
                        else next(rest, None)
                store(key, value_of(action, value))
                continue
            for i in range(1, len(arg)):
                key, action = options["-" + arg[i]]
                if type(action) is not Takes:
                    store(key, action)
                    continue
                store(key, value_of(action, arg[i + 1:] or next(rest, None)))
                break
    except (_Bad, KeyError):
        return None
    stats_format = found.pop("stats_format", None)
    settings = Settings(found.pop("engine", None), found.pop("block_size", None),
                        found.pop("queue_depth", DEFAULT_QUEUE_DEPTH),
                        found.pop("stats", False) or stats_format is not None,
                        stats_format or "table")
    return operands, found, settings


class Settings:
    """The shared options, as parsed."""

    def __init__(self, engine: Optional[str] = None,
                 block_size: Optional[int] = None,
                 queue_depth: int = DEFAULT_QUEUE_DEPTH, stats: bool = False,
                 stats_format: str = "table") -> None:
        self.engine = engine  # None: uring, falling back to sync if refused
        self.block_size = block_size  # None: the command's own default
        self.queue_depth = queue_depth
        self.stats = stats
        self.stats_format = stats_format


def engine_options(func: Optional[Callable[..., Any]] = None, *,
                   block_size: int = DEFAULT_BLOCK_SIZE) -> Any:
    """Add --engine, --block-size, --queue-depth, --stats, --stats-format
    and --version to a command; it receives them as ``settings``
    (``settings.block_size`` None when not given: ``block_size``, the
    command's default, is only shown in --help). Use bare or called."""
    if func is None:
        return lambda f: engine_options(f, block_size=block_size)
    import click

    class SizeType(click.ParamType):
        name = "SIZE"

        def convert(self, value: Any, param: Any, ctx: Any) -> int:
            if isinstance(value, int):
                return value
            try:
                return parse_size(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)

    options = [
        click.option("--engine", type=click.Choice(["uring", "sync"]),
                     default=None,
                     help="I/O engine [default: uring, or sync with a "
                          "warning when io_uring is refused]"),
        click.option("--block-size", type=SizeType(),
                     default=None,
                     show_default=f"{block_size >> 10}K" if block_size < 1 << 20
                     else f"{block_size >> 20}M",
                     help="bytes per read or write request"),
        click.option("--queue-depth", type=click.IntRange(1, 4096),
                     default=DEFAULT_QUEUE_DEPTH, show_default=True,
                     help="requests in flight per file"),
        click.option("--stats", "show_stats", is_flag=True,
                     help="print ring statistics on stderr afterwards"),
        click.option("--stats-format", type=click.Choice(["table", "json"]),
                     default=None, help="statistics as a table or one JSON "
                                        "object (implies --stats)"),
        click.version_option(__version__, prog_name="uringtools"),
    ]

    import functools   # with Click, which imports it anyway

    @functools.wraps(func)
    def wrapper(*args: Any, engine: Optional[str], block_size: Optional[int],
                queue_depth: int, show_stats: bool,
                stats_format: Optional[str], **kwargs: Any) -> Any:
        settings = Settings(engine, block_size, queue_depth,
                            show_stats or stats_format is not None,
                            stats_format or "table")
        return func(*args, settings=settings, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


class StdioOut:
    """Standard output as GNU's stdio buffers it: by line on a terminal, in
    8 KiB blocks otherwise (a write per line costs a syscall a line). Give
    :meth:`flush` to ``Reporter.before_say``, as GNU's error() flushes
    stdout before its message.

    A refused write (ENOSPC, EIO, EBADF after ``>&-``: fd 1 holds /dev/null
    read-only) stops nothing: :meth:`close` reports the first, once, as
    GNU's close_stdout does (``write error: Bad file descriptor``, status
    1); what comes after it is dropped. A reader gone (EPIPE) is handed to
    ``on_broken_pipe`` (which dies of SIGPIPE, or unwinds first), unless
    SIGPIPE was ignored: then it is one more write error.
    """

    def __init__(self, on_broken_pipe: Callable[[BrokenPipeError], None],
                 ) -> None:
        self.on_broken_pipe = on_broken_pipe
        self.buf = bytearray()
        self.error: Optional[OSError] = None
        try:
            self.limit = 0 if os.isatty(1) else 8192
        except OSError:
            self.limit = 8192

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.buf += data
        if len(self.buf) > self.limit:
            self.flush()

    def flush(self) -> None:
        from .. import fdio   # not on the start-up path of every command

        data, self.buf = bytes(self.buf), bytearray()
        if not data or self.error is not None:
            return
        try:
            fdio.write_all(1, memoryview(data))
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) and not SIGPIPE_IGNORED:
                self.on_broken_pipe(exc)
            self.error = exc

    def close(self, reporter: "Reporter") -> None:
        """Write out what is held; report the first refused write."""
        self.flush()
        if self.error is not None:
            exc = self.error
            reporter.error(None, "write error: "
                           f"{exc.strerror or os.strerror(exc.errno or 0)}")


class Reporter:
    """GNU-style messages on stderr and the exit status they imply."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.status = 0
        #: called before each message: stdout buffered as stdio buffers
        #: it is written out first, as GNU's error() flushes stdout
        self.before_say: Optional[Callable[[], None]] = None

    def error(self, name: Optional[str], reason: str) -> None:
        """``prog: NAME: reason`` (or ``prog: reason``); the status becomes 1."""
        self.status = 1
        self.say(f"{name}: {reason}" if name is not None else reason)

    def say(self, message: str) -> None:
        """Print ``prog: message`` on stderr without changing the status."""
        if self.before_say is not None:
            self.before_say()
        write_stderr(f"{self.prog}: {message}\n")

    def usage(self, message: str) -> NoReturn:
        """A bad command line: the message, GNU's hint, status 1."""
        self.say(message)
        write_stderr(f"Try '{self.prog} --help' for more information.\n")
        raise SystemExit(1)

    def fail(self, message: str, status: int = 1) -> NoReturn:
        """Print ``prog: message`` and exit with ``status``."""
        self.say(message)
        raise SystemExit(status)


class Terminated(BaseException):
    """SIGTERM arrived: unwind (cleaning up), then die of the signal."""


def die_of_signal(signum: int) -> None:
    """Exit the way GNU tools do: killed by ``signum`` (status 128+n)."""
    _hold_signals()
    try:
        sys.stderr.flush()
    except Exception:
        pass
    try:
        # in C: Python's signal.signal would raise "Signal N ignored due
        # to race condition" for another signal pending, now SIG_DFL's
        from .._uring import lib
    except ImportError:       # the extension is what failed to load
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    else:
        lib.ut_die_of_signal(signum)
    os._exit(128 + signum)  # in case the signal is blocked


class PipeGone(BaseException):
    """A reader went away (SIGPIPE, or EPIPE on stderr) while a body that
    must clean up was running: unwind, then die of SIGPIPE as GNU does."""


#: run_main installed _on_sigpipe: a reader gone unwinds the body
_UNWIND_ON_SIGPIPE = False
#: PipeGone was raised once: the unwinding is not to be interrupted again
_PIPE_GONE = False
_MAIN_THREAD = _thread.get_ident()


def pipe_gone() -> None:
    """A write found no reader while SIGPIPE unwinds the body: raise
    PipeGone (once, from the main thread; later calls return, so that the
    clean-up it triggers is not cut short)."""
    global _PIPE_GONE
    if _PIPE_GONE or _thread.get_ident() != _MAIN_THREAD:
        return
    _PIPE_GONE = True
    _hold_signals()
    raise PipeGone()


def _hold_signals() -> None:
    """The first signal unwinds the body: a second Ctrl-C or SIGTERM would
    cut its clean-up short (files half-written by a helper thread or a
    chain in flight): from now on they do nothing; run_main then dies of
    the first one. (A handler doing nothing, not SIG_IGN: Python raises
    "Signal N ignored due to race condition" at some later line for one
    that arrived just before, with no handler left to run.)"""
    if _thread.get_ident() != _MAIN_THREAD:
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _do_nothing)


def _do_nothing(signum: int, frame: Any) -> None:
    pass


def _on_sigint(signum: int, frame: Any) -> None:
    _hold_signals()
    raise KeyboardInterrupt


def _on_sigpipe(signum: int, frame: Any) -> None:
    pipe_gone()


def write_stderr(text: str) -> None:
    """Write ``text`` on fd 2 as GNU's error() does: with the reader gone we
    die of SIGPIPE (unless it is ignored; after the body's clean-up when
    run_main was asked to unwind); other failures are dropped."""
    from ..fdio import write_all

    try:
        # a long line into a pipe can go out in parts: a blocking write
        # returns what it moved when a signal (or io_uring's task work,
        # which raises the same flag) interrupts it; a non-blocking one
        # EAGAIN when the pipe is full
        write_all(2, memoryview(text.encode("utf-8", "surrogateescape")))
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            if _UNWIND_ON_SIGPIPE:
                pipe_gone()
            else:
                broken_pipe()


def broken_pipe() -> None:
    """A write found no reader: die of SIGPIPE, quietly, as GNU tools do;
    unless the caller ignored SIGPIPE, then return (the caller reports
    EPIPE as any other write error)."""
    if not SIGPIPE_IGNORED:
        die_of_signal(signal.SIGPIPE)


def _on_sigterm(signum: int, frame: Any) -> None:
    _hold_signals()
    raise Terminated()


def guard_std_fds() -> Set[int]:
    """Occupy closed fds 0-2 with /dev/null; return which were closed.

    Otherwise the first file we open would become "stdout" (``>&-``).
    """
    closed: Set[int] = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        new = os.open(os.devnull, os.O_RDONLY)
        if new != fd:
            os.dup2(new, fd, inheritable=True)
            os.close(new)
    return closed


def run_main(reporter: Reporter, body: Callable[[], int],
             unwind_on_sigpipe: bool = False) -> None:
    """Run a command body under the shared exit conventions.

    SIGPIPE kills us silently (141), Ctrl-C is 130, SIGTERM 143, after the
    body's own clean-up has run; anything else unexpected is one line.
    ``unwind_on_sigpipe``: a reader gone (stdout, stderr, a pipe written
    to) raises PipeGone in the body, which cleans up as for SIGTERM, before
    we die of SIGPIPE (cp: the default action would kill it with files
    half-written and temporaries left).
    """
    global _UNWIND_ON_SIGPIPE
    if not SIGPIPE_IGNORED:
        if unwind_on_sigpipe:
            _UNWIND_ON_SIGPIPE = True
            signal.signal(signal.SIGPIPE, _on_sigpipe)
        else:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)   # not if the caller ignored it
    try:
        status = body()
    except PipeGone:
        die_of_signal(signal.SIGPIPE)
        raise SystemExit(141)
    except KeyboardInterrupt:
        die_of_signal(signal.SIGINT)
        raise SystemExit(130)
    except Terminated:
        die_of_signal(signal.SIGTERM)
        raise SystemExit(143)
    except BrokenPipeError:
        broken_pipe()
        reporter.fail(f"write error: {strerror(errno.EPIPE)}")
    except MemoryError:
        reporter.fail("memory exhausted")
    raise SystemExit(status)


def with_engine(settings: Settings, reporter: Reporter, stats: Stats,
                work: Callable[[str], T]) -> T:
    """Run ``work(engine)``, falling back from uring to sync if refused.

    ``work`` must raise UringUnavailable before it has done anything the
    user can see (it sets its ring up first).
    """
    from ..ring import UringUnavailable

    if settings.engine == "sync":
        return work("sync")
    try:
        return work("uring")
    except UringUnavailable as exc:
        if settings.engine == "uring":
            reporter.fail(exc.hint())
        reporter.say(f"warning: {exc.hint()}; using the sync engine")
        stats.fallback_reason = exc.hint()
        return work("sync")


def emit_stats(settings: Settings, stats: Stats) -> None:
    """Print --stats on stderr (rich is imported only here)."""
    if not settings.stats:
        return
    if settings.stats_format == "json":
        import json

        from ..fdio import write_all

        line = json.dumps(stats.to_dict(), sort_keys=True) + "\n"
        try:
            write_all(2, memoryview(line.encode()))   # see write_stderr
        except OSError:
            pass
        return
    from .ui import print_stats_table

    print_stats_table(stats)


def strerror(code: int) -> str:
    """The C library's text for an errno."""
    return os.strerror(code) if code else "Unknown error"


__all__ = ["LazyCommand", "fast_parse", "Takes", "Settings", "engine_options",
           "StdioOut",
           "expand_long_options", "gnu_command_class",
           "Reporter", "run_main", "with_engine", "emit_stats",
           "guard_std_fds", "die_of_signal", "broken_pipe", "stdout_failed",
           "write_stderr", "pipe_gone", "PipeGone",
           "Terminated",
           "strerror", "errno"]

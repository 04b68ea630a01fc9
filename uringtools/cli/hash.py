"""uring-hash: sha256sum / md5sum / b2sum over io_uring."""

from __future__ import annotations

import errno
import os
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import (Any, Callable, Dict, Generator, List, Optional,
                        Sequence, Tuple, Union)

from ..records import record
from ..checkfile import (CheckLine, CheckParser, format_line, format_status,
                         locale_quote, quotef)
from ..hashing import (ALGORITHMS, DEFAULT_ALGORITHM, DEFAULT_BLOCK_SIZE,
                       Algorithm, HashResult, get_algorithm, hash_files, probe)
from ..stats import Stats
from .common import (LazyCommand, Reporter, Settings, StdioOut, Takes,
                     emit_stats, guard_std_fds, run_main, with_engine)
from .progress import PROGRESS_OPTIONS, open_bar, operand_bytes, wanted

if TYPE_CHECKING:
    from .ui import ProgressBar

PROG = "uring-hash"

if TYPE_CHECKING:
    #: hash_files' results, closed early when the consumer stops
    Results = Generator[HashResult, None, None]
    #: run(names, lengths): hash the named files, BLAKE2 lengths per name
    RunHash = Callable[[List[str], List[Optional[int]]], Results]


def _die_of_sigpipe(exc: BrokenPipeError) -> None:
    raise exc   # run_main dies of SIGPIPE, quietly


#: digest lines, as sha256sum's stdio buffers them (made by run_hash)
_STDOUT = StdioOut(_die_of_sigpipe)


def _out(data: bytes) -> None:
    _STDOUT.write(data)


class CheckOptions(record("CheckOptions",  # type: ignore[misc]
                              "quiet status strict warn ignore_missing",
                              defaults=(False, False, False, False, False))):
    """The -c switches (bools): quiet, status, strict, warn, ignore_missing."""

    __slots__ = ()


class _Tally:
    """What one check file came to."""

    def __init__(self) -> None:
        self.misformatted = 0
        self.mismatched = 0
        self.unreadable = 0
        self.matched = False
        self.formatted = False
        self.lines: List[Tuple[int, Optional[CheckLine]]] = []


def _plural(n: int, one: str, many: str) -> str:
    return (one if n == 1 else many).replace("%d", str(n))


def _read_check_lines(name: str, reporter: Reporter) -> Optional[List[bytes]]:
    """The raw lines of a check file ('-' is stdin); None after an error,
    reported as GNU does: the reason when it cannot be opened, only "read
    error" when it cannot be read (a directory opens, then fails to read)."""
    shown = quotef("standard input" if name == "-" else name)
    try:
        stream = (os.fdopen(0, "rb", closefd=False) if name == "-"
                  else open(name, "rb"))
    except IsADirectoryError:
        reporter.error(None, f"{shown}: read error")
        return None
    except OSError as exc:
        reporter.error(shown, exc.strerror or str(exc))
        return None
    with stream:
        try:
            return stream.readlines()
        except OSError:
            reporter.error(None, f"{shown}: read error")
            return None


def _no_results() -> Results:
    yield from ()


def verify(checkfile: str, parser: CheckParser, algo: Algorithm,
           opts: CheckOptions, reporter: Reporter,
           run: RunHash) -> bool:
    """Check every line of one check file, printing as GNU sha256sum -c does.

    ``run(names, lengths)`` hashes the named files and yields HashResults
    in order. Returns True when this check file passes.
    """
    raw_lines = _read_check_lines(checkfile, reporter)
    if raw_lines is None:
        return False
    is_stdin = checkfile == "-"
    shown = quotef("standard input" if is_stdin else checkfile)
    tally = _Tally()
    for number, raw in enumerate(raw_lines, 1):
        text = parser.strip(raw)
        if text is None:
            continue
        line = parser.parse(text)
        if line is not None and is_stdin and line.name == b"-":
            line = None
        tally.lines.append((number, line))
    entries = [line for _, line in tally.lines if line is not None]
    names = [os.fsdecode(line.name) for line in entries]
    lengths: List[Optional[int]] = [line.bits for line in entries]
    results = run(names, lengths) if entries else _no_results()
    # report in line order, so stderr interleaves as GNU's does
    try:   # closing results early stops the readers
        for number, line in tally.lines:
            if line is None:
                tally.misformatted += 1
                if opts.warn:
                    reporter.say(f"{shown}: {number}: improperly formatted "
                                 f"{algo.tag} checksum line")
                continue
            tally.formatted = True
            _report_line(line, next(results), opts, reporter, tally)
        # run it to its end, where it joins the workers and merges their
        # stats (close() would abandon them)
        next(results, None)
    finally:
        results.close()
    if not tally.formatted:
        reporter.say(f"{shown}: no properly formatted checksum lines found")
    elif not opts.status:
        if tally.misformatted:
            reporter.say(_plural(tally.misformatted,
                                 "WARNING: %d line is improperly formatted",
                                 "WARNING: %d lines are improperly formatted"))
        if tally.unreadable:
            reporter.say(_plural(tally.unreadable,
                                 "WARNING: %d listed file could not be read",
                                 "WARNING: %d listed files could not be read"))
        if tally.mismatched:
            reporter.say(_plural(tally.mismatched,
                                 "WARNING: %d computed checksum did NOT match",
                                 "WARNING: %d computed checksums did NOT match"))
        if opts.ignore_missing and not tally.matched:
            reporter.say(f"{shown}: no file was verified")
    return (tally.formatted and tally.matched and tally.mismatched == 0
            and tally.unreadable == 0
            and (not opts.strict or tally.misformatted == 0))


def _report_line(line: CheckLine, result: HashResult, opts: CheckOptions,
                 reporter: Reporter, tally: _Tally) -> None:
    if result.digest is None:
        exc = result.error
        if opts.ignore_missing and exc is not None and exc.errno == errno.ENOENT:
            return
        tally.unreadable += 1
        reporter.say(f"{quotef(result.name)}: "
                     f"{exc.strerror if exc is not None else 'read error'}")
        if not opts.status:
            _out(format_status(line.name, "FAILED open or read"))
        return
    if result.digest == line.hexdigest:
        tally.matched = True
        if not opts.status and not opts.quiet:
            _out(format_status(line.name, "OK"))
    else:
        tally.mismatched += 1
        if not opts.status:
            _out(format_status(line.name, "FAILED"))


def _check_lengths(algorithm: str, texts: Sequence[str],
                   reporter: Reporter) -> Optional[int]:
    """The -l options as GNU b2sum reads them, in order: each one (by
    xdectoumax: blanks, an optional '+', ASCII digits, nothing after them,
    at most 2**64 - 1) a multiple of 8; then the last one no longer than
    the algorithm's digest. Exits with GNU's messages otherwise."""
    bits: Optional[int] = None
    text = ""
    for text in texts:
        import re   # only with -l: re costs ~8 ms of start-up
        if re.fullmatch(r"[ \t\n\v\f\r]*\+?[0-9]+", text) is None:
            reporter.fail(f"invalid length: {locale_quote(text)}")
        # leading zeros are free; int() refuses over 4300 digits
        digits = text.lstrip(" \t\n\v\f\r+").lstrip("0")
        bits = int(digits or "0") if len(digits) <= 20 else 1 << 64
        if bits >= 1 << 64:
            reporter.fail(f"invalid length: {locale_quote(text)}: "
                          f"{os.strerror(errno.EOVERFLOW)}")
        if bits % 8:
            reporter.say(f"invalid length: {locale_quote(text)}")
            reporter.fail("length is not a multiple of 8")
    known = ALGORITHMS.get(algorithm.lower())
    if bits and known is not None:
        if not known.variable:
            reporter.fail("--length is only supported with "
                          "--algorithm=blake2b or blake2s")
        if bits > known.bits:
            reporter.say(f"invalid length: {locale_quote(text)}")
            reporter.fail(f"maximum digest length for "
                          f"{locale_quote(known.tag)} is {known.bits} bits")
    return bits or None


def _build_command() -> Any:
    """The Click command (imported for --help, abbreviations, errors...)."""
    import click

    from .common import engine_options, gnu_command_class
    from .progress import progress_option

    @click.command(name="hash", cls=gnu_command_class(),
                   context_settings={"help_option_names": ["--help"]})
    @click.option("-a", "--algorithm", default=DEFAULT_ALGORITHM, show_default=True,
                  type=click.Choice(list(ALGORITHMS), case_sensitive=False),
                  help="digest algorithm (xxh64, xxh3, xxh128, blake3 need "
                       "the [fast] extra)")
    @click.option("-l", "--length", "length", multiple=True, metavar="BITS",
                  help="digest length in bits for blake2b/blake2s; a multiple "
                       "of 8, at most 512 (blake2b) or 256 (blake2s)")
    # -b, -t and --tag in command-line order: --tag means -b too, and
    # the last of the three decides whether --tag meets --text, as in GNU
    @click.option("-b", "--binary", "modes", flag_value="binary", multiple=True,
                  help="read in binary mode (output 'HEX *NAME')")
    @click.option("-t", "--text", "modes", flag_value="text", multiple=True,
                  help="read in text mode (the default)")
    @click.option("-c", "--check", is_flag=True,
                  help="read checksums from the FILEs and check them")
    @click.option("--tag", "modes", flag_value="tag", multiple=True,
                  help="create a BSD-style checksum")
    @click.option("-z", "--zero", is_flag=True,
                  help="end each output line with NUL, not newline, and "
                       "disable file name escaping")
    @click.option("--ignore-missing", is_flag=True,
                  help="don't fail or report status for missing files")
    @click.option("--quiet", "verbosity", flag_value="quiet",
                  help="don't print OK for each successfully verified file")
    @click.option("--status", "verbosity", flag_value="status",
                  help="don't output anything, status code shows success")
    @click.option("--strict", is_flag=True,
                  help="exit non-zero for improperly formatted checksum lines")
    @click.option("-w", "--warn", "verbosity", flag_value="warn",
                  help="warn about improperly formatted checksum lines")
    @click.option("--direct", is_flag=True,
                  help="read files with O_DIRECT into the aligned buffers "
                       "(no page cache); unaligned tails and filesystems that "
                       "refuse it fall back to cached reads")
    @progress_option
    @click.argument("files", nargs=-1)
    @engine_options(block_size=DEFAULT_BLOCK_SIZE)
    def hash_command(files: Tuple[str, ...], algorithm: str,
                     length: Tuple[str, ...], modes: Tuple[str, ...],
                     check: bool, zero: bool, ignore_missing: bool,
                     verbosity: Optional[str], strict: bool, direct: bool,
                     progress: Optional[bool], settings: Settings) -> None:
        """Print or check checksums of FILE(s), read through io_uring.

        With no FILE, or when FILE is -, read standard input.
        """
        run_hash(files, algorithm=algorithm, length=length, **_modes(modes),
                 check=check, zero=zero,
                 ignore_missing=ignore_missing, verbosity=verbosity,
                 strict=strict, settings=settings, direct=direct,
                 progress=progress)

    return hash_command


def run_hash(files: Sequence[str], *, algorithm: str = DEFAULT_ALGORITHM,
             length: Union[None, str, Sequence[str]] = None,
             mode: Optional[str] = None,
             check: bool = False, tag: bool = False, zero: bool = False,
             ignore_missing: bool = False, verbosity: Optional[str] = None,
             strict: bool = False, settings: Optional[Settings] = None,
             direct: bool = False, progress: Optional[bool] = None) -> None:
    """Run uring-hash on ``files`` and exit with GNU sha256sum's status."""
    settings = settings if settings is not None else Settings()
    block_size = settings.block_size or DEFAULT_BLOCK_SIZE
    # as GNU: the last of --quiet, --status and --warn wins
    quiet, status, warn = (verbosity == "quiet", verbosity == "status",
                           verbosity == "warn")
    reporter = Reporter(PROG)
    global _STDOUT
    _STDOUT = StdioOut(_die_of_sigpipe)
    reporter.before_say = _STDOUT.flush
    # as GNU: each -l is read and checked as getopt meets it, its maximum
    # once all options are read, and only then the option conflicts
    bits = _check_lengths(algorithm, (length,) if isinstance(length, str)
                          else tuple(length or ()), reporter)
    if tag and mode == "text":     # GNU's first check after the options
        reporter.usage("--tag does not support --text mode")
    if zero and check:
        reporter.usage("the --zero option is not supported when "
                       "verifying checksums")
    if tag and check:
        reporter.usage("the --tag option is meaningless when "
                       "verifying checksums")
    if mode is not None and check:
        reporter.usage("the --binary and --text options are "
                       "meaningless when verifying checksums")
    for flag, name in ((ignore_missing, "--ignore-missing"),
                       (status, "--status"), (warn, "--warn"),
                       (quiet, "--quiet"), (strict, "--strict")):
        if flag and not check:
            reporter.usage(f"the {name} option is meaningful only "
                           "when verifying checksums")
    try:
        algo = get_algorithm(algorithm, bits or None)
    except ValueError as exc:   # MissingExtra, an unknown name or length
        reporter.fail(str(exc))
    bits = bits or None
    closed = guard_std_fds()

    def body() -> int:
        operands = names = list(files) or ["-"]
        stats = Stats(command="hash")
        # fd 0 was closed: each '-' fails in its turn, the others are hashed
        no_stdin = 0 in closed and "-" in names and not check
        if no_stdin:
            names = [name for name in names if name != "-"]

        bar: Optional[ProgressBar] = None

        def progress_for(hnames: List[str]) -> Optional[Callable[[int], None]]:
            """The bar's callback for hashing ``hnames`` (sized by their
            regular files), opening the bar if this job wants one."""
            nonlocal bar
            job = 0

            def job_bytes() -> int:
                nonlocal job
                job = operand_bytes(hnames)
                return job

            if bar is None:
                if not wanted(progress, job_bytes):
                    return None
                bar = open_bar("hashing")
            bar.add_total(job or operand_bytes(hnames))
            return bar.advance

        def run_for(engine: str) -> RunHash:
            def run(hnames: List[str], lengths: List[Optional[int]]) -> Results:
                return hash_files(hnames, algo.name, bits=bits, engine=engine,
                                  block_size=block_size,
                                  queue_depth=settings.queue_depth,
                                  stats=stats, lengths=lengths,
                                  direct=direct,
                                  on_progress=progress_for(hnames))
            return run

        on_progress = None if check else progress_for(names)

        def work_hash(engine: str) -> None:
            if no_stdin and names:
                probe(engine)   # refuse before a '-' is reported
            results = hash_files(names, algo.name, bits=bits, engine=engine,
                                 block_size=block_size,
                                 queue_depth=settings.queue_depth, stats=stats,
                                 direct=direct, on_progress=on_progress)
            try:   # closing results early stops the readers
                for operand in operands:
                    if no_stdin and operand == "-":
                        reporter.error("-", "Bad file descriptor")
                        continue
                    result = next(results)
                    if result.digest is None:
                        exc = result.error
                        reporter.error(quotef(result.name),
                                       exc.strerror if exc is not None
                                       and exc.strerror else "read error")
                        continue
                    _out(format_line(os.fsencode(result.name), result.digest,
                                     tag=algo.tag_for(bits) if tag else None,
                                     binary=mode == "binary", zero=zero))
                # run it to its end, where it joins the workers and merges
                # their stats (close() would abandon them)
                next(results, None)
            finally:
                results.close()

        def work_check(engine: str) -> None:
            probe(engine)   # refuse before anything is printed
            variable = algo.variable
            parser = CheckParser(algo.tag, bits or algo.bits, variable=variable,
                                 max_bits=algo.bits)
            opts = CheckOptions(quiet, status, strict, warn, ignore_missing)
            run = run_for(engine)
            for checkfile in names:
                if checkfile == "-" and 0 in closed:
                    # fd 0 holds /dev/null: GNU fails to read it
                    reporter.error(None, f"{quotef('standard input')}: "
                                         "read error")
                    continue
                if not verify(checkfile, parser, algo, opts, reporter, run):
                    reporter.status = 1

        try:
            with_engine(settings, reporter, stats,
                        work_check if check else work_hash)
        finally:
            if bar is not None:
                bar.close()
        if 0 in closed and "-" in (list(files) or ["-"]):
            # as GNU's close_stdin at exit
            reporter.error("standard input", "Bad file descriptor")
        # GNU's close_stdout at exit. GNU loses the reason but for EBADF
        # (stdio drops the refused bytes, so close(2) succeeds); we give
        # it, as GNU cat does (test_faults.py)
        _STDOUT.close(reporter)
        emit_stats(settings, stats)
        return reporter.status

    run_main(reporter, body)


def _modes(modes: Sequence[str]) -> Dict[str, Any]:
    """run_hash's mode and tag from -b, -t and --tag in command-line
    order: --tag is -b too (GNU: ``--text --tag`` is fine, ``--tag
    --text`` is refused)."""
    last = modes[-1] if modes else None
    return {"mode": "binary" if last == "tag" else last, "tag": "tag" in modes}


def _fast_options() -> Dict[str, Tuple[str, Any]]:
    algorithm = ("algorithm", Takes(tuple(ALGORITHMS)))
    length = ("length*", Takes())
    flags = {"binary": ("modes*", "binary"), "text": ("modes*", "text"),
             "check": ("check", True), "zero": ("zero", True),
             "warn": ("verbosity", "warn")}
    return {
        "-a": algorithm, "--algorithm": algorithm, "-l": length,
        "--length": length,
        **{f"-{name[0]}": option for name, option in flags.items()},
        **{f"--{name}": option for name, option in flags.items()},
        "--tag": ("modes*", "tag"), "--ignore-missing": ("ignore_missing", True),
        "--quiet": ("verbosity", "quiet"), "--status": ("verbosity", "status"),
        "--strict": ("strict", True), "--direct": ("direct", True),
        **PROGRESS_OPTIONS,
    }


def _run_arguments(operands: List[str], found: Dict[str, Any],
                   settings: Settings) -> Dict[str, Any]:
    """run_hash's arguments from what fast_parse found."""
    modes = _modes(found.pop("modes", ()))
    return dict(found, **modes, files=operands, settings=settings)


COMMAND = LazyCommand("hash_command", _build_command, PROG, _fast_options,
                      _run_arguments, run_hash)
__getattr__ = COMMAND.module_getattr
fast_parse = COMMAND.fast_parse
main = COMMAND.main   # the entry point of ``uring-hash``

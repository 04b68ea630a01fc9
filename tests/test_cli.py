"""The command line: --help everywhere, --version, --stats on stderr only,
--stats-format json, and bad options as one line without a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, URING_CAT, URINGTOOLS, no_traceback, run, run_cat, stats_json, write

HELP_COMMANDS = [
    [URING_CAT, "--help"],
    [URINGTOOLS, "--help"],
    [URINGTOOLS, "cat", "--help"],
    [sys.executable, "-m", "uringtools", "cat", "--help"],
    [sys.executable, "-m", "uringtools", "--help"],
]


@pytest.mark.parametrize("cmd", HELP_COMMANDS, ids=lambda c: " ".join(Path(a).name for a in c))
def test_help(cmd: list) -> None:
    res = run(cmd)
    assert res.returncode == 0 and res.stderr == b""
    assert b"Usage:" in res.stdout
    if "cat" in (Path(cmd[0]).name, *cmd[1:2], *cmd[3:4]):
        for opt in (b"--engine", b"--block-size", b"--queue-depth", b"--stats",
                    b"-A", b"--number"):
            assert opt in res.stdout


@pytest.mark.parametrize("cmd", [[URING_CAT, "--version"], [URINGTOOLS, "--version"],
                                 [URINGTOOLS, "cat", "--version"]])
def test_version(cmd: list) -> None:
    from uringtools import __version__

    res = run(cmd)
    assert res.returncode == 0
    assert __version__.encode() in res.stdout


def test_stats_table_on_stderr(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "f", b"hello\n" * 1000)
    res = run_cat(["--stats", str(f)], engine=engine)
    assert res.returncode == 0
    assert res.stdout == f.read_bytes()
    assert b"bytes read" in res.stderr and b"6,000" in res.stderr


JSON_KEYS = {"engine", "block_size", "queue_depth", "sqes", "cqes", "enters", "ops",
             "bytes_read", "bytes_written", "elapsed_s", "cpu_user_s", "cpu_sys_s",
             "registered_buffers", "registered_files", "short_reads",
             "short_writes"}


@pytest.mark.parametrize("size", [0, 5, 300000])
def test_stats_json(tmp_path: Path, engine: str, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    f = write(tmp_path / "f", data)
    res = run_cat(["--stats-format", "json", "--block-size", "64K",
                   "--queue-depth", "3", str(f)], engine=engine)
    assert res.returncode == 0 and res.stdout == data
    stats = stats_json(res.stderr)
    assert JSON_KEYS <= set(stats)
    assert stats["engine"] == engine
    assert stats["block_size"] == 65536 and stats["queue_depth"] == 3
    assert stats["bytes_read"] == stats["bytes_written"] == size
    if engine == "uring":
        # one file goes through the ring whatever its size (small files
        # are copied by read(2) and write(2) only among several)
        assert stats["sqes"] == stats["cqes"] == sum(stats["ops"].values())
        assert stats["enters"] >= 1
        assert stats["registered_buffers"] is True
        assert "files_copied_by_syscalls" not in stats["extra"]
    else:
        assert stats["sqes"] == stats["cqes"] == stats["enters"] == 0


def test_stats_json_with_formatting(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"a\n\n\nb\n")
    res = run_cat(["-ns", "--stats-format", "json", str(f)])
    stats = stats_json(res.stderr)
    assert stats["bytes_read"] == 6
    assert stats["bytes_written"] == len(res.stdout)


@pytest.mark.parametrize("value", ["abc", "0", "100", "2G", "-1", "12Q"])
def test_bad_block_size(value: str) -> None:
    res = run_cat(["--block-size", value, "/dev/null"])
    assert res.returncode != 0
    no_traceback(res.stderr)
    assert res.stdout == b""
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(
        b"uring-cat: invalid value for '--block-size'"), res.stderr
    assert lines[1] == b"Try 'uring-cat --help' for more information."


@pytest.mark.parametrize("args", [["--queue-depth", "0"], ["--engine", "nope"],
                                  ["--no-such-option"]])
def test_bad_options(args: list) -> None:
    res = run_cat(args + ["/dev/null"])
    assert res.returncode == 1   # GNU's status for a bad command line
    no_traceback(res.stderr)
    assert res.stderr.endswith(
        b"\nTry 'uring-cat --help' for more information.\n")


@pytest.mark.parametrize("prog,gnu,args", [
    ("uring-cat", "cat", ["--no-such"]), ("uring-cat", "cat", ["-y"]),
    ("uring-cp", "cp", ["--no-such", "a", "b"]), ("uring-cp", "cp", ["-y", "a", "b"]),
    ("uring-cp", "cp", ["a", "-t"]),
    ("uring-cp", "cp", ["--target-directory"]),
    ("uring-hash", "sha256sum", ["--no-such"]), ("uring-hash", "sha256sum", ["-y"]),
    ("uring-hash", "sha256sum", ["--tag=1"]),
    ("uring-hash", "sha256sum", ["--quiet=x", "-c"])])
def test_bad_command_line_like_gnu(tmp_path: Path, prog: str, gnu: str,
                                   args: list) -> None:
    """GNU getopt's message, its "Try ... --help" line and status 1 (Click
    printed its usage and exited 2)."""
    ours = run([str(Path(URING_CAT).parent / prog), *args], cwd=tmp_path)
    theirs = run([gnu, *args], cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stdout == theirs.stdout == b""
    assert ours.stderr == theirs.stderr.replace(gnu.encode(), prog.encode())


@pytest.mark.parametrize("size", ["4K", "4k", "4096", "1M", "512"])
def test_good_block_sizes(tmp_path: Path, size: str) -> None:
    f = write(tmp_path / "f", b"z" * 10000)
    res = run_cat(["--block-size", size, "--stats-format", "json", str(f)])
    assert res.stdout == f.read_bytes()
    units = {"K": 1024, "M": 1 << 20}
    expected = int(size[:-1]) * units[size[-1].upper()] if size[-1].isalpha() \
        else int(size)
    assert stats_json(res.stderr)["block_size"] == expected


@pytest.mark.parametrize("command, default", [
    ("cat", 128 << 10), ("cp", 128 << 10), ("hash", 1 << 20)])
def test_default_block_size(tmp_path: Path, command: str, default: int) -> None:
    """hash reads 1 MiB at a time (each read costs it Python and task work,
    bench/README.md); cat and cp keep GNU's 128 KiB. --help says which,
    and --block-size still overrides it."""
    f = write(tmp_path / "f", b"z" * 10000)
    operands = [str(f), str(tmp_path / "g")] if command == "cp" else [str(f)]
    prog = str(BIN / f"uring-{command}")
    for given, expected in (([], default), (["--block-size", "64K"], 65536)):
        # --stats-format takes the fast path, --block-size goes through Click
        res = run([prog, *given, "--stats-format", "json", *operands])
        assert res.returncode == 0, res.stderr
        assert stats_json(res.stderr)["block_size"] == expected
    shown = "1M" if default == 1 << 20 else "128K"
    help_text = b" ".join(run([prog, "--help"]).stdout.split())
    assert f"bytes per read or write request [default: ({shown})]".encode() in help_text


def test_double_dash_operand(tmp_path: Path) -> None:
    write(tmp_path / "-n", b"dash\n")
    res = run_cat(["--", "-n"], cwd=tmp_path)
    assert res.stdout == b"dash\n" and res.returncode == 0


#: modules a plain run must not import: Click, rich, typing (13 ms), and what
#: signal's enums, collections, threading and re would cost (5-10 ms each).
HEAVY = ("click", "rich", "typing", "signal", "enum", "collections",
         "functools", "threading", "re")


def _without_site() -> list:
    """python -S, with our package and cffi's backend on the path: an
    editable install's finder (a site .pth) loads collections, enum and re
    before any code of ours runs, and would hide our importing them."""
    import _cffi_backend
    import uringtools
    paths = [str(Path(uringtools.__file__).parent.parent),
             str(Path(_cffi_backend.__file__).parent)]
    return [sys.executable, "-S", "-c",
            f"import sys\nsys.path[:0] = {paths!r}\nBEFORE = set(sys.modules)\n"]


def _start_up(prog: str, module: str, argv: list, **kwargs: Any):
    """Run ``prog argv`` through ``module``'s main under ``python -S``;
    returns the result and the HEAVY modules it imported."""
    code = (f"sys.argv = [{prog!r}, *{argv!r}]\n"
            f"from {module} import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code\n"
            "sys.stdout.flush()\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules"
            " and m not in BEFORE), file=sys.stderr)\n")
    *argv0, prefix = _without_site()
    res = run([*argv0, prefix + code], **kwargs)
    assert res.returncode == 0, res.stderr
    return res, res.stderr.decode().strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["FILE"], ["-", "FILE"], ["-n", "FILE"],
                                  ["--number", "--engine", "sync", "FILE"]])
def test_plain_cat_keeps_heavy_modules_off_start_up(tmp_path: Path,
                                                    argv: list) -> None:
    """Start-up is most of a small cat: operands and GNU's short flags need
    none of the HEAVY modules."""
    write(tmp_path / "f", b"a\nb\n")
    args = [str(tmp_path / "f") if a == "FILE" else a for a in argv]
    res, heavy = _start_up("uring-cat", "uringtools.cli.cat", args,
                           input=b"in\n")
    assert heavy == "[]"
    expected = {"FILE": b"a\nb\n", "-": b"in\na\nb\n",
                "-n": b"     1\ta\n     2\tb\n",
                "--number": b"     1\ta\n     2\tb\n"}[argv[0]]
    assert res.stdout == expected


@pytest.mark.parametrize("argv", [["f"], ["-c", "SUMS"],
                                  ["--check", "--quiet", "--strict", "SUMS"],
                                  ["-a", "md5", "--tag", "f"]])
def test_plain_hash_keeps_heavy_modules_off_start_up(tmp_path: Path,
                                                     argv: list) -> None:
    """uring-hash FILE, and -c SUMS (sha256sum's other job), with GNU's long
    options: none of the HEAVY modules at start-up."""
    import hashlib
    write(tmp_path / "f", b"a\nb\n")
    digest = hashlib.sha256(b"a\nb\n").hexdigest()
    write(tmp_path / "SUMS", f"{digest}  f\n".encode())
    res, heavy = _start_up("uring-hash", "uringtools.cli.hash", argv,
                           cwd=tmp_path)
    assert heavy == "[]"
    md5 = hashlib.md5(b"a\nb\n").hexdigest()
    assert res.stdout == {"f": f"{digest}  f\n", "-c": "f: OK\n", "--check": "",
                          "-a": f"MD5 (f) = {md5}\n"}[argv[0]].encode()


@pytest.mark.parametrize("argv", [["cat", "--number", "f"], ["hash", "-c", "SUMS"],
                                  ["cp", "--archive", "f", "g"]])
def test_group_subcommands_keep_heavy_modules_off_start_up(
        tmp_path: Path, argv: list) -> None:
    """``uringtools cat|cp|hash ...`` (and ``python -m uringtools``) take
    the subcommand's own parse too: no Click, and the same result."""
    import hashlib
    write(tmp_path / "f", b"a\nb\n")
    digest = hashlib.sha256(b"a\nb\n").hexdigest()
    write(tmp_path / "SUMS", f"{digest}  f\n".encode())
    res, heavy = _start_up("uringtools", "uringtools.cli", argv, cwd=tmp_path)
    assert heavy == "[]"
    assert res.stdout == {"cat": b"     1\ta\n     2\tb\n", "hash": b"f: OK\n",
                          "cp": b""}[argv[0]]
    if argv[0] == "cp":
        assert (tmp_path / "g").read_bytes() == b"a\nb\n"
    slow = run([sys.executable, "-m", "uringtools", argv[0], "--help"])
    assert slow.returncode == 0 and b"Usage:" in slow.stdout   # Click's


@pytest.mark.parametrize("argv", [["f", "g"], ["-r", "d", "e"], ["-a", "d", "e"],
                                  ["--archive", "--reflink=auto", "d", "e"],
                                  ["--sparse=always", "-t", "d", "f"]])
def test_plain_cp_keeps_heavy_modules_off_start_up(tmp_path: Path,
                                                   argv: list) -> None:
    """uring-cp of a file or a small tree: none of the HEAVY modules."""
    write(tmp_path / "f", b"a\nb\n")
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "x", b"x\n")
    res, heavy = _start_up("uring-cp", "uringtools.cli.cp", argv, cwd=tmp_path)
    assert heavy == "[]"
    copied = tmp_path / {"g": "g", "e": "e/x", "f": "d/f"}[argv[-1]]
    assert copied.read_bytes() == (b"x\n" if copied.name == "x" else b"a\nb\n")


#: command lines each command parses without Click; ``posix``: with
#: POSIXLY_CORRECT set (the first operand ends the options)
FAST_LINES = {
    "cat": [
        [], ["a"], ["-n", "a"], ["a", "-b", "b"], ["-A", "a"], ["-et", "a"],
        ["-vET", "a"], ["-s", "-u", "a", "-"], ["-bn", "a"], ["-t", "-e", "a"],
        ["--number", "a"], ["--show-all", "--squeeze-blank", "a", "--show-tabs"],
        ["--number-nonblank", "--show-ends", "--show-nonprinting", "a"],
        ["--no-splice", "a"], ["--splice", "--no-splice", "--splice", "a"],
        ["--direct", "a"], ["--engine", "sync", "a"],
        ["--engine=uring", "--block-size", "64K", "a"], ["--queue-depth", "7", "a"],
        ["--queue-depth=4096", "--block-size=1M", "a"], ["--stats", "a"],
        ["a", "--stats-format", "json"], ["--stats-format=table", "a"],
        ["-n", "--stats", "a", "--stats-format", "json", "b"],
        ["--stats", "--stats", "-"], ["--block-size", "512", "-"],
        ["posix", "-n", "a", "-b", "--stats"], ["posix", "a", "--number"],
    ],
    "cp": [
        [], ["a"], ["a", "b"], ["-L", "-P", "a", "b"], ["-P", "-L", "a", "b"],
        ["-LP", "a", "b"], ["a", "-r", "b"], ["-rv", "a", "-n", "b"],
        ["-", "-a", "x"], ["-aLP", "s", "d"], ["-fpRT", "a", "b"], ["-T", "a", "b"],
        ["-rL", "-a", "a", "b"], ["-P", "-a", "a", "b"], ["-raLP", "a", "b"],
        ["--archive", "a", "b"], ["--dereference", "--archive", "a", "b"],
        ["--archive", "--no-dereference", "--dereference", "a", "b"],
        ["-t", "d", "a"], ["-td", "a", "b"], ["-vtd", "a"],
        ["--target-directory=d", "a"], ["--target-directory", "d", "a", "b"],
        ["--reflink", "a", "b"], ["--reflink=never", "a", "b"],
        ["--reflink=always", "--reflink=auto", "a", "b"],
        ["--reflink", "never", "a"],    # never the next argument
        ["--sparse", "always", "a", "b"], ["--sparse=never", "-a", "a", "b"],
        ["--preserve", "-p", "a", "b"], ["--preserve", "a", "b"],
        ["--force", "--no-clobber", "--update", "--recursive", "a", "b"],
        ["--no-target-directory", "--verbose", "a", "b"],
        ["--fsync", "--direct", "--splice", "a", "b"], ["--no-splice", "a", "b"],
        ["--progress", "a", "b"], ["--no-progress", "a", "b"],
        ["--engine", "sync", "-rv", "a", "b", "--stats"],
        ["--queue-depth", "1", "--block-size", "4K", "a", "b"],
        ["-t", "d", "-t", "e", "a"], ["-t", "-v", "a"], ["--target-directory=", "a"],
        ["posix", "-r", "a", "b", "-v"],
    ],
    "hash": [
        [], ["a"], ["-", "a"], ["-c", "s"], ["--check", "--quiet", "s"], ["-cw", "s"],
        ["--status", "--warn", "-c", "s"], ["-asha1", "a"],
        ["-a", "md5", "--tag", "a"], ["--algorithm=blake2b", "-l", "256", "a"],
        ["-l", "128", "-l", "256", "-a", "blake2b", "a"],
        ["--length=8", "-ablake2s", "a"], ["-l256", "--length", "8", "a"],
        ["-b", "a"], ["-t", "--binary", "a"], ["-t", "--tag", "a"],
        ["--tag", "--text", "a"], ["-b", "--tag", "-b", "a"], ["-z", "a"], ["--zero", "--text", "a"],
        ["-zba", "sha512", "a"], ["--ignore-missing", "--strict", "-c", "s"],
        ["--direct", "--progress", "a"], ["--no-progress", "a"],
        ["-c", "--stats-format=json", "s"], ["--engine", "sync", "-c", "s"],
        ["posix", "-c", "s", "--quiet"],
    ],
}

#: command lines left to Click: help, errors, and what only Click spells out
CLICK_LINES = {
    "common": [
        ["--help"], ["--version"], ["--", "-n"], ["a", "--"], ["-x", "a"],
        ["--engine", "fast", "a"], ["--engine"], ["--block-size", "12", "a"],
        ["--block-size=2G", "a"], ["--queue-depth", "0", "a"],
        ["--queue-depth=x", "a"], ["--stats-format"], ["--stats-format", "xml", "a"],
        ["--stats-format=", "a"], ["--stats=1", "a"], ["--stat", "a"],
        ["--eng", "sync", "a"], ["--direct=yes", "a"],
    ],
    "cat": [["--numb", "a"], ["--number=2", "a"], ["-nx", "a"]],
    "cp": [["--sparse=al", "a", "b"], ["--reflink=a", "a", "b"],
           ["--reflink=-v", "a", "b"],
           ["--preserve=mode", "a", "b"], ["-t"],
           ["--verb", "a", "b"], ["--sparse"], ["--target-directory"]],
    "hash": [["-a", "SHA1", "a"], ["-a"], ["-a", "sha3", "a"], ["--chec", "s"],
             ["-l"], ["--check=yes", "s"]],
}


def _run_keywords(module: Any, argv: list, fast: bool,
                  monkeypatch: pytest.MonkeyPatch) -> dict:
    """The arguments ``module``'s run_* gets for ``argv``: from its own
    fast_parse, or from Click; Settings as a dict, sequences as lists."""
    import inspect

    name = "run_" + module.__name__.rsplit(".", 1)[1]
    signature = inspect.signature(getattr(module, name))
    seen: dict = {}
    if fast:
        seen.update(module.fast_parse(argv))
    else:
        with monkeypatch.context() as patch:
            patch.setattr(module, name, lambda *a, **kw: seen.update(
                signature.bind(*a, **kw).arguments))
            module._build_command().main(argv, prog_name=f"uring-{name[4:]}",
                                         standalone_mode=False)
    bound = signature.bind(**seen)
    bound.apply_defaults()
    out = {}
    for key, value in bound.arguments.items():
        if hasattr(value, "stats_format"):
            value = vars(value)
        elif isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            value = list(value) or None   # Click's () for -l is run_hash's None
        out[key] = value
    return out


@pytest.mark.parametrize("command, argv", [
    (command, argv) for command, lines in FAST_LINES.items() for argv in lines])
def test_fast_parse_matches_click(command: str, argv: list,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What each command parses itself, to skip importing Click, gives its
    run_* exactly what Click would: GNU's short flags, bundled or not,
    values attached or next, long options, the engine options, and
    POSIXLY_CORRECT."""
    import importlib

    module = importlib.import_module(f"uringtools.cli.{command}")
    if argv[:1] == ["posix"]:
        argv = argv[1:]
        monkeypatch.setenv("POSIXLY_CORRECT", "1")
    else:
        monkeypatch.delenv("POSIXLY_CORRECT", raising=False)
    assert module.fast_parse(argv) is not None
    assert _run_keywords(module, argv, True, monkeypatch) == \
        _run_keywords(module, argv, False, monkeypatch)


@pytest.mark.parametrize("command, argv", [
    (command, argv) for command in ("cat", "cp", "hash")
    for argv in CLICK_LINES["common"] + CLICK_LINES[command]])
def test_click_parses_the_rest(command: str, argv: list,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.delenv("POSIXLY_CORRECT", raising=False)
    module = importlib.import_module(f"uringtools.cli.{command}")
    assert module.fast_parse(argv) is None


#: tokens random command lines are made of: options in full, abbreviated,
#: bundled, with good and bad values, operands that look like values
TOKENS = {
    "common": ["a", "b", "-", "--", "--stats", "--stats-format", "json", "xml",
               "--stats-format=table", "--engine", "sync", "uring", "--engine=x",
               "--block-size", "64K", "12", "--block-size=1M", "--queue-depth",
               "3", "0", "--queue-depth=9", "--direct", "--dir", "--help", "-x",
               "--stats=1", "+5", "5_0", "1g", "4097", "--block-size=4097"],
    "cat": ["-n", "-b", "-A", "-et", "-vET", "-su", "-nx", "--number", "--numb",
            "--show-all", "--show-tabs", "--squeeze-blank", "--splice",
            "--no-splice", "--number=1"],
    "cp": ["-a", "-L", "-P", "-r", "-R", "-f", "-n", "-u", "-p", "-v", "-T",
           "-t", "-td", "-rvt", "d", "-aLP", "--archive", "--dereference",
           "--no-dereference", "--preserve", "--preserve=mode", "--reflink",
           "--reflink=never", "--reflink=al", "never", "--sparse", "always",
           "--sparse=auto", "--target-directory", "--target-directory=d",
           "--no-target-directory", "--verbose", "--verb", "--fsync",
           "--progress", "--no-progress", "--recursive", "--force",
           "--reflink=-v", "--target-directory=-v", "-t-v", "--ref"],
    "hash": ["-c", "-w", "-b", "-t", "-z", "-a", "md5", "SHA1", "-asha1",
             "blake2b", "-l", "256", "-l8", "--length", "--length=16", "--check",
             "--chec", "--quiet", "--status", "--warn", "--strict", "--tag",
             "--zero", "--binary", "--text", "--ignore-missing",
             "--algorithm", "--algorithm=blake2s", "-cz", "--progress"],
}


@pytest.mark.parametrize("command", ["cat", "cp", "hash"])
def test_fast_parse_never_disagrees_with_click(command: str) -> None:
    """Random command lines: whenever a command parses one itself, Click
    accepts it too and gives run_* the same arguments."""
    import importlib

    from hypothesis import HealthCheck, given, settings, strategies as st

    import click

    module = importlib.import_module(f"uringtools.cli.{command}")
    tokens = TOKENS["common"] + TOKENS[command]
    patch = pytest.MonkeyPatch()

    @settings(max_examples=600, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(argv=st.lists(st.sampled_from(tokens), max_size=7),
           posix=st.booleans())
    def check(argv: list, posix: bool) -> None:
        if posix:
            patch.setenv("POSIXLY_CORRECT", "1")
        else:
            patch.delenv("POSIXLY_CORRECT", raising=False)
        if module.fast_parse(argv) is None:
            return
        fast = _run_keywords(module, argv, True, patch)
        try:
            slow = _run_keywords(module, argv, False, patch)
        except click.ClickException as exc:
            raise AssertionError(f"{argv}: Click refuses it: {exc}") from None
        assert fast == slow, argv

    try:
        check()
    finally:
        patch.undo()


@pytest.mark.parametrize("prog", ["uring-cat", "uring-cp", "uring-hash"])
def test_stats_json_run_does_not_import_click(tmp_path: Path, prog: str) -> None:
    """`--stats-format json` (what `uringtools bench` passes) costs no Click:
    the output is the same, and the JSON line is on stderr."""
    import json

    write(tmp_path / "f", b"a\nb\n")
    operands = {"uring-cat": ["f"], "uring-cp": ["f", "g"],
                "uring-hash": ["f"]}[prog]
    module = prog.split("-")[1]
    *argv0, prefix = _without_site()
    code = (prefix + f"sys.argv = ['{prog}', '--stats-format', 'json', "
            f"*{operands!r}]\n"
            f"from uringtools.cli.{module} import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code\n"
            "sys.stdout.flush()\n"
            "print(sorted(m for m in ('click', 'rich') if m in sys.modules"
            " and m not in BEFORE), file=sys.stderr)\n")
    res = run([*argv0, code], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.decode().strip().splitlines()
    assert lines[-1] == "[]"
    assert json.loads(lines[-2])["command"] == module


@pytest.mark.parametrize("gnu, ours", [
    (["cp", "--verb", "a", "b"], ["uring-cp"]),
    (["cp", "--recursiv", "d", "e"], ["uring-cp"]),
    (["cp", "--reflin=never", "a", "b"], ["uring-cp"]),
    (["cp", "--spar=al", "a", "b"], ["uring-cp"]),
    (["cp", "--no-tar", "--verb", "a", "b"], ["uring-cp"]),
    (["cp", "--refl", "a", "b"], ["uring-cp"]),
    (["sha256sum", "--chec", "SUMS"], ["uring-hash"]),
    (["sha256sum", "--sta", "--check", "SUMS"], ["uring-hash"]),
    (["sha256sum", "--q", "a"], ["uring-hash"]),
    (["sha256sum", "--ta", "a"], ["uring-hash"]),
    (["cat", "--numbe", "a"], ["uring-cat"]),
    (["cat", "--show-n", "a"], ["uring-cat"]),
])
def test_long_option_abbreviations_like_gnu(tmp_path: Path, gnu: list,
                                            ours: list) -> None:
    """getopt_long's abbreviations for every command: a unique prefix is
    the option; where it also names one of our own options (--sta:
    --status and --stats) GNU's is meant; an ambiguous one gets GNU's
    message and status. Click refused them all."""
    import hashlib as _hashlib
    results = []
    for argv in (gnu, [str(BIN / ours[0]), *gnu[1:]]):
        root = tmp_path / ("gnu" if argv is gnu else "ours")
        root.mkdir()
        write(root / "a", b"a\x01\n")
        (root / "d").mkdir()
        write(root / "d" / "x", b"x\n")
        digest = _hashlib.sha256(b"a\x01\n").hexdigest()
        write(root / "SUMS", f"{digest}  a\n".encode())
        res = run(argv, cwd=root)
        tree = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        stderr = res.stderr
        for prog in (b"uring-cp", b"uring-hash", b"uring-cat"):
            stderr = stderr.replace(prog, gnu[0].encode())
        results.append((res.returncode, res.stdout, stderr, tree))
    if "--refl" in gnu:   # GNU leaves an empty 'b' when the clone fails
        assert results[0][3] == sorted(results[1][3] + ["b"])
        results[0] = results[0][:3] + (results[1][3],)
    assert results[1] == results[0]
    no_traceback(results[1][2])


@pytest.mark.parametrize("which", ["message", "stats"])
def test_stderr_lines_survive_partial_writes(monkeypatch, capfd, which: str) -> None:
    """A write(2) into a pipe returns what it moved when a signal or
    io_uring's task work interrupts it: a 300 KB line (sha256sum -c of a
    check line naming a 300 KB file) came out cut at 128 KiB, followed by
    the next message. Each write here moves at most 4,000 bytes."""
    import os

    from uringtools import fdio
    from uringtools.cli import common
    from uringtools.stats import Stats

    real_write = os.write
    calls = []

    def partial_write(fd: int, data: Any) -> int:
        calls.append(fd)
        return real_write(fd, bytes(data[:4000]))

    monkeypatch.setattr(fdio.os, "write", partial_write)
    if which == "message":
        name = "n" * 300_000
        common.Reporter("uring-hash").error(name, "No such file or directory")
        want = f"uring-hash: {name}: No such file or directory\n"
    else:
        stats = Stats()
        stats.extra["note"] = "x" * 50_000
        settings = common.Settings(stats=True, stats_format="json")
        common.emit_stats(settings, stats)
        want = None
    monkeypatch.undo()
    err = capfd.readouterr().err
    assert len(calls) > 10 and set(calls) == {2}
    if want is not None:
        assert err == want
    else:
        import json
        assert err.endswith("\n") and err.count("\n") == 1
        assert json.loads(err)["extra"]["note"] == "x" * 50_000

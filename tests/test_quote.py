"""File-name quoting against GNU coreutils on the same names and locales.

uring-cp's ``-v`` lines and messages (``copy.quote``, GNU's quoteaf) and
uring-hash's / uring-cat's messages (``checkfile.quotef``, GNU's quotef)
must be byte for byte GNU's: under LC_ALL=C every byte >= 0x80 is escaped,
under a UTF-8 locale only what is not UTF-8 or does not print; runs of
escapes share one $'...'.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from uringtools import copy
from uringtools.checkfile import quotef

BIN = Path(sys.executable).parent
URING = {"cp": str(BIN / "uring-cp"), "sha256sum": str(BIN / "uring-hash"),
         "cat": str(BIN / "uring-cat")}
PROGS = {"cp": "uring-cp", "sha256sum": "uring-hash", "cat": "uring-cat"}

pytestmark = pytest.mark.skipif(
    any(shutil.which(p) is None for p in URING), reason="needs GNU coreutils")

#: the environment each run gets on top of one without any locale variable;
#: "unset" is GNU's C locale, where Python coerces itself to C.UTF-8 (PEP 538)
LOCALES: Dict[str, Dict[str, str]] = {
    "C": {"LC_ALL": "C"},
    "C.UTF-8": {"LC_ALL": "C.UTF-8"},
    "LANG=C.UTF-8": {"LANG": "C.UTF-8"},
    "LC_CTYPE=C.UTF-8": {"LC_CTYPE": "C.UTF-8"},
    "unset": {},
}

NAMES: List[bytes] = [
    # ASCII
    b"plain", b"sp ace", b" ", b"  two", b"-dash", b"dollar$x", b'dq"x',
    b"back\\slash", b"a:b", b"@at", b"%+,-.x", b"x]", b"[x", b"star*",
    b"bang!", b"q?", b"semi;", b"pipe|", b"tick`", b"caret^", b"paren()",
    b"amp&", b"lt<gt>", b"eq=", b"#hash", b"x#hash", b"~tilde", b"x~",
    b"{", b"}", b"{x}",
    # single quotes
    b"it's", b"'", b"''", b"'lead", b"trail'", b"a'b'c", b"a'b\\c", b"#x'",
    b"x#'", b"{'", b"@'", b"?'", b"it's $x", b'it\'s "x"',
    # control characters, alone and in runs
    b"new\nline", b"tab\tx", b"cr\rx", b"\a\b\f\v", b"bell\x07x",
    b"\x01\x02ctl", b"del\x7f", b"esc\x1b[0m", b"x\n\ty", b"\n\t", b"\t",
    b"a\tb\tc", b"ends\n", b"\x1f",
    # bytes that are not UTF-8, alone and in runs
    b"\xff", b"a\xff\xfeb", b"\xff\xfe", b"end\xfe", b"\xff\n\xfe",
    b"\xe2\x82A", b"end\xe2\x82", b"\xc0\xafover", b"\xed\xa0\x80sur",
    b"\xf4\x90\x80\x80big", b"\x80",
    # UTF-8: printable, and characters that do not print
    b"\xc3\xbc-utf8", b"caf\xc3\xa9", b"\xf0\x9f\x98\x80",
    b"\xe6\x97\xa5\xe6\x9c\xac", b"\xc2\xa0nbsp", b"\xc2\xadshy",
    b"\xe2\x80\x8bzw", b"\xee\x80\x80pua", b"\xcd\xb8unassigned",
    b"\xc2\x85nel", b"\xe2\x80\xa8ls", b"\xc3\xbc\xff", b"\xc3\xbc\n\xff",
    b"\xc3\xbc\xc2\x85",
    # a single quote next to escapes (GNU's second pass starts "escaping")
    b"q'\xff", b"\xff'", b"\xff'\xff", b"a'\n", b"'\n", b"\n'", b"'\t'",
    b"a'\xc3\xbc", b"\xc3\xbc'\xff", b"q'\xc2\x85", b"'\xc3\xbc",
    b"q'" + b"\x01" * 100,   # longer than GNU's first 256-byte buffer
]


def env_for(loc: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LC_") and k not in ("LANG", "LANGUAGE")}
    env.update(LOCALES[loc])
    return env


def run(argv: List[str], cwd: Path, loc: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env_for(loc), capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def verbose_lines(root: Path, loc: str) -> Tuple[List[bytes], List[bytes]]:
    """``cp -v`` and ``uring-cp -v`` of every name, one line each."""
    lines = []
    for who, argv in (("gnu", ["cp"]), ("ours", [URING["cp"]])):
        src = root / who / "src"
        src.mkdir(parents=True)
        (root / who / "out").mkdir()
        for name in NAMES:
            (src / os.fsdecode(name)).write_bytes(b"x")
        res = run([*argv, "-v", "--", *map(os.fsdecode, NAMES), "../out"],
                  src, loc)
        assert res.returncode == 0, res.stderr
        assert res.stderr == b""
        lines.append(res.stdout.split(b"\n")[:-1])
    return lines[0], lines[1]


@pytest.fixture(scope="module")
def verbose(tmp_path_factory: pytest.TempPathFactory
            ) -> Callable[[str], Tuple[List[bytes], List[bytes]]]:
    """One GNU and one uring-cp run per locale, shared by the cases."""
    cache: Dict[str, Tuple[List[bytes], List[bytes]]] = {}

    def get(loc: str) -> Tuple[List[bytes], List[bytes]]:
        if loc not in cache:
            cache[loc] = verbose_lines(tmp_path_factory.mktemp("quote"), loc)
        return cache[loc]
    return get


@pytest.mark.parametrize("loc", list(LOCALES))
def test_cp_verbose_one_line_per_name(verbose, loc: str) -> None:
    gnu, ours = verbose(loc)
    assert len(gnu) == len(ours) == len(NAMES)


@pytest.mark.parametrize("loc", list(LOCALES))
@pytest.mark.parametrize("index", range(len(NAMES)),
                         ids=[ascii(n)[2:-1] for n in NAMES])
def test_cp_verbose_quote_like_gnu(verbose, loc: str, index: int) -> None:
    gnu, ours = verbose(loc)
    assert ours[index] == gnu[index]


MISSING = [b"", b"nope", b"no pe", b"it's", b"q'\xff", b"\xff\xfe", b"x\n\ty",
           b"\xc3\xbc", b"\xc3\xbc\xff", b"a:b", b"#x", b"x#", b"{", b"\x80'"]


@pytest.mark.parametrize("loc", list(LOCALES))
@pytest.mark.parametrize("prog", ["cp", "sha256sum", "cat"])
def test_messages_quote_like_gnu(tmp_path: Path, loc: str, prog: str) -> None:
    """``cannot stat NAME`` (quoteaf) and ``NAME: No such file`` (quotef)."""
    operands = ["--", *map(os.fsdecode, MISSING)]
    if prog == "cp":
        (tmp_path / "dst").mkdir()
        operands.append("dst")
    gnu = run([prog, *operands], tmp_path, loc)
    ours = run([URING[prog], *operands], tmp_path, loc)
    assert gnu.returncode == ours.returncode == 1
    assert gnu.stderr.count(b"\n") == len(MISSING)
    assert ours.stderr.replace(PROGS[prog].encode() + b":",
                               prog.encode() + b":") == gnu.stderr


# -- the rules, without GNU ---------------------------------------------------

C_CASES = [
    ("plain", "'plain'"), ("", "''"), ("it's", '"it\'s"'),
    ("a'b\\c", "'a'\\''b\\c'"),
    (os.fsdecode(b"\xc3\xbc-utf8"), "''$'\\303\\274''-utf8'"),
    (os.fsdecode(b"a\xff\xfeb"), "'a'$'\\377\\376''b'"),
    (os.fsdecode(b"\xff\xfe"), "''$'\\377\\376'"),
    ("x\n\ty", "'x'$'\\n\\t''y'"),
    (os.fsdecode(b"q'\xff"), "'''q'\\'''$'\\377'"),
    (os.fsdecode(b"\xff'"), "''$'\\377'\\'''"),
]
UTF8_CASES = [
    (os.fsdecode(b"\xc3\xbc-utf8"), "'\u00fc-utf8'"),
    (os.fsdecode(b"a'\xc3\xbc"), "\"a'\u00fc\""),
    (os.fsdecode(b"\xc2\x85"), "''$'\\302\\205'"),
    (os.fsdecode(b"\xc3\xbc\xff"), "'\u00fc'$'\\377'"),
]


@pytest.mark.parametrize("utf8", [False, True])
def test_quote_rules(monkeypatch: pytest.MonkeyPatch, utf8: bool) -> None:
    monkeypatch.setattr(copy, "_utf8_ctype", utf8)
    cases = UTF8_CASES if utf8 else C_CASES
    for name, want in cases:
        assert copy.quote(name) == want, name
    for name, want in C_CASES:
        if name.isascii():
            assert copy.quote(name) == want, name
    assert quotef("x#") == "x#" and quotef("a:b") == "'a:b'"
    assert quotef(os.fsdecode(b"\xc3\xbc")) == (
        "\u00fc" if utf8 else "''$'\\303\\274'")

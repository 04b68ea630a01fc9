"""GNU cat's -A -b -e -E -n -s -t -T -u -v, alone and combined, on input with
every byte value, blank-line runs, tabs, CR LF and no final newline, across
several files (line numbers and blank runs carry over) and across read
chunks (small --block-size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import gnu_cat, run_cat, write
from uringtools.catfmt import CatFormat, CatFormatter

OPTIONS = ["-A", "-b", "-e", "-E", "-n", "-s", "-t", "-T", "-u", "-v",
           "-bn", "-sn", "-sb", "-ET", "-vT", "-nbsA", "-sE", "-nE", "-snT",
           "--number --squeeze-blank --show-ends"]


@pytest.fixture
def inputs(tmp_path: Path, all_bytes: bytes) -> list:
    write(tmp_path / "all", all_bytes)
    write(tmp_path / "blank", b"\n\n\nfoo\n\n\n\nbar")          # no final newline
    write(tmp_path / "tabs", b"\n\n\tbaz\t\n\t\t\n\n\n")
    write(tmp_path / "cr_end", b"line\r")                      # CR ends the file
    write(tmp_path / "nl", b"\n")
    # CR LF split across a 512-byte read: CR is byte 511, LF byte 512
    write(tmp_path / "cr_split", b"y" * 511 + b"\r\n" + b"z\r" + b"\n" * 600)
    write(tmp_path / "empty", b"")
    return ["all", "blank", "tabs", "cr_end", "nl", "cr_end", "all", "cr_split",
            "empty", "blank", "cr_end"]


@pytest.mark.parametrize("opts", OPTIONS)
def test_format_like_gnu(tmp_path: Path, inputs: list, engine: str, opts: str) -> None:
    args = opts.split()
    gnu = gnu_cat(args + inputs, cwd=tmp_path)
    assert gnu.returncode == 0
    res = run_cat(["--block-size", "512", "--queue-depth", "3", *args, *inputs],
                  engine=engine, cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == b""
    assert res.stdout == gnu.stdout


@pytest.mark.parametrize("opts", ["-A", "-nE", "-s"])
def test_format_default_block_size_and_stdin(tmp_path: Path, inputs: list,
                                             engine: str, opts: str) -> None:
    data = b"".join((tmp_path / name).read_bytes() for name in inputs)
    gnu = gnu_cat([opts], input=data)
    res = run_cat([opts], engine=engine, input=data)
    assert res.stdout == gnu.stdout and res.returncode == 0


def test_line_numbers_past_six_digits() -> None:
    data = b"x\n" * 1000010
    res = run_cat(["-n"], input=data)
    gnu = gnu_cat(["-n"], input=data)
    assert res.stdout[-40:] == gnu.stdout[-40:]
    assert res.stdout == gnu.stdout


# -- the formatter itself, fed byte by byte -----------------------------------

@pytest.mark.parametrize("fmt", [
    CatFormat(show_ends=True), CatFormat(number=True, squeeze_blank=True),
    CatFormat(number_nonblank=True, show_tabs=True),
    CatFormat(show_nonprinting=True, show_ends=True),
])
def test_formatter_chunking_is_invisible(fmt: CatFormat, all_bytes: bytes) -> None:
    whole = CatFormatter(fmt)
    expected = whole.feed(all_bytes) + whole.flush()
    bytewise = CatFormatter(fmt)
    got = b"".join(bytewise.feed(all_bytes[i:i + 1]) for i in range(len(all_bytes)))
    assert got + bytewise.flush() == expected


def test_formatter_pending_cr() -> None:
    f = CatFormatter(CatFormat(show_ends=True))
    assert f.feed(b"a\r") == b"a"
    assert f.feed(b"\nb\r") == b"^M$\nb"
    assert f.feed(b"c") == b"\rc"
    assert f.feed(b"\r") == b""
    assert f.flush() == b"\r"
    assert f.flush() == b""


def test_inactive_format() -> None:
    assert not CatFormat().active
    assert CatFormat(squeeze_blank=True).active

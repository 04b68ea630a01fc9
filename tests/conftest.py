"""Shared fixtures: run the installed ``uring-cat`` (and GNU cat) in
subprocesses, so io_uring really writes to fd 1, and compare the two."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import pytest

BIN = Path(sys.executable).parent
URING_CAT = str(BIN / "uring-cat")
URINGTOOLS = str(BIN / "uringtools")
GNU_CAT = "cat"  # found on PATH, so its messages start with "cat: "
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SECCOMP_EXEC = str(TESTS / "seccomp_exec.py")
ENGINES = ["uring", "sync"]

#: PATH with the venv first, for `bash -c` scripts that call uring-cat.
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           LC_ALL="C")
ENV.pop("NO_COLOR", None)

StdIn = Union[None, int, Path, str]


def _open_stdin(stdin: StdIn) -> Any:
    if isinstance(stdin, (str, Path)):
        return open(stdin, "rb")
    return stdin


def run(cmd: Sequence[str], *, stdin: StdIn = None, input: Optional[bytes] = None,
        stdout: Any = subprocess.PIPE, cwd: Optional[Path] = None,
        timeout: float = 60, env: Optional[Dict[str, str]] = None
        ) -> subprocess.CompletedProcess:
    """Run ``cmd``; stdin may be a path (opened for reading), an fd or None."""
    fin = _open_stdin(stdin)
    try:
        return subprocess.run(list(cmd), stdin=fin, input=input, stdout=stdout,
                              stderr=subprocess.PIPE, cwd=cwd, timeout=timeout,
                              env=env or ENV)
    finally:
        if fin is not stdin and fin is not None:
            fin.close()


def cat_cmd(args: Sequence[str], engine: Optional[str] = None) -> list:
    """The uring-cat command line, with --engine when given."""
    return [URING_CAT, *(["--engine", engine] if engine else []), *args]


def run_cat(args: Sequence[str], *, engine: Optional[str] = None, **kw: Any
            ) -> subprocess.CompletedProcess:
    """Run the installed uring-cat."""
    return run(cat_cmd(args, engine), **kw)


def gnu_cat(args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
    """Run GNU cat with the same arguments."""
    return run([GNU_CAT, *args], **kw)


def gnu_stderr(text: bytes) -> bytes:
    """GNU cat's messages as uring-cat prints them."""
    return b"".join(b"uring-" + line if line.startswith(b"cat: ") else line
                    for line in text.splitlines(keepends=True))


def assert_like_gnu(args: Sequence[str], *, engine: Optional[str] = None,
                    check_stderr: bool = True, **kw: Any
                    ) -> subprocess.CompletedProcess:
    """uring-cat and GNU cat give the same stdout, stderr and status."""
    stdin = kw.pop("stdin", None)
    ours = run_cat(args, engine=engine, stdin=stdin, **kw)
    theirs = gnu_cat(args, stdin=stdin, **kw)
    assert ours.stdout == theirs.stdout, (
        f"stdout differs: {len(ours.stdout)} vs GNU {len(theirs.stdout)} bytes; "
        f"first difference at {_first_diff(ours.stdout, theirs.stdout)}")
    if check_stderr:
        assert ours.stderr == gnu_stderr(theirs.stderr)
    assert ours.returncode == theirs.returncode
    return ours


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def sh(script: str, *, cwd: Optional[Path] = None, timeout: float = 60,
       stdin: StdIn = None) -> subprocess.CompletedProcess:
    """``bash -c script`` with the venv's bin first on PATH."""
    return run(["bash", "-c", script], cwd=cwd, timeout=timeout, stdin=stdin)


def stats_json(stderr: bytes) -> Dict[str, Any]:
    """The --stats-format json object (the last line of stderr)."""
    lines = stderr.strip().splitlines()
    assert lines, "no statistics on stderr"
    return json.loads(lines[-1])


def no_traceback(stderr: bytes) -> None:
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")


@pytest.fixture(params=ENGINES)
def engine(request: Any) -> str:
    """Each test runs with both engines."""
    return request.param


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def all_bytes() -> bytes:
    """Every byte value, tabs, blank-line runs, CR LF, no final newline."""
    import random

    rnd = random.Random(1234)
    parts = [bytes(range(256)), b"\n\n\n\n", b"a\tb\t\tc\n", b"\n\n\n",
             b"\t\n", b" \n\n", bytes(rnd.randrange(256) for _ in range(30000)),
             b"\n" * 7, b"x\r\ny\r\n\r\n\rz\r\r\n", b"tail without newline"]
    return b"".join(parts)


# -- running as nobody ------------------------------------------------------
# The venv's python lives under /root (mode 700), so nobody runs the system
# python of the same version with the venv's site-packages and the checkout.

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"


def _system_python_matches() -> bool:
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c",
                              "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return False
    return out.strip() == str(tuple(sys.version_info[:2]))


def as_nobody(argv: Sequence[str], prefix: Sequence[str] = ()) -> list:
    """``uringtools ARGV...`` as user nobody, after ``prefix`` (e.g. prlimit)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to nobody")
    if not _system_python_matches():
        pytest.skip(f"{SYSTEM_PYTHON} is not Python {sys.version_info[:2]}")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    return [*NOBODY, "env", f"PYTHONPATH={site}{os.pathsep}{ROOT}", *prefix,
            SYSTEM_PYTHON, "-m", "uringtools", *argv]


@pytest.fixture
def shared_tmp(tmp_path_factory: Any) -> Path:
    """A directory nobody can read and write (tmp_path's parents are 0700)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="uringtools-test-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)

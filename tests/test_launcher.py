"""The installed commands are C launchers (csrc/launcher.c) in front of
Python: what Python alone gets wrong at start-up, compared with GNU.

- A directory on stdin, stdout or stderr: Python cannot start ("Fatal
  Python error: init_sys_streams"); GNU reports it like any bad file.
- SIGPIPE ignored by the caller (``trap '' PIPE``): Python ignores it
  anyway, so it cannot tell; GNU then reports "write error: Broken pipe"
  with status 1 instead of dying of the signal.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import BIN, ENV, URING_CAT, URINGTOOLS, no_traceback

URING_HASH = str(BIN / "uring-hash")
URING_CP = str(BIN / "uring-cp")
DATA = b"".join(b"line %d\n" % i for i in range(50000))   # > a pipe's buffer


def _ours(gnu: bytes) -> bytes:
    """GNU's messages as ours read: `cat:` -> `uring-cat:`."""
    for tool, ours in ((b"cat: ", b"uring-cat: "), (b"cp: ", b"uring-cp: "),
                       (b"sha256sum: ", b"uring-hash: ")):
        gnu = gnu.replace(tool, ours)
    return gnu


def _run(argv: List[str], *, stdin: Optional[int] = None,
         stdout: Optional[int] = None, stderr: Optional[int] = None,
         sigpipe_ignored: bool = False, cwd: Optional[Path] = None
         ) -> subprocess.CompletedProcess:
    # restore_signals=False: the child inherits this Python's ignored SIGPIPE
    return subprocess.run(argv, stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE if stderr is None else stderr,
                          env=ENV, cwd=cwd, timeout=60,
                          restore_signals=not sigpipe_ignored)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    return path


def _dir_fd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@pytest.mark.parametrize("ours, gnu", [
    ([URING_CAT], ["cat"]),
    ([URING_CAT, "-"], ["cat", "-"]),
    ([URINGTOOLS, "cat"], ["cat"]),
    ([URING_HASH], ["sha256sum"]),
    ([URING_HASH, "-c"], ["sha256sum", "-c"]),
    ([URING_HASH, "-c", "-"], ["sha256sum", "-c", "-"]),
], ids=lambda a: " ".join(Path(x).name for x in a))
def test_stdin_a_directory_like_gnu(tmp_path: Path, ours: List[str],
                                    gnu: List[str]) -> None:
    fd = _dir_fd(tmp_path)
    try:
        got = _run(ours, stdin=fd, stdout=subprocess.PIPE)
        want = _run(gnu, stdin=fd, stdout=subprocess.PIPE)
    finally:
        os.close(fd)
    no_traceback(got.stderr)
    assert got.stderr.replace(b"uringtools cat:", b"uring-cat:") \
        == _ours(want.stderr)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
    assert got.returncode == 1


def test_stdin_a_directory_between_files_like_gnu(tmp_path: Path,
                                                  data: Path) -> None:
    """The files around `-` are still copied, in order."""
    fd = _dir_fd(tmp_path)
    try:
        got = _run([URING_CAT, str(data), "-", str(data)], stdin=fd,
                   stdout=subprocess.PIPE)
        want = _run(["cat", str(data), "-", str(data)], stdin=fd,
                    stdout=subprocess.PIPE)
    finally:
        os.close(fd)
    assert got.stdout == want.stdout == DATA * 2
    assert got.stderr == _ours(want.stderr) == b"uring-cat: -: Is a directory\n"
    assert got.returncode == want.returncode == 1


@pytest.mark.parametrize("args", [["DATA"], ["--help"], ["-n", "DATA"]])
def test_stdout_a_directory_like_gnu(tmp_path: Path, data: Path,
                                     args: List[str]) -> None:
    """A directory opened for reading as stdout (``1< dir``): every write
    fails with EBADF: "write error: Bad file descriptor", status 1."""
    argv = [str(data) if a == "DATA" else a for a in args]
    fd = _dir_fd(tmp_path)
    try:
        got = _run([URING_CAT, *argv], stdout=fd)
        want = _run(["cat", *argv], stdout=fd)
    finally:
        os.close(fd)
    no_traceback(got.stderr)
    assert got.stderr == _ours(want.stderr)
    assert got.stderr == b"uring-cat: write error: Bad file descriptor\n"
    assert got.returncode == want.returncode == 1


def test_hash_stdout_a_directory(tmp_path: Path, data: Path) -> None:
    """GNU sha256sum says only "write error" (stdio loses the reason);
    ours gives it, as GNU cat does. Same status."""
    fd = _dir_fd(tmp_path)
    try:
        got = _run([URING_HASH, str(data)], stdout=fd)
        want = _run(["sha256sum", str(data)], stdout=fd)
    finally:
        os.close(fd)
    assert want.stderr == b"sha256sum: write error\n"
    assert got.stderr == b"uring-hash: write error: Bad file descriptor\n"
    assert got.returncode == want.returncode == 1


def test_stderr_a_directory_like_gnu(tmp_path: Path) -> None:
    """Nothing can be said; the status still tells."""
    fd = _dir_fd(tmp_path)
    try:
        for argv in (["/nonexistent"], [str(tmp_path)]):
            got = _run([URING_CAT, *argv], stdout=subprocess.PIPE, stderr=fd)
            want = _run(["cat", *argv], stdout=subprocess.PIPE, stderr=fd)
            assert got.returncode == want.returncode == 1
            assert got.stdout == want.stdout == b""
    finally:
        os.close(fd)


def _closed_pipe() -> int:
    """The write end of a pipe whose reader is gone."""
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("ours, gnu", [
    ([URING_CAT, "DATA"], ["cat", "DATA"]),
    ([URING_CAT, "--engine", "sync", "DATA"], ["cat", "DATA"]),
    ([URING_CAT, "-n", "DATA"], ["cat", "-n", "DATA"]),
    ([URINGTOOLS, "cat", "DATA"], ["cat", "DATA"]),
    ([URING_CP, "DATA", "/dev/stdout"], ["cp", "DATA", "/dev/stdout"]),
    ([URING_CP, "-v", "DATA", "COPY"], ["cp", "-v", "DATA", "COPY"]),
], ids=lambda a: " ".join(Path(x).name for x in a))
def test_sigpipe_ignored_like_gnu(tmp_path: Path, data: Path,
                                  ours: List[str], gnu: List[str]) -> None:
    """``trap '' PIPE``: the write error is reported, status 1."""
    def argv(args: List[str], copy: str) -> List[str]:
        return [str(data) if a == "DATA" else
                str(tmp_path / copy) if a == "COPY" else a for a in args]

    w = _closed_pipe()
    try:
        got = _run(argv(ours, "ours"), stdout=w, sigpipe_ignored=True)
        want = _run(argv(gnu, "gnu"), stdout=w, sigpipe_ignored=True)
    finally:
        os.close(w)
    no_traceback(got.stderr)
    assert got.stderr.replace(b"uringtools cat:", b"uring-cat:") \
        == _ours(want.stderr)
    assert b"Broken pipe" in got.stderr
    assert got.returncode == want.returncode == 1
    if "COPY" in ours:   # -v's line is lost, the copy is made
        assert (tmp_path / "ours").read_bytes() == DATA


def test_hash_sigpipe_ignored(data: Path) -> None:
    """GNU sha256sum: "write error" (stdio loses the reason), status 1."""
    w = _closed_pipe()
    try:
        got = _run([URING_HASH, str(data), str(data)], stdout=w,
                   sigpipe_ignored=True)
        want = _run(["sha256sum", str(data), str(data)], stdout=w,
                    sigpipe_ignored=True)
    finally:
        os.close(w)
    assert want.stderr == b"sha256sum: write error\n"
    assert got.stderr == b"uring-hash: write error: Broken pipe\n"
    assert got.returncode == want.returncode == 1


@pytest.mark.parametrize("ours, gnu", [
    ([URING_CAT, "DATA"], ["cat", "DATA"]),
    ([URING_HASH, "DATA"], ["sha256sum", "DATA"]),
    ([URING_CP, "DATA", "/dev/stdout"], ["cp", "DATA", "/dev/stdout"]),
], ids=lambda a: " ".join(Path(x).name for x in a))
def test_sigpipe_default_still_kills_quietly(data: Path, ours: List[str],
                                             gnu: List[str]) -> None:
    w = _closed_pipe()
    try:
        got = _run([str(data) if a == "DATA" else a for a in ours], stdout=w)
        want = _run([str(data) if a == "DATA" else a for a in gnu], stdout=w)
    finally:
        os.close(w)
    assert got.returncode == want.returncode == -signal.SIGPIPE
    assert got.stderr == want.stderr == b""


def test_cp_into_dev_stdout_pipe_like_gnu(tmp_path: Path, data: Path) -> None:
    """/dev/stdout's last link names "pipe:[N]", no path: the FIFO is opened
    through the links, as GNU opens it."""
    outs = []
    for tool in (URING_CP, "cp"):
        res = subprocess.run(f"{tool} {data} /dev/stdout | cat", shell=True,
                             capture_output=True, env=ENV, timeout=60)
        assert res.returncode == 0 and res.stderr == b""
        outs.append(res.stdout)
    assert outs[0] == outs[1] == DATA


def test_launcher_followed_through_a_symlink(tmp_path: Path, data: Path) -> None:
    link = tmp_path / "my-cat"
    link.symlink_to(URING_CAT)
    res = _run([str(link), str(data)], stdout=subprocess.PIPE)
    assert (res.returncode, res.stdout, res.stderr) == (0, DATA, b"")


def test_launcher_without_its_python_half(tmp_path: Path) -> None:
    """A launcher copied away from _uringtools says so, status 127."""
    lone = tmp_path / "uring-cat"
    shutil.copy2(URING_CAT, lone)
    res = _run([str(lone), "/dev/null"], stdout=subprocess.PIPE)
    assert res.returncode == 127
    assert res.stderr == (f"uring-cat: cannot run {tmp_path}/_uringtools: "
                          "No such file or directory\n").encode()


def test_stray_note_moves_nothing(data: Path) -> None:
    """A note the launcher did not write (a variable left in the caller's
    environment) moves only parked directories: here it names stdout as
    stdin's parked copy, and stdin is still read."""
    env = dict(ENV, URINGTOOLS_LAUNCH="0=1 2=7")
    with open(data, "rb") as stdin:
        res = subprocess.run([str(BIN / "_uringtools"), "uring-cat"],
                             env=env, stdin=stdin, capture_output=True,
                             timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, DATA, b"")


def test_unknown_command_for_the_python_half() -> None:
    res = subprocess.run([str(BIN / "_uringtools"), "uring-mv"], env=ENV,
                         capture_output=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith(b"_uringtools: unknown command 'uring-mv'")


def test_python_path_with_a_space(tmp_path: Path, data: Path) -> None:
    """pip writes the environment's python whole into the #! line of
    _uringtools (``#!/home/me/my env/bin/python``), where the kernel takes
    the first word for the interpreter (``/home/me/my``): every command
    was "cannot run", status 127. The launcher runs that line itself."""
    bindir = tmp_path / "my env" / "bin"
    bindir.mkdir(parents=True)
    python = bindir / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    body = (BIN / "_uringtools").read_text().split("\n", 1)[1]
    entry = bindir / "_uringtools"
    entry.write_text(f"#!{python}\n{body}")
    entry.chmod(0o755)
    for name in ("uring-cat", "uring-hash"):
        shutil.copy2(BIN / name, bindir / name)
    res = _run([str(bindir / "uring-cat"), str(data)], stdout=subprocess.PIPE)
    assert (res.returncode, res.stdout, res.stderr) == (0, DATA, b"")
    fd = _dir_fd(tmp_path)      # and the note still reaches Python
    try:
        res = _run([str(bindir / "uring-hash"), "-"], stdin=fd,
                   stdout=subprocess.PIPE)
    finally:
        os.close(fd)
    assert (res.returncode, res.stderr) == (1, b"uring-hash: -: Is a directory\n")


def _block_sigpipe() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})


@pytest.mark.parametrize("ours, gnu", [
    ([URING_CAT, "DATA"], ["cat", "DATA"]),
    ([URING_HASH, "DATA"], ["sha256sum", "DATA"]),
    ([URING_CP, "-v", "DATA", "COPY"], ["cp", "-v", "DATA", "COPY"]),
], ids=lambda a: " ".join(Path(x).name for x in a))
def test_sigpipe_blocked_like_gnu(tmp_path: Path, data: Path,
                                  ours: List[str], gnu: List[str]) -> None:
    """SIGPIPE blocked (sigprocmask) rather than ignored: a write with no
    reader fails with EPIPE all the same and GNU reports it, status 1; we
    exited 141 in silence."""
    def argv(args: List[str], copy: str) -> List[str]:
        return [str(data) if a == "DATA" else
                str(tmp_path / copy) if a == "COPY" else a for a in args]

    results = []
    for args, copy in ((ours, "ours"), (gnu, "gnu")):
        w = _closed_pipe()
        try:
            results.append(subprocess.run(
                argv(args, copy), stdout=w, stderr=subprocess.PIPE, env=ENV,
                timeout=60, preexec_fn=_block_sigpipe))
        finally:
            os.close(w)
    got, want = results
    assert (got.returncode, want.returncode) == (1, 1)
    if ours[0] == URING_HASH:   # GNU: "write error" (stdio loses the reason)
        assert got.stderr == b"uring-hash: write error: Broken pipe\n"
    else:
        assert got.stderr == _ours(want.stderr)


def test_without_proc(tmp_path: Path, data: Path) -> None:
    """/proc not mounted (a chroot, a build sandbox): /proc/self/exe cannot
    say where the launcher is. Run by name along PATH (the usual way) or
    through a symlink, it was "cannot find _uringtools", status 127; it now
    looks where the shell found it, as the #! scripts it replaced did."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or \
            subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs a mount namespace of its own (root, unshare -m)")
    link = tmp_path / "my-cat"
    link.symlink_to(URING_CAT)
    script = ('umount -l /proc && test ! -e /proc/self/exe && '
              'uring-cat "$1" && "$2" "$1" && cd "$3" && ./uring-cat "$1"')
    res = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh",
                          str(data), str(link), str(BIN)],
                         env=ENV, capture_output=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, DATA * 3, b"")


@pytest.mark.parametrize("ignored", [False, True], ids=["default", "ignored"])
@pytest.mark.parametrize("ours, gnu", [
    ([URING_CAT, "--help"], ["cat", "--help"]),
    ([URING_CP, "--version"], ["cp", "--version"]),
    ([URING_HASH, "--help"], ["sha256sum", "--help"]),
    ([URINGTOOLS, "--help"], ["cat", "--help"]),
    ([URINGTOOLS, "hash", "--version"], ["sha256sum", "--version"]),
], ids=lambda a: " ".join(Path(x).name for x in a))
def test_help_into_a_closed_pipe_like_gnu(ours: List[str], gnu: List[str],
                                          ignored: bool) -> None:
    """--help or --version with no reader: GNU dies of SIGPIPE, or with
    SIGPIPE ignored says "write error: Broken pipe", status 1. Click
    caught the EPIPE itself and exited 1 in silence either way."""
    w = _closed_pipe()
    try:
        got = _run(ours, stdout=w, sigpipe_ignored=ignored)
        want = _run(gnu, stdout=w, sigpipe_ignored=ignored)
    finally:
        os.close(w)
    no_traceback(got.stderr)
    assert got.returncode == want.returncode == \
        (1 if ignored else -signal.SIGPIPE)
    prog = Path(ours[0]).name.encode()
    assert got.stderr == (prog + b": write error: Broken pipe\n"
                          if ignored else b"")


@pytest.mark.parametrize("note", ["0=99999999999999999999", "1=\u00b2",
                                  "2=\u0663", "sigpipe=ignored 0=-1 1="])
def test_hostile_note_no_traceback(data: Path, note: str) -> None:
    """A note the launcher did not write, with fd numbers too large for a C
    int or made of non-ASCII digits ('²'.isdigit()), was a traceback
    (OverflowError, ValueError); such words are ignored."""
    env = dict(ENV, URINGTOOLS_LAUNCH=note)
    res = subprocess.run([str(BIN / "_uringtools"), "uring-cat", str(data)],
                         env=env, capture_output=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, DATA, b"")


@pytest.mark.parametrize("ignored", [False, True], ids=["default", "ignored"])
@pytest.mark.parametrize("ours, gnu", [
    ([URING_CAT, "--bogus"], ["cat", "--bogus"]),
    ([URING_CAT, "-x", "DATA"], ["cat", "-x", "DATA"]),
    ([URING_CAT, "MISSING"], ["cat", "MISSING"]),
    ([URING_CP], ["cp"]),
    ([URING_CP, "-t"], ["cp", "-t"]),
    ([URING_CP, "MISSING", "COPY"], ["cp", "MISSING", "COPY"]),
    ([URING_HASH, "--bogus"], ["sha256sum", "--bogus"]),
    ([URING_HASH, "-c", "--tag"], ["sha256sum", "-c", "--tag"]),
    ([URING_HASH, "MISSING"], ["sha256sum", "MISSING"]),
    ([URINGTOOLS, "cat", "--bogus"], ["cat", "--bogus"]),
], ids=lambda a: " ".join(Path(x).name for x in a))
def test_error_into_a_closed_stderr_pipe_like_gnu(
        tmp_path: Path, data: Path, ours: List[str], gnu: List[str],
        ignored: bool) -> None:
    """A usage error or a bad operand with stderr a pipe nobody reads: GNU
    dies of SIGPIPE writing the message, or with SIGPIPE ignored exits 1.
    A usage error used to exit 1 either way."""
    def argv(args: List[str]) -> List[str]:
        return [str(data) if a == "DATA" else
                str(tmp_path / "missing") if a == "MISSING" else
                str(tmp_path / "copy") if a == "COPY" else a for a in args]

    w = _closed_pipe()
    try:
        got = _run(argv(ours), stdout=subprocess.DEVNULL, stderr=w,
                   sigpipe_ignored=ignored)
        want = _run(argv(gnu), stdout=subprocess.DEVNULL, stderr=w,
                    sigpipe_ignored=ignored)
    finally:
        os.close(w)
    assert got.returncode == want.returncode == \
        (1 if ignored else -signal.SIGPIPE)
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("command", ["uring-cp", "uring-cat", "uring-hash",
                                     "uringtools"])
def test_ctrl_c_at_start_up_dies_quietly(tmp_path: Path, data: Path,
                                         command: str) -> None:
    """Ctrl-C at any moment of start-up (Python importing site or our
    modules, Click parsing): killed by SIGINT without a word, as GNU; a
    traceback (or "Fatal Python error: init_import_site") came out when it
    landed in an import. The launcher holds SIGINT until our code takes
    it. And cp leaves nothing half made: each file copied is whole."""
    import random
    import time

    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}").write_bytes(DATA[:4096 + i])
    argv = {"uring-cp": [URING_CP, "-r", "--stats-format", "table"],
            "uring-cat": [URING_CAT, "--stats-format", "table", str(data)],
            "uring-hash": [URING_HASH, "--stats-format", "table", str(data)],
            "uringtools": [URINGTOOLS, "cat", "--stats", str(data)]}[command]
    rng = random.Random(7)
    for i in range(25):
        args = argv + ([str(src), str(tmp_path / f"d{i}")]
                       if command == "uring-cp" else [])
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=ENV)
        time.sleep(rng.uniform(0, 0.06))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        no_traceback(err)
        assert err == b"" or proc.returncode == 0, err
        assert proc.returncode in (0, -signal.SIGINT), (i, proc.returncode, err)
        if command == "uring-cp" and (tmp_path / f"d{i}").exists():
            for f in (tmp_path / f"d{i}").iterdir():
                assert f.read_bytes() == (src / f.name).read_bytes(), f

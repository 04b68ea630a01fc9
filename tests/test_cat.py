"""uring-cat against GNU cat 9.1: the bytes, the messages, the exit status,
for every kind of input and output, with both engines."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from conftest import (NOBODY, as_nobody, assert_like_gnu, cat_cmd, gnu_cat, gnu_stderr,
                      no_traceback, run, run_cat, sh, stats_json, write)

BS = 4096
SIZES = [0, 1, BS - 1, BS, BS + 1, 3 * BS, 9 * BS - 1]


def data_of(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes (no repeats at BS)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


# -- block boundaries -------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 8])
@pytest.mark.parametrize("size", SIZES)
def test_block_boundaries_uring(tmp_path: Path, size: int, depth: int) -> None:
    f = write(tmp_path / "f", data_of(size))
    ours = run_cat(["--block-size", "4K", "--queue-depth", str(depth), str(f)],
                   engine="uring")
    assert ours.returncode == 0 and ours.stderr == b""
    assert ours.stdout == gnu_cat([str(f)]).stdout == f.read_bytes()


@pytest.mark.parametrize("size", SIZES)
def test_block_boundaries_sync(tmp_path: Path, size: int) -> None:
    f = write(tmp_path / "f", data_of(size, 1))
    ours = run_cat(["--block-size", "4K", str(f)], engine="sync")
    assert ours.returncode == 0 and ours.stderr == b""
    assert ours.stdout == gnu_cat([str(f)]).stdout == f.read_bytes()


def test_many_operands_each_size(tmp_path: Path, engine: str) -> None:
    names = []
    for i, size in enumerate(SIZES + SIZES[::-1]):
        write(tmp_path / f"f{i}", data_of(size, i))
        names.append(f"f{i}")
    for depth in ("1", "3"):
        res = run_cat(["--block-size", "4K", "--queue-depth", depth, *names],
                      engine=engine, cwd=tmp_path)
        assert res.returncode == 0 and res.stderr == b""
        assert res.stdout == gnu_cat(names, cwd=tmp_path).stdout


def test_default_block_size_large_file(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "big", data_of(3 * 128 * 1024 + 12345))
    res = run_cat([str(f), str(f)], engine=engine)
    assert res.returncode == 0
    assert res.stdout == f.read_bytes() * 2


def test_sparse_past_4gib(tmp_path: Path) -> None:
    """A hole of 4 GiB, then data: compare CRCs of the outputs (cksum is fast)."""
    f = tmp_path / "sparse"
    tail = data_of(10000, 7)
    with open(f, "wb") as fh:
        fh.truncate((4 << 30) + 16384)
        fh.seek((4 << 30) + 1000)
        fh.write(tail)
    digests = set()
    # the sync engine reads the same way GNU does; it gets the cheap part below
    for cmd in (f"cat {f}", f"uring-cat --block-size 1M --queue-depth 4 {f}"):
        res = sh(f"set -o pipefail; {cmd} | cksum", timeout=120)
        assert res.returncode == 0, res.stderr
        digests.add(res.stdout.strip())
    assert len(digests) == 1, digests
    assert digests.pop().split()[1] == str((4 << 30) + 16384).encode()
    # the tail itself, read from an offset past 4 GiB through stdin
    for engine in ("uring", "sync"):
        res = sh(f"{{ dd bs=1M skip=4096 count=0 2>/dev/null; "
                 f"uring-cat --engine {engine} --block-size 4K; }} < {f}")
        assert res.stdout == b"\0" * 1000 + tail + b"\0" * (16384 - 1000 - len(tail))


def test_empty_files(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "e1", b"")
    write(tmp_path / "e2", b"")
    write(tmp_path / "x", b"x")
    res = assert_like_gnu(["e1", "x", "e2", "e1"], engine=engine, cwd=tmp_path)
    assert res.stdout == b"x"


# -- stdin ------------------------------------------------------------------

def test_dash_repeated_pipe(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "a", b"AAA\n")
    data = data_of(100000, 3)
    res = run_cat(["-", "a", "-", "-"], engine=engine, input=data, cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == b""
    assert res.stdout == data + b"AAA\n"


def test_dash_repeated_file(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "f", data_of(5000, 4))
    write(tmp_path / "a", b"AAA\n")
    res = assert_like_gnu(["-", "a", "-"], engine=engine, cwd=tmp_path, stdin=f)
    assert res.stdout == f.read_bytes() + b"AAA\n"


def test_stdin_pipe(engine: str) -> None:
    data = data_of(1 << 20, 5)
    res = run_cat(["--block-size", "4K"], engine=engine, input=data)
    assert res.returncode == 0 and res.stdout == data


@pytest.mark.parametrize("size", [0, 2, 3, 4, 4099, 3 * BS + 5])
def test_stdin_file_shared_offset(tmp_path: Path, engine: str, size: int) -> None:
    """Read from the shell's offset, leave the offset where cat stopped."""
    f = write(tmp_path / "f", data_of(size, 6))
    script = ("{ dd bs=1 count=3 of=/dev/null 2>/dev/null; "
              f"uring-cat --engine {engine} --block-size 4K --queue-depth 4; "
              "echo '|'; cat; echo '|'; } < f")
    res = sh(script, cwd=tmp_path)
    gnu = sh(script.replace(f"uring-cat --engine {engine} --block-size 4K "
                            "--queue-depth 4", "cat"), cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == b""
    assert res.stdout == gnu.stdout == f.read_bytes()[3:] + b"|\n|\n"


def test_stdin_file_offset_left_after_cat_twice(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "f", data_of(3 * BS + 1, 8))
    script = (f"{{ uring-cat --engine {engine} --block-size 4K; "
              f"uring-cat --engine {engine}; cat; }} < f")
    res = sh(script, cwd=tmp_path)
    assert res.stdout == f.read_bytes()


def test_stdin_devnull(engine: str) -> None:
    res = run_cat([], engine=engine, stdin=subprocess.DEVNULL)
    assert res.returncode == 0 and res.stdout == b"" and res.stderr == b""


def test_stdin_closed(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "a", b"a\n")
    res = sh(f"uring-cat --engine {engine} - a <&-", cwd=tmp_path)
    gnu = sh("cat - a <&-", cwd=tmp_path)
    assert res.stdout == gnu.stdout == b"a\n"
    assert res.returncode == gnu.returncode == 1
    # both lines GNU prints: the operand, then closing stdin at exit
    assert res.stderr == gnu_stderr(gnu.stderr)
    assert res.stderr == (b"uring-cat: -: Bad file descriptor\n"
                          b"uring-cat: closing standard input: Bad file descriptor\n")


@pytest.mark.parametrize("args", ["", "- -", "a - a"])
def test_stdin_closed_like_gnu(tmp_path: Path, engine: str, args: str) -> None:
    write(tmp_path / "a", b"a\n")
    res = sh(f"uring-cat --engine {engine} {args} <&-", cwd=tmp_path)
    gnu = sh(f"cat {args} <&-", cwd=tmp_path)
    assert (res.stdout, res.returncode) == (gnu.stdout, gnu.returncode)
    assert res.stderr == gnu_stderr(gnu.stderr)


def test_stdin_closed_file_operand_takes_fd0(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "a", b"hello\n")
    res = sh(f"uring-cat --engine {engine} a <&-", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == b"hello\n" and res.stderr == b""


@pytest.mark.parametrize("script", [
    "{cat} /dev/stdin a <&-", "{cat} -n a /dev/fd/0 - <&-",
    "{cat} /proc/self/fd/0 /dev/null <&-", "{cat} a /dev/fd/2 2>&-",
    "{cat} /dev/stderr 2>&-; echo status=$?", "{cat} /dev/stdin a < /dev/null",
])
def test_closed_std_fd_by_name_like_gnu(tmp_path: Path, engine: str,
                                        script: str) -> None:
    """/dev/stdin, /dev/fd/N, /proc/self/fd/N of a std fd closed at start
    is a missing file, not the /dev/null that holds its place."""
    write(tmp_path / "a", b"a\n")
    res = sh(script.format(cat=f"uring-cat --engine {engine}"), cwd=tmp_path)
    gnu = sh(script.format(cat="cat"), cwd=tmp_path)
    assert (res.stdout, res.returncode) == (gnu.stdout, gnu.returncode)
    assert res.stderr == gnu_stderr(gnu.stderr)


# -- special inputs ---------------------------------------------------------

def test_fifo(tmp_path: Path, engine: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = data_of(300000, 9)

    def writer() -> None:
        with open(fifo, "wb") as fh:
            for i in range(0, len(data), 7000):
                fh.write(data[i:i + 7000])
                fh.flush()

    t = threading.Thread(target=writer)
    t.start()
    res = run_cat(["--block-size", "4K", str(fifo)], engine=engine, timeout=30)
    t.join()
    assert res.returncode == 0 and res.stdout == data


@pytest.mark.parametrize("path", ["/proc/version", "/proc/self/limits",
                                  "/proc/sys/kernel/ostype"])
def test_proc_files(path: str, engine: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    assert os.stat(path).st_size == 0
    res = run_cat([path], engine=engine)
    assert res.returncode == 0 and res.stdout
    if "self" not in path:
        assert res.stdout == gnu_cat([path]).stdout


def test_proc_cpuinfo_small_blocks(engine: str) -> None:
    res = run_cat(["--block-size", "512", "/proc/cpuinfo"], engine=engine)
    gnu = gnu_cat(["/proc/cpuinfo"])
    assert res.returncode == 0
    # cpu MHz lines change between reads: compare everything else
    strip = lambda b: [l for l in b.splitlines() if not l.startswith(b"cpu MHz")]
    assert res.stdout and strip(res.stdout) == strip(gnu.stdout)


def test_char_devices(engine: str) -> None:
    assert_like_gnu(["/dev/null"], engine=engine)
    res = sh(f"uring-cat --engine {engine} /dev/zero | head -c 300000 | sha256sum")
    assert res.stdout.split()[0] == hashlib.sha256(b"\0" * 300000).hexdigest().encode()
    res = sh(f"head -c 300000 /dev/zero | uring-cat --engine {engine} - | wc -c")
    assert res.stdout.strip() == b"300000"


# -- outputs ----------------------------------------------------------------

def test_stdout_regular_file_current_offset(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "f", data_of(3 * BS + 3, 10))
    script = (f"{{ echo a; uring-cat --engine {engine} --block-size 4K f; echo b; "
              f"uring-cat --engine {engine} f; }} > out")
    res = sh(script, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out").read_bytes() == b"a\n" + f.read_bytes() + b"b\n" \
        + f.read_bytes()


def test_stdout_append(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "f", data_of(2 * BS + 3, 11))
    write(tmp_path / "out", b"start\n")
    res = sh(f"uring-cat --engine {engine} --block-size 4K f >> out; "
             f"uring-cat --engine {engine} f >> out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out").read_bytes() == b"start\n" + f.read_bytes() * 2


def test_stdout_append_offset_zero(tmp_path: Path, engine: str) -> None:
    """O_APPEND opened by the parent, file position still 0: write at the end."""
    f = write(tmp_path / "f", b"new\n")
    out = write(tmp_path / "out", b"old\n")
    fd = os.open(out, os.O_WRONLY | os.O_APPEND)
    try:
        res = run_cat([str(f)], engine=engine, stdout=fd)
    finally:
        os.close(fd)
    assert res.returncode == 0
    assert out.read_bytes() == b"old\nnew\n"


def test_stdout_devnull(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "f", data_of(100000, 12))
    res = run_cat([str(f)], engine=engine, stdout=subprocess.DEVNULL)
    assert res.returncode == 0 and res.stderr == b""


def test_stdout_pipe_slow_reader(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "f", data_of(1 << 20, 13))
    res = sh(f"uring-cat --engine {engine} --block-size 4K f | "
             "(sleep 0.2; sha256sum)", cwd=tmp_path)
    assert res.stdout.split()[0] == hashlib.sha256(f.read_bytes()).hexdigest().encode()


def _nonblocking_pipe_run(cmd: list) -> tuple:
    r, w = os.pipe()
    flags = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    proc = subprocess.Popen(cmd, stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    h = hashlib.sha256()
    total = 0
    with os.fdopen(r, "rb", buffering=0) as fh:
        while True:
            time.sleep(0.002)   # a slow reader: the pipe fills up
            chunk = fh.read(32768)
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
    err = proc.stderr.read()
    proc.wait()
    return proc.returncode, total, h.hexdigest(), err


@pytest.mark.parametrize("opts", [[], ["--block-size", "4K", "--queue-depth", "8"],
                                  ["-n"]])
def test_nonblocking_stdout_pipe(tmp_path: Path, engine: str, opts: list) -> None:
    f = write(tmp_path / "f", data_of(3 << 20, 14))
    status, total, digest, err = _nonblocking_pipe_run(
        cat_cmd([*opts, str(f)], engine))
    expected = gnu_cat([o for o in opts if o in ("-n",)] + [str(f)]).stdout
    assert err == b"" and status == 0
    assert total == len(expected)
    assert digest == hashlib.sha256(expected).hexdigest()


def test_nonblocking_stdout_gnu_fails(tmp_path: Path) -> None:
    """The reason the test above matters: GNU cat gives up with EAGAIN."""
    f = write(tmp_path / "f", data_of(3 << 20, 17))
    status, total, digest, err = _nonblocking_pipe_run(["cat", str(f)])
    if status == 0:
        pytest.skip("GNU cat did not meet a full pipe this time")
    assert b"Resource temporarily unavailable" in err


# -- errors -----------------------------------------------------------------

def test_missing_file(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "a", b"a\n")
    res = assert_like_gnu(["nope", "a", "nope2"], engine=engine, cwd=tmp_path)
    assert res.stderr == (b"uring-cat: nope: No such file or directory\n"
                          b"uring-cat: nope2: No such file or directory\n")
    assert res.returncode == 1 and res.stdout == b"a\n"


def test_directory(tmp_path: Path, engine: str) -> None:
    (tmp_path / "d").mkdir()
    write(tmp_path / "a", b"a\n")
    res = assert_like_gnu(["a", "d", "a"], engine=engine, cwd=tmp_path)
    assert res.stderr == b"uring-cat: d: Is a directory\n"
    assert res.stdout == b"a\na\n" and res.returncode == 1


def test_unreadable_file(shared_tmp: Path, engine: str) -> None:
    f = write(shared_tmp / "secret", b"x")
    f.chmod(0)
    write(shared_tmp / "a", b"a\n").chmod(0o644)
    res = run(as_nobody(["cat", "--engine", engine, "secret", "a"]), cwd=shared_tmp)
    gnu = run(NOBODY + ["cat", "secret", "a"], cwd=shared_tmp)
    assert gnu.stderr == b"cat: secret: Permission denied\n"
    assert res.stderr == b"uring-cat: secret: Permission denied\n"
    assert res.stdout == gnu.stdout == b"a\n"
    assert res.returncode == gnu.returncode == 1


def test_input_is_output(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "f", b"content\n")
    write(tmp_path / "g", b"other\n")
    script = "{cat} f g >> f; echo status=$?"
    res = sh(script.format(cat=f"uring-cat --engine {engine}"), cwd=tmp_path)
    ours = (tmp_path / "f").read_bytes()
    write(tmp_path / "f", b"content\n")
    gnu = sh(script.format(cat="cat"), cwd=tmp_path)
    assert res.stdout == gnu.stdout == b"status=1\n"
    assert res.stderr == gnu_stderr_simple(gnu.stderr) == \
        b"uring-cat: f: input file is output file\n"
    assert ours == (tmp_path / "f").read_bytes() == b"content\nother\n"


def gnu_stderr_simple(text: bytes) -> bytes:
    from conftest import gnu_stderr
    return gnu_stderr(text)


def test_input_is_output_empty_is_fine(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "f", b"")
    res = sh(f"uring-cat --engine {engine} f >> f", cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == b""


def test_input_is_output_via_stdin(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "f", b"content\n")
    res = sh(f"uring-cat --engine {engine} < f >> f", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr == b"uring-cat: -: input file is output file\n"
    assert (tmp_path / "f").read_bytes() == b"content\n"


def test_dev_full(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "f", data_of(100, 15))
    with open("/dev/full", "wb") as full:
        res = run_cat(["f", "f"], engine=engine, cwd=tmp_path, stdout=full)
        gnu = gnu_cat(["f", "f"], cwd=tmp_path, stdout=full)
    assert res.stderr == b"uring-cat: write error: No space left on device\n"
    assert res.stderr == gnu_stderr_simple(gnu.stderr)
    assert res.returncode == gnu.returncode == 1


def test_sigpipe(tmp_path: Path, engine: str) -> None:
    f = write(tmp_path / "big", data_of(4 << 20, 16))
    for opts in ("", "-n", "--block-size 4K --queue-depth 8"):
        res = sh(f"uring-cat --engine {engine} {opts} big | head -c 10 >/dev/null;"
                 " echo ${PIPESTATUS[0]}", cwd=tmp_path)
        assert res.stdout == b"141\n", opts
        assert res.stderr == b""
    proc = subprocess.Popen(cat_cmd([str(f)], engine), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()
    assert proc.wait(timeout=30) == -signal.SIGPIPE
    assert proc.stderr.read() == b""


def _sigint_fifo(tmp_path: Path, cmd: list, expected: bytes) -> tuple:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(cmd + [str(fifo)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, b"hello\n")
        # once the line is out, it is waiting for more
        assert proc.stdout.read(len(expected)) == expected
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("still running 10 s after SIGINT")
    finally:
        os.close(w)
    return proc.returncode, out, err


@pytest.mark.parametrize("opts", [[], ["-n"]])
def test_sigint_while_reading_fifo(tmp_path: Path, engine: str, opts: list) -> None:
    expected = b"     1\thello\n" if opts else b"hello\n"
    status, out, err = _sigint_fifo(tmp_path, cat_cmd(opts, engine), expected)
    assert status == -signal.SIGINT
    assert err == b""
    no_traceback(err)


def test_sigterm_while_reading_fifo(tmp_path: Path, engine: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(cat_cmd([str(fifo)], engine), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, b"x\n")
        assert proc.stdout.read(2) == b"x\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        os.close(w)
    assert proc.returncode == -signal.SIGTERM and err == b""


def test_closed_stdout(tmp_path: Path, engine: str) -> None:
    write(tmp_path / "a", b"a\n")
    res = sh(f"uring-cat --engine {engine} a >&-", cwd=tmp_path)
    gnu = sh("cat a >&-", cwd=tmp_path)
    assert res.stderr == b"uring-cat: standard output: Bad file descriptor\n"
    assert res.stderr == gnu_stderr_simple(gnu.stderr)
    assert res.returncode == gnu.returncode == 1


def test_write_error_with_fifo_input_does_not_hang(tmp_path: Path, engine: str) -> None:
    """/dev/full fails the first write while a read waits on a FIFO."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with open("/dev/full", "wb") as full:
        proc = subprocess.Popen(cat_cmd([str(fifo)], engine), stdout=full,
                                stderr=subprocess.PIPE)
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, b"data\n")
        try:
            err = proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("hung after the write error")
    finally:
        os.close(w)
    assert proc.returncode == 1
    assert err == b"uring-cat: write error: No space left on device\n"


# -- the command line, as GNU getopt_long reads it --------------------------

@pytest.mark.parametrize("args", [
    ["--squeeze", "f"], ["--number-n", "f", "g"], ["--show-e", "f"],
    ["--show-n", "f"], ["--show-t", "f"], ["--show-a", "f"],
    ["--number", "f", "--squeeze-b", "g"], ["--sq", "--", "--num", "f"],
    ["--number-nonb", "--show-e", "-", "f"],
])
def test_long_option_abbreviations(tmp_path: Path, args: list) -> None:
    """An unambiguous prefix of a long option is that option (an exact
    name wins: --number is not ambiguous, --numbe is)."""
    write(tmp_path / "f", b"a\n\n\n\tb\r\n")
    write(tmp_path / "g", b"\n\nc")
    res = assert_like_gnu(args, cwd=tmp_path, input=b"in\n")
    assert res.returncode == (1 if "--num" in args else 0)


@pytest.mark.parametrize("args", [
    ["-u-", "f"], ["-n-", "f"], ["--nu=1", "f"], ["--squeeze-b=", "f"]])
def test_bad_options_like_gnu(tmp_path: Path, args: list) -> None:
    """getopt's messages: a '-' in a bundle is an invalid option -- '-'
    (not an unrecognized '--'); an ambiguous prefix is named as given,
    with its =VALUE."""
    write(tmp_path / "f", b"a\n")
    ours, gnu = run_cat(args, cwd=tmp_path), gnu_cat(args, cwd=tmp_path)
    assert ours.returncode == gnu.returncode == 1
    assert ours.stderr == gnu_stderr(gnu.stderr).replace(
        b"'cat --help'", b"'uring-cat --help'")


@pytest.mark.parametrize("engine_opt", [None, "sync"])
@pytest.mark.parametrize("args", [
    ["f", "-n"], ["-n", "f", "-s", "g"], ["-s", "-", "-E"],
    ["-n", "--", "f", "-b"], ["-b", "f", "--", "g"], ["f", "--number"],
])
def test_posixly_correct_options_end_at_first_operand(
        tmp_path: Path, args: list, engine_opt: Optional[str]) -> None:
    write(tmp_path / "f", b"a\n\n\n\tb\r\n")
    write(tmp_path / "g", b"\n\nc")
    from conftest import ENV
    assert_like_gnu(args, engine=engine_opt, cwd=tmp_path, input=b"in\n",
                    env=dict(ENV, POSIXLY_CORRECT="1"))


@pytest.mark.parametrize("flags", [[], ["-n"], ["-A"]])
def test_small_files_by_syscalls_among_large_ones(tmp_path: Path,
                                                  flags: list) -> None:
    """A regular file under one block is copied with read(2) and write(2)
    (the ring's work per file costs more), a large one through the ring:
    mixed in one run, and into a pipe or a file, the bytes are GNU's, and
    -n's numbering runs on across both paths."""
    names = []
    for i, size in enumerate([0, 1, 5000, 300000, 17, 131071, 131072, 2]):
        body = b"".join(b"line %d of %d\n" % (j, i) for j in range(size // 12 + 1))
        write(tmp_path / f"f{i}", body[:size])
        names.append(f"f{i}")
    res = assert_like_gnu([*flags, "--", *names], cwd=tmp_path)
    assert res.returncode == 0
    out = tmp_path / "out"
    with open(out, "wb") as f:
        ours = run_cat(["--stats-format", "json", *flags, *names], cwd=tmp_path,
                       stdout=f)
    assert ours.returncode == 0, ours.stderr
    assert out.read_bytes() == gnu_cat([*flags, *names], cwd=tmp_path).stdout
    extra = stats_json(ours.stderr)["extra"]
    # 1, 5000, 17, 131071 and 2 bytes; the empty file and the large ones
    # go through the ring
    assert extra["files_copied_by_syscalls"] == 5

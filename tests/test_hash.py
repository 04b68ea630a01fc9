"""uring-hash against the GNU tools (coreutils) on the same files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

from uringtools.checkfile import CheckParser, format_line, quotef, unescape_name
from uringtools.hashing import (ALGORITHMS, DEFAULT_BLOCK_SIZE, get_algorithm,
                                hash_files)
from uringtools.stats import Stats

BIN = Path(sys.executable).parent / "uring-hash"
UH: List[str] = [str(BIN)] if BIN.exists() else [sys.executable, "-m",
                                                   "uringtools", "hash"]
BS = DEFAULT_BLOCK_SIZE   # uring-hash's: the sizes below straddle its reads
GNU = {"md5": "md5sum", "sha1": "sha1sum", "sha224": "sha224sum",
       "sha256": "sha256sum", "sha384": "sha384sum", "sha512": "sha512sum",
       "blake2b": "b2sum"}
ENV = dict(os.environ, LC_ALL="C.UTF-8")


def run(argv: Sequence[str], cwd: Path, stdin: Optional[bytes] = None,
        ) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, input=stdin if stdin is not None
                          else b"", capture_output=True, env=ENV, timeout=120)


def ours(args: Sequence[str], cwd: Path, stdin: Optional[bytes] = None,
         ) -> subprocess.CompletedProcess:
    return run([*UH, *args], cwd, stdin)


def gnu(tool: str, args: Sequence[str], cwd: Path,
        stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
    return run([tool, *args], cwd, stdin)


def same(tool: str, args: Sequence[str], cwd: Path, *, ours_args:
         Sequence[str] = (), stdin: Optional[bytes] = None) -> None:
    """stdout, stderr (prog name swapped) and status match the GNU tool."""
    with ThreadPoolExecutor(2) as pool:   # both at once: keeps the suite fast
        gf = pool.submit(gnu, tool, args, cwd, stdin)
        o = ours([*ours_args, *args], cwd, stdin)
        g = gf.result()
    assert o.stdout == g.stdout
    assert o.stderr == g.stderr.replace(tool.encode(), b"uring-hash")
    assert o.returncode == g.returncode


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hash")
    rnd = os.urandom(3 * 1024 * 1024 + 17)
    for size in (0, 1, BS - 1, BS, BS + 1, 5 * BS + 3):
        (d / f"s{size}").write_bytes(rnd[:size])
    (d / "big").write_bytes(rnd)
    (d / "sub").mkdir()
    return d


SIZES = ["s0", "s1", f"s{BS - 1}", f"s{BS}", f"s{BS + 1}", f"s{5 * BS + 3}",
         "big"]


@pytest.mark.parametrize("algo", sorted(GNU))
def test_every_algorithm_matches_gnu(data: Path, algo: str) -> None:
    same(GNU[algo], SIZES, data, ours_args=["-a", algo])
    same(GNU[algo], ["--tag", *SIZES[:3]], data, ours_args=["-a", algo])


@pytest.mark.parametrize("algo", ["blake2s", "sha3-256", "sha3-384", "sha3-512"])
def test_hashlib_only_algorithms(data: Path, algo: str) -> None:
    out = ours(["-a", algo, "--tag", "big", "s0"], data)
    assert out.returncode == 0
    tag = ALGORITHMS[algo].tag
    expect = b"".join(
        f"{tag} ({n}) = {hashlib.new(algo, (data / n).read_bytes()).hexdigest()}\n"
        .encode() for n in ("big", "s0"))
    assert out.stdout == expect
    check = ours(["-a", algo, "-c"], data, stdin=out.stdout)
    assert check.stdout == b"big: OK\ns0: OK\n" and check.returncode == 0


@pytest.mark.parametrize("engine", ["uring", "sync"])
@pytest.mark.parametrize("extra", [[], ["--block-size", "4K", "--queue-depth", "1"],
                                   ["--block-size", "512", "--queue-depth", "64"]])
def test_engines_and_geometry(data: Path, engine: str, extra: List[str]) -> None:
    same("sha256sum", SIZES, data, ours_args=["--engine", engine, *extra])


def test_b2sum_length_and_tag(data: Path) -> None:
    for args in (["-l", "256"], ["-l", "256", "--tag"], ["-l", "8"],
                 ["-l", "512", "--tag"], ["-l", "0"]):
        same("b2sum", [*args, "big", "s1"], data, ours_args=["-a", "blake2b"])
    for bad in ("12", "1024", "x"):
        o = ours(["-a", "blake2b", "-l", bad, "s1"], data)
        assert o.returncode == 1 and o.stdout == b""
        assert b"invalid length" in o.stderr
    o = ours(["-l", "256", "s1"], data)
    assert o.returncode == 1 and b"--length" in o.stderr


@pytest.mark.parametrize("length", ["0" * 5000 + "8", " +" + "0" * 5000,
                                    "1" + "0" * 5000, "18446744073709551616"])
def test_b2sum_length_of_many_digits(data: Path, length: str) -> None:
    """xdectoumax reads any number of digits: leading zeros are free, too
    many is EOVERFLOW (int() refuses over 4300 digits: a traceback)."""
    same("b2sum", ["-l", length, "s1"], data, ours_args=["-a", "blake2b"])


def test_binary_text_zero(data: Path) -> None:
    for args in (["-b"], ["-t"], ["-z"], ["-z", "--tag"], ["-b", "--tag"],
                 ["-b", "-t"], ["-t", "-b"],
                 # --tag is -b too: the last of the three decides
                 ["-t", "--tag"], ["--text", "--ta"], ["--tag", "-b", "-t"],
                 # refused before the options that need -c are judged
                 ["--tag", "-t", "-c"], ["--tag", "-t", "--quiet"]):
        same("sha256sum", [*args, "s1", "big"], data)
    o = ours(["--tag", "-t", "s1"], data)
    g = gnu("sha256sum", ["--tag", "-t", "s1"], data)
    assert o.returncode == g.returncode == 1
    assert o.stderr.replace(b"uring-hash", b"sha256sum") == g.stderr


def test_odd_names(tmp_path: Path) -> None:
    names = ["back\\slash", "new\nline", "car\rret", "all\\\n\r", "sp ace",
             "-dash", "tab\tx", "\u00e9t\u00e9", "star*"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"x" * i)
    for args in ([], ["--tag"], ["-z"], ["-b"]):
        same("sha256sum", [*args, "--", *names], tmp_path)
    for args in ([], ["--tag"]):
        listing = ours([*args, "--", *names], tmp_path).stdout
        (tmp_path / "ours.sum").write_bytes(listing)
        same("sha256sum", ["-c", "ours.sum"], tmp_path)
    # names that only exist in error messages: GNU's shell quoting
    missing = ["it's", "a:b", "x y", "t\tab", "~home", "a~", "#c", "a,b"]
    same("sha256sum", ["--", *missing], tmp_path)


def test_stdin(data: Path) -> None:
    content = (data / "big").read_bytes()
    same("sha256sum", [], data, stdin=content)
    same("sha256sum", ["-"], data, stdin=content)
    same("sha256sum", ["s1", "-", "big"], data, stdin=content)
    # a regular file as stdin: read from its offset, leave it at the end
    out = subprocess.run(["sh", "-c", f"{{ dd bs=1 skip=0 count=3 status=none "
                          f">/dev/null; {' '.join(UH)}; echo rest=$(cat | wc -c); }}"
                          f" < {data / f's{BS + 1}'}"],
                         capture_output=True, env=ENV, timeout=60)
    expect = hashlib.sha256((data / f"s{BS + 1}").read_bytes()[3:]).hexdigest()
    assert out.stdout == f"{expect}  -\nrest=0\n".encode()


def test_stdin_pipe_large(data: Path) -> None:
    proc = subprocess.run(["sh", "-c", f"cat big big | {' '.join(UH)} -a md5 "
                           f"--queue-depth 8"], cwd=data, capture_output=True,
                          env=ENV, timeout=60)
    content = (data / "big").read_bytes() * 2
    assert proc.stdout == f"{hashlib.md5(content).hexdigest()}  -\n".encode()


def test_many_files_in_order(data: Path) -> None:
    names = SIZES * 6 + ["nope", "sub"] + SIZES[::-1]
    same("sha256sum", names, data)
    same("sha256sum", names, data, ours_args=["--engine", "sync"])


def test_missing_and_directories(data: Path) -> None:
    same("sha256sum", ["nope", "sub", "s1"], data)
    same("sha256sum", ["s1", "sub"], data)
    o = ours(["nope"], data)
    assert o.stderr == b"uring-hash: nope: No such file or directory\n"
    assert o.returncode == 1 and o.stdout == b""
    o = ours(["sub"], data)
    assert o.stderr == b"uring-hash: sub: Is a directory\n"


def test_unreadable_file_prints_no_digest(tmp_path: Path) -> None:
    # /proc/self/mem: opens, but reading at offset 0 fails (EIO)
    o = ours(["/proc/self/mem", "/proc/self/stat"], tmp_path)
    assert o.returncode == 1
    assert b"/proc/self/mem" not in o.stdout
    assert b"uring-hash: /proc/self/mem: Input/output error" in o.stderr
    assert o.stdout.endswith(b"  /proc/self/stat\n")


def _mixed(tmp: Path) -> None:
    for name, body in (("a", b"alpha"), ("b", b"beta"), ("c", b"gamma")):
        (tmp / name).write_bytes(body)
    good = gnu("sha256sum", ["a", "b", "c"], tmp).stdout
    lines = good.splitlines(keepends=True)
    bad_digest = b"0" * 64 + b"  b\n"
    missing = lines[0][:64] + b"  gone\n"
    (tmp / "good.sum").write_bytes(good)
    (tmp / "mixed.sum").write_bytes(
        b"# comment\n" + lines[0] + b"junk line\n\n" + bad_digest + missing
        + lines[2].upper().replace(b"  C", b"  c") + b"x" * 10 + b"\n")
    (tmp / "crlf.sum").write_bytes(good.replace(b"\n", b"\r\n"))
    (tmp / "onlymissing.sum").write_bytes(missing)
    (tmp / "junk.sum").write_bytes(bytes(range(256)) * 40 + b"\n\0\xff\n")
    (tmp / "long.sum").write_bytes(b"a" * 2_000_000 + b"  a\n" + lines[0]
                                   + b"f" * 64 + b"  " + b"n" * 300_000 + b"\n")
    (tmp / "empty.sum").write_bytes(b"")
    (tmp / "bsd.sum").write_bytes(
        gnu("sha256sum", ["--tag", "a", "b"], tmp).stdout
        + gnu("md5sum", ["--tag", "a"], tmp).stdout
        + b"SHA256 (c) = " + b"0" * 64 + b"\n")
    (tmp / "reversed.sum").write_bytes(lines[0][:64] + b" a\n"
                                       + lines[1][:64] + b" b\n")
    (tmp / "mix_rev.sum").write_bytes(lines[0] + lines[1][:64] + b" b\n")
    (tmp / "escaped.sum").write_bytes(b"\\" + lines[0][:64] + b"  a\\zb\n"
                                      + b"\\" + lines[0][:64] + b"  a\\\n"
                                      + lines[1])
    (tmp / "stdinname.sum").write_bytes(lines[0][:64] + b"  -\n")
    (tmp / "d").mkdir(exist_ok=True)
    (tmp / "dir.sum").write_bytes(lines[0][:64] + b"  d\n")


CHECK_FILES = ["good.sum", "mixed.sum", "crlf.sum", "onlymissing.sum",
               "junk.sum", "long.sum", "empty.sum", "bsd.sum", "reversed.sum",
               "mix_rev.sum", "escaped.sum", "dir.sum", "nope.sum", "d"]
CHECK_FLAGS = [[], ["--quiet"], ["--status"], ["--strict"], ["-w"],
               ["--ignore-missing"], ["--strict", "-w", "--quiet"],
               ["--ignore-missing", "--status"]]


@pytest.mark.parametrize("flags", CHECK_FLAGS, ids=" ".join)
def test_check_matches_gnu(tmp_path: Path, flags: List[str]) -> None:
    _mixed(tmp_path)
    names = CHECK_FILES if not flags else CHECK_FILES[:6]
    for name in names:
        same("sha256sum", ["-c", *flags, name], tmp_path)
    same("sha256sum", ["-c", *flags, *CHECK_FILES], tmp_path)


def test_check_from_stdin(tmp_path: Path) -> None:
    _mixed(tmp_path)
    for name in ("good.sum", "mixed.sum", "stdinname.sum", "empty.sum"):
        body = (tmp_path / name).read_bytes()
        same("sha256sum", ["-c"], tmp_path, stdin=body)
        same("sha256sum", ["-c", "-"], tmp_path, stdin=body)
    # a check file (not stdin) naming '-' hashes stdin
    same("sha256sum", ["-c", "stdinname.sum"], tmp_path, stdin=b"alpha")


@pytest.mark.parametrize("algo", sorted(GNU))
def test_check_interop_both_ways(data: Path, tmp_path: Path, algo: str) -> None:
    tool = GNU[algo]
    names = [str(data / n) for n in SIZES[:4]]
    for tag in ([], ["--tag"]):
        theirs = gnu(tool, [*tag, *names], tmp_path).stdout
        mine = ours(["-a", algo, *tag, *names], tmp_path).stdout
        assert mine == theirs
        (tmp_path / "x.sum").write_bytes(mine)
        same(tool, ["-c", "x.sum"], tmp_path, ours_args=["-a", algo])
    # a checksum file for another algorithm is refused as GNU refuses it
    other = "md5" if algo != "md5" else "sha1"
    (tmp_path / "o.sum").write_bytes(gnu(GNU[other], ["--tag", *names],
                                         tmp_path).stdout)
    same(tool, ["-c", "o.sum"], tmp_path, ours_args=["-a", algo])


def test_b2sum_check_lengths(data: Path, tmp_path: Path) -> None:
    body = b"".join(gnu("b2sum", [*args, str(data / "s1")], tmp_path).stdout
                    for args in (["-l", "8"], ["-l", "256", "--tag"], [],
                                 ["--tag"], ["-l", "160"]))
    body += b"BLAKE2b-12 (x) = 00\nBLAKE2bp (x) = 00\nab  nothere\n"
    (tmp_path / "b.sum").write_bytes(body)
    for flags in ([], ["-w"], ["--strict"]):
        same("b2sum", ["-c", *flags, "b.sum"], tmp_path,
             ours_args=["-a", "blake2b"])


def test_option_conflicts(data: Path) -> None:
    for args in (["-c", "--tag", "x"], ["-c", "-z", "x"], ["--quiet", "s1"],
                 ["--status", "s1"], ["--strict", "s1"], ["-w", "s1"],
                 ["--ignore-missing", "s1"], ["-c", "-b", "x"]):
        g = gnu("sha256sum", args, data)
        o = ours(args, data)
        assert o.returncode == g.returncode == 1, args
        assert o.stdout == b""
        first = g.stderr.splitlines()[0].replace(b"sha256sum", b"uring-hash")
        assert o.stderr.splitlines()[0] == first


def test_stats_json(data: Path) -> None:
    for engine in ("uring", "sync"):
        o = ours(["--engine", engine, "--stats-format", "json", "big", "s1",
                  f"s{BS}"], data)
        assert o.returncode == 0
        stats = json.loads(o.stderr.decode().strip().splitlines()[-1])
        assert stats["engine"] == engine
        size = sum((data / n).stat().st_size for n in ("big", "s1", f"s{BS}"))
        assert stats["bytes_read"] == size
        assert stats["extra"]["digest_bytes"] == size
        # the two large files on two digest threads, s1 on the calling one
        assert stats["extra"]["digest_threads"] == (
            3 if (os.cpu_count() or 1) > 1 else 1)
        assert stats["extra"]["digest_bytes_per_s"] > 0
        assert stats["files"] == 3
        if engine == "uring":
            assert stats["ops"].get("read_fixed", 0) + stats["ops"].get("read", 0) > 0
            assert stats["enters"] > 0
        else:
            assert stats["syscalls"]["read"] >= size // BS


def test_group_and_help(data: Path) -> None:
    o = run([sys.executable, "-m", "uringtools", "hash", "s1"], data)
    assert o.stdout == gnu("sha256sum", ["s1"], data).stdout
    assert ours(["--help"], data).returncode == 0


def test_missing_fast_extra_is_one_line(data: Path) -> None:
    for algo in ("xxh64", "xxh3", "xxh128", "blake3"):
        module = "blake3" if algo == "blake3" else "xxhash"
        try:
            __import__(module)
        except ImportError:
            o = ours(["-a", algo, "s1"], data)
            assert o.returncode == 1 and o.stdout == b""
            assert o.stderr.count(b"\n") == 1
            assert b"pip install 'uringtools[fast]'" in o.stderr
        else:
            o = ours(["-a", algo, "--tag", "s1"], data)
            assert o.returncode == 0
            assert o.stdout.startswith(ALGORITHMS[algo].tag.encode() + b" (s1) = ")
            (data / "f.sum").write_bytes(o.stdout)
            assert ours(["-a", algo, "-c", "f.sum"], data).stdout == b"s1: OK\n"


# -- library ----------------------------------------------------------------

def test_library_threads_and_stats(data: Path) -> None:
    names = [str(data / n) for n in SIZES] + [str(data / "nope")]
    for engine in ("uring", "sync"):
        stats = Stats()
        results = list(hash_files(names, "sha1", engine=engine, threads=2,
                                  stats=stats))
        assert [r.name for r in results] == names
        for r in results[:-1]:
            assert r.digest == hashlib.sha1(Path(r.name).read_bytes()).hexdigest()
        assert results[-1].digest is None
        assert isinstance(results[-1].error, FileNotFoundError)
        # the large files on the two threads, the small ones (and the
        # missing one) on the calling thread
        assert stats.extra["digest_threads"] == 3
        assert stats.errors == 1


def test_library_early_close(data: Path) -> None:
    gen = hash_files([str(data / "big")] * 8, "md5", threads=2)
    first = next(gen)
    assert first.digest == hashlib.md5((data / "big").read_bytes()).hexdigest()
    gen.close()  # workers stop and join


def test_get_algorithm_rejects() -> None:
    with pytest.raises(ValueError):
        get_algorithm("sha999")
    with pytest.raises(ValueError):
        get_algorithm("blake2b", 12)
    assert get_algorithm("blake2b", 256).tag_for(256) == "BLAKE2b-256"


def test_checkfile_units() -> None:
    assert format_line(b"a\\b", "00") == b"\\00  a\\\\b\n"
    assert format_line(b"a\nb", "00", zero=True) == b"00  a\nb\0"
    assert format_line(b"x", "00", tag="MD5") == b"MD5 (x) = 00\n"
    assert unescape_name(b"a\\nb\\\\c\\r") == b"a\nb\\c\r"
    assert unescape_name(b"a\\") is None and unescape_name(b"a\\x") is None
    p = CheckParser("SHA256", 256)
    assert p.parse(b"x" * 100) is None
    assert p.parse(b"SHA256 (a) = " + b"A" * 64).hexdigest == "a" * 64
    assert quotef("plain") == "plain"
    assert quotef("a b") == "'a b'"
    assert quotef("it's") == '"it\'s"'
    assert quotef("a\tb") == "'a'$'\\t''b'"


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils")
def test_gnu_accepts_our_output_for_every_size(data: Path, tmp_path: Path) -> None:
    listing = ours([str(data / n) for n in SIZES], tmp_path).stdout
    (tmp_path / "ours.sum").write_bytes(listing)
    g = gnu("sha256sum", ["-c", "--strict", "ours.sum"], tmp_path)
    assert g.returncode == 0 and g.stdout.count(b": OK\n") == len(SIZES)


# -- --progress ---------------------------------------------------------------

def test_progress_forced_on_without_a_tty(data: Path) -> None:
    """--progress with stderr a pipe: the same digests, messages and status."""
    args = ["-a", "md5", *SIZES, "nope", "sub", "big"]
    plain = ours(args, data)
    for flag in ("--progress", "--no-progress"):
        o = ours([flag, *args], data)
        assert o.stdout == plain.stdout
        assert o.stderr == plain.stderr
        assert o.returncode == plain.returncode == 1
    for flag in ("--progress", "--no-progress"):   # stdin and one file
        o = ours([flag, "-", "big"], data, stdin=b"x" * (BS + 1))
        assert o.stdout == ours(["-", "big"], data, stdin=b"x" * (BS + 1)).stdout
        assert o.returncode == 0


def test_progress_forced_on_in_check_mode(data: Path, tmp_path: Path) -> None:
    sums = ours([str(data / n) for n in SIZES], data).stdout
    bad = sums.replace(b"  " + str(data / "s1").encode(),
                       b"  " + str(data / "s0").encode())
    (tmp_path / "good.sum").write_bytes(sums)
    (tmp_path / "bad.sum").write_bytes(bad + b"junk line\n")
    for args in (["good.sum"], ["bad.sum", "good.sum"], ["--quiet", "bad.sum"],
                 ["--status", "good.sum"], ["-w", "bad.sum"]):
        plain = ours(["-c", *args], tmp_path)
        for flag in ("--progress", "--no-progress"):
            o = ours([flag, "-c", *args], tmp_path)
            assert (o.stdout, o.stderr, o.returncode) == (
                plain.stdout, plain.stderr, plain.returncode), args


def test_library_progress_counts_every_byte(data: Path) -> None:
    """on_progress gets the real byte counts, from several threads at once."""
    import threading

    names = [str(data / n) for n in SIZES] * 3 + [str(data / "nope")]
    size = sum(Path(n).stat().st_size for n in names[:-1])
    for engine in ("uring", "sync"):
        lock = threading.Lock()
        seen: List[int] = []
        callers = set()

        def on_progress(n: int) -> None:
            with lock:
                seen.append(n)
                callers.add(threading.get_ident())

        results = list(hash_files(names, "md5", engine=engine, threads=3,
                                  on_progress=on_progress))
        assert sum(seen) == size
        assert all(0 < n <= BS for n in seen)
        assert len(callers) > 1
        assert [r.digest is not None for r in results] == [True] * (len(names) - 1) + [False]


def _stderr_on_a_tty(args: Sequence[str], cwd: Path,
                     ) -> "subprocess.CompletedProcess[bytes]":
    """Run uring-hash with stderr on a pseudo-terminal (stdout a pipe);
    the CompletedProcess's stderr is what the terminal received."""
    import fcntl
    import struct
    import termios
    import threading

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {k: v for k, v in ENV.items()
           if k not in ("FORCE_TERMINAL", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
                        "NO_COLOR", "COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    got = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: every slave end is closed
                return
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = subprocess.run([*UH, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=slave, env=env,
                              timeout=120)
    finally:
        os.close(slave)
        reader.join(30)
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout, bytes(got))


def test_progress_bar_on_a_tty_for_large_jobs_only(data: Path,
                                                   tmp_path: Path) -> None:
    from uringtools.cli.progress import AUTO_BYTES

    large = tmp_path / "large"
    with open(large, "wb") as f:          # sparse: quick to make and to read
        f.truncate(AUTO_BYTES + BS)
    plain = ours(["-a", "md5", str(large), "s1"], data)
    assert plain.returncode == 0 and plain.stderr == b""

    o = _stderr_on_a_tty(["-a", "md5", str(large), "s1"], data)
    assert (o.stdout, o.returncode) == (plain.stdout, 0)
    assert b"hashing" in o.stderr          # the bar was drawn ...
    assert b"\x1b[?25h" in o.stderr        # ... and the cursor given back

    small = ["-a", "md5", "big", "s1"]
    for args, stdout in ((small, ours(small, data).stdout),
                         (["--no-progress", "-a", "md5", str(large), "s1"],
                          plain.stdout)):
        o = _stderr_on_a_tty(args, data)
        assert (o.stdout, o.returncode) == (stdout, 0)
        assert o.stderr == b"", args

    o = _stderr_on_a_tty(["--progress", "-a", "md5", "s1"], data)  # forced
    assert o.returncode == 0 and b"hashing" in o.stderr


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_b2sum_length_parsed_and_quoted_as_gnu(tmp_path: Path,
                                               locale: str) -> None:
    # GNU reads -l with xdectoumax: blanks and '+' first, ASCII digits, no
    # trailing bytes, nothing past 2**64 - 1; quote() in the messages
    (tmp_path / "a").write_bytes(b"alpha")
    env = dict(ENV, LC_ALL=locale)
    values = ["8\n", "it's", "\u00e98", "520"]
    if locale != "C":
        values += ["8 ", "1_6", "\u0668", " +8", "99999999999999999999999"]

    def both(args: List[str]) -> None:
        with ThreadPoolExecutor(2) as pool:
            gf = pool.submit(subprocess.run, ["b2sum", *args], cwd=tmp_path,
                             env=env, capture_output=True, timeout=60)
            o = subprocess.run([*UH, "-a", "blake2b", *args], cwd=tmp_path,
                               env=env, capture_output=True, timeout=60)
            g = gf.result()
        assert o.stdout == g.stdout, args
        assert o.stderr == g.stderr.replace(b"b2sum", b"uring-hash"), args
        assert o.returncode == g.returncode, args

    for value in values:
        both(["-l", value, "a"])
    if locale != "C":
        # each -l is checked as it comes, the maximum after the last one,
        # both before the option conflicts
        for args in (["-l", "12", "-l", "8", "a"], ["-l", "520", "-l", "8", "a"],
                     ["-c", "--tag", "-l", "12", "a"],
                     ["--tag", "-t", "-l", "520", "a"]):
            both(args)
    if locale == "C":
        # a fixed-length algorithm refuses -l in one line, as cksum -a sha256
        o = ours(["-l", "256", "a"], tmp_path)
        assert o.stderr == (b"uring-hash: --length is only supported with "
                            b"--algorithm=blake2b or blake2s\n")


def test_b2sum_check_tag_length_is_strtoumax(tmp_path: Path) -> None:
    # BLAKE2b-N: GNU reads N with strtoumax base 0 (0400 is octal 256, 0x100
    # hex, 0256 octal 174), after blanks and a '+'
    (tmp_path / "a").write_bytes(b"alpha")
    digest = hashlib.blake2b(b"alpha", digest_size=32).hexdigest()
    lengths = ("256", "0256", "000256", "0400", "0x100", "0X100", "+256",
               " 256", "\t256", " +0x100", "00", "0x", "08", "-256", "256x",
               "++256", "18446744073709551872", "0x1g")
    (tmp_path / "l.sum").write_text("".join(
        f"BLAKE2b-{length} (a) = {digest}\n" for length in lengths))
    same("b2sum", ["-c", "-w", "l.sum"], tmp_path, ours_args=["-a", "blake2b"])


def test_stdout_refused_stops_nothing(tmp_path: Path) -> None:
    # GNU writes each line as it comes and reports a refused one only at
    # exit: every file is still read, every message and warning printed
    for name, body in (("a", b"alpha"), ("b", b"beta")):
        (tmp_path / name).write_bytes(body)
    (tmp_path / "mm.sum").write_bytes(
        b"0" * 64 + b"  a\n" + hashlib.sha256(b"beta").hexdigest().encode()
        + b"  gone\n" + b"junk\n" + hashlib.sha256(b"beta").hexdigest().encode()
        + b"  b\n")
    for args in (["a", "gone", "b", "sub"], ["-c", "mm.sum"],
                 ["-c", "--quiet", "mm.sum", "nope.sum"]):
        with open("/dev/full", "wb") as full:
            o = subprocess.run([*UH, *args], cwd=tmp_path, env=ENV,
                               stdin=subprocess.DEVNULL, stdout=full,
                               stderr=subprocess.PIPE, timeout=60)
            g = subprocess.run(["sha256sum", *args], cwd=tmp_path, env=ENV,
                               stdin=subprocess.DEVNULL, stdout=full,
                               stderr=subprocess.PIPE, timeout=60)
        assert o.returncode == g.returncode == 1, args
        # GNU's stdio loses the reason; we keep it (see test_faults.py)
        assert o.stderr == g.stderr.replace(b"sha256sum:", b"uring-hash:").replace(
            b"write error\n", b"write error: No space left on device\n"), args


def test_closed_stdin_operand_in_its_turn(tmp_path: Path) -> None:
    # '-' with fd 0 closed fails where it stands among the operands, so a
    # merged stdout/stderr reads as GNU's
    (tmp_path / "a").write_bytes(b"alpha")
    for args in ("a -", "a - gone -", "- a"):
        o = subprocess.run(["sh", "-c", f"{' '.join(UH)} {args} <&- 2>&1"],
                           cwd=tmp_path, env=ENV, capture_output=True,
                           timeout=60)
        g = subprocess.run(["sh", "-c", f"sha256sum {args} <&- 2>&1"],
                           cwd=tmp_path, env=ENV, capture_output=True,
                           timeout=60)
        assert o.stdout == g.stdout.replace(b"sha256sum:", b"uring-hash:"), args
        assert o.returncode == g.returncode == 1


# -- many small files ---------------------------------------------------------

def test_small_files_on_the_calling_thread_by_read(tmp_path: Path) -> None:
    """Files under one block are read with read(2) on the calling thread
    (the ring's bookkeeping and a hand-over between threads cost more than
    their digest); large ones still go to the digest threads. The digests
    are sha256sum's, and --stats counts what was done."""
    names = []
    for i in range(40):
        names.append(f"s{i}")
        (tmp_path / f"s{i}").write_bytes(os.urandom(i * 997))
    for i in range(2):
        names.append(f"b{i}")
        (tmp_path / f"b{i}").write_bytes(os.urandom(3 * BS + i))
    for engine in ("uring", "sync"):
        o = ours(["--engine", engine, "--stats-format", "json", *names], tmp_path)
        g = gnu("sha256sum", names, tmp_path)
        assert o.returncode == g.returncode == 0, o.stderr
        assert o.stdout == g.stdout
        stats = json.loads(o.stderr.decode().strip().splitlines()[-1])
        assert stats["files"] == 42
        assert stats["bytes_read"] == sum((tmp_path / n).stat().st_size
                                          for n in names)
        assert stats["extra"]["digest_threads"] == (
            3 if (os.cpu_count() or 1) > 1 else 1)
        if engine == "uring":
            # s0 is empty: the ring reads it (a file claiming size 0 may
            # still have data); the other 39 small ones by read(2)
            assert stats["extra"]["files_read_by_syscalls"] == 39
            assert stats["ops"].get("read_fixed", 0) + stats["ops"].get("read", 0) > 0
    # one file goes through the ring whatever its size: its set-up is paid once
    o = ours(["--stats-format", "json", "s5"], tmp_path)
    assert o.stdout == gnu("sha256sum", ["s5"], tmp_path).stdout
    stats = json.loads(o.stderr.decode().strip().splitlines()[-1])
    assert "files_read_by_syscalls" not in stats["extra"] and stats["sqes"] > 0


def test_check_mode_stats_count_the_digest_threads(tmp_path: Path) -> None:
    """-c runs the results to their end, so the digest threads' counters
    are merged into --stats (they were lost: 0 SQEs, 0 threads)."""
    for i in range(2):
        (tmp_path / f"b{i}").write_bytes(os.urandom(2 * BS + i))
    (tmp_path / "s").write_bytes(b"small\n")
    sums = gnu("sha256sum", ["b0", "s", "b1"], tmp_path).stdout
    (tmp_path / "SUMS").write_bytes(sums)
    o = ours(["--stats-format", "json", "-c", "SUMS"], tmp_path)
    assert o.returncode == 0, o.stderr
    assert o.stdout == b"b0: OK\ns: OK\nb1: OK\n"
    stats = json.loads(o.stderr.decode().strip().splitlines()[-1])
    assert stats["files"] == 3
    assert stats["bytes_read"] == 2 * (2 * BS) + 1 + 6
    assert stats["sqes"] > 0 and stats["enters"] > 0
    assert stats["extra"]["digest_threads"] == (3 if (os.cpu_count() or 1) > 1 else 1)


@pytest.mark.parametrize("args", ["a nope b", "-c SUMS", "-c --quiet SUMS"])
def test_buffered_stdout_interleaves_with_errors_as_gnu(tmp_path: Path,
                                                        args: str) -> None:
    """Digest lines are buffered as stdio buffers them, and written out
    before each message on stderr: with both on one pipe, the order is
    GNU's."""
    lines = []
    for i in range(300):
        name = f"f{i:03}"
        (tmp_path / name).write_bytes(f"{i}\n".encode())
        lines.append(name)
    sums = gnu("sha256sum", lines, tmp_path).stdout.splitlines(keepends=True)
    sums.insert(150, b"0" * 64 + b"  missing\n")
    sums.insert(200, b"not a line\n")
    (tmp_path / "SUMS").write_bytes(b"".join(sums))
    argv = args.replace("a nope b", " ".join(lines[:100] + ["nope"] + lines[100:]))
    o = subprocess.run(["sh", "-c", f"{' '.join(UH)} {argv} 2>&1"], cwd=tmp_path,
                       capture_output=True, env=ENV, timeout=120)
    g = subprocess.run(["sh", "-c", f"sha256sum {argv} 2>&1"], cwd=tmp_path,
                       capture_output=True, env=ENV, timeout=120)
    assert o.returncode == g.returncode != 0
    assert o.stdout == g.stdout.replace(b"sha256sum", b"uring-hash")

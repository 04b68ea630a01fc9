"""Property-based tests (hypothesis), in-process for speed: for random sizes,
block sizes, queue depths and engines, cat's output is its input, cp's
destination is its source, hash's digest is hashlib's; the check-file
parser never crashes on arbitrary bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from uringtools.cat import cat_files  # noqa: E402
from uringtools.catfmt import CatFormat  # noqa: E402
from uringtools.checkfile import CheckParser, escape_name, format_line, unescape_name  # noqa: E402
from uringtools.copy import CopyOptions  # noqa: E402
from uringtools.copytree import copy_paths  # noqa: E402
from uringtools.hashing import hash_files  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

sizes = st.one_of(st.integers(0, 3000), st.integers(0, 600_000),
                  st.sampled_from([0, 1, 511, 512, 513, 4095, 4096, 4097,
                                   65536, 131071, 131072, 131073, 1 << 20]))
block_sizes = st.sampled_from([512, 1000, 4096, 65536, 131072, 1 << 20])
depths = st.integers(1, 16)
engines = st.sampled_from(["uring", "sync"])


def content(size: int, seed: int) -> bytes:
    """Cheap bytes that differ between blocks (catches misordered blocks)."""
    pattern = hashlib.sha256(seed.to_bytes(8, "little")).digest() * 128  # 4 KiB
    out = bytearray()
    n = 0
    while len(out) < size:
        out += n.to_bytes(4, "little") + pattern[:4092]
        n += 1
    return bytes(out[:size])


@SETTINGS
@given(sizes=st.lists(sizes, min_size=1, max_size=3), bs=block_sizes,
       depth=depths, engine=engines, splice=st.booleans(),
       seed=st.integers(0, 1 << 30))
def test_cat_output_is_input(sizes, bs, depth, engine, splice, seed) -> None:
    with tempfile.TemporaryDirectory() as d:
        names, want = [], b""
        for i, size in enumerate(sizes):
            data = content(size, seed + i)
            p = Path(d, f"in{i}")
            p.write_bytes(data)
            names.append(str(p))
            want += data
        out = os.open(os.path.join(d, "out"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.write(out, b"head")   # cat writes from the current offset
            ok = cat_files(names, out, engine=engine, block_size=bs,
                           queue_depth=depth, splice=splice)
            assert ok
            assert os.lseek(out, 0, os.SEEK_CUR) == 4 + len(want)
        finally:
            os.close(out)
        assert Path(d, "out").read_bytes() == b"head" + want


@SETTINGS
@given(text=st.binary(max_size=5000), bs=block_sizes, depth=depths,
       engine=engines, number=st.booleans(), squeeze=st.booleans(),
       ends=st.booleans(), nonprint=st.booleans())
def test_cat_format_matches_one_shot(text, bs, depth, engine, number, squeeze,
                                     ends, nonprint) -> None:
    """Formatting across block boundaries equals formatting in one piece."""
    from uringtools.catfmt import CatFormatter

    fmt = CatFormat(number=number, squeeze_blank=squeeze, show_ends=ends,
                    show_nonprinting=nonprint)
    one = CatFormatter(fmt)
    want = one.feed(text) + one.flush()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "in")
        src.write_bytes(text)
        out = os.open(os.path.join(d, "out"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            assert cat_files([str(src)], out, engine=engine, block_size=bs,
                             queue_depth=depth, fmt=fmt)
        finally:
            os.close(out)
        assert Path(d, "out").read_bytes() == want


@SETTINGS
@given(sizes=st.lists(sizes, min_size=1, max_size=4), bs=block_sizes,
       depth=depths, engine=engines, algo=st.sampled_from(
           ["sha256", "md5", "sha1", "blake2b", "sha512"]),
       threads=st.integers(1, 3), seed=st.integers(0, 1 << 30))
def test_hash_is_hashlib(sizes, bs, depth, engine, algo, threads, seed) -> None:
    with tempfile.TemporaryDirectory() as d:
        names, want = [], []
        for i, size in enumerate(sizes):
            data = content(size, seed + i)
            p = Path(d, f"in{i}")
            p.write_bytes(data)
            names.append(str(p))
            want.append(hashlib.new(algo, data).hexdigest())
        got = [r.digest for r in hash_files(names, algo, engine=engine,
                                            block_size=bs, queue_depth=depth,
                                            threads=threads)]
        assert got == want


@SETTINGS
@given(sizes=st.lists(sizes, min_size=1, max_size=4), bs=block_sizes,
       depth=depths, engine=engines, holes=st.booleans(),
       seed=st.integers(0, 1 << 30))
def test_cp_destination_is_source(sizes, bs, depth, engine, holes, seed) -> None:
    with tempfile.TemporaryDirectory() as d:
        tree = Path(d, "tree")
        tree.mkdir()
        for i, size in enumerate(sizes):
            p = tree / f"f{i}"
            data = content(size, seed + i)
            if holes and size > 8192:
                with open(p, "wb") as fh:   # data, a hole, data
                    fh.write(data[:4096])
                    fh.seek(size - 4096)
                    fh.write(data[-4096:])
            else:
                p.write_bytes(data)
        opts = CopyOptions(recursive=True, engine=engine, block_size=bs,
                           queue_depth=depth)
        errors = []
        ok = copy_paths([str(tree)], str(Path(d, "out")), options=opts,
                        on_error=errors.append)
        assert ok and errors == []
        for p in tree.iterdir():
            assert Path(d, "out", p.name).read_bytes() == p.read_bytes()
        # and once more over the existing copies (replacing destinations)
        ok = copy_paths([str(p) for p in sorted(tree.iterdir())],
                        str(Path(d, "out")), options=opts, on_error=errors.append)
        assert ok and errors == []
        assert sorted(x.name for x in Path(d, "out").iterdir()) == sorted(
            p.name for p in tree.iterdir())


# -- the check-file parser ----------------------------------------------------

PARSERS = [CheckParser("SHA256", 256), CheckParser("MD5", 128),
           CheckParser("BLAKE2b", 512, variable=True, max_bits=512)]


@settings(max_examples=1500, deadline=None)
@given(raw=st.binary(max_size=300))
def test_checkfile_parser_never_crashes(raw: bytes) -> None:
    for parser in PARSERS:
        text = parser.strip(raw + b"\n")
        if text is None:
            continue
        line = parser.parse(text)
        if line is not None:
            assert b"\0" not in line.name
            assert len(line.hexdigest) * 4 == line.bits
            int(line.hexdigest, 16)


hexchars = st.text("0123456789abcdefABCDEF", min_size=1, max_size=140)


@settings(max_examples=1500, deadline=None)
@given(prefix=st.sampled_from([b"", b" ", b"\\", b"SHA256 (", b"MD5 (",
                               b"BLAKE2b-256 (", b"BLAKE2b ("]),
       digest=hexchars, sep=st.sampled_from([b"  ", b" *", b" ", b"\t", b") = "]),
       name=st.binary(max_size=60))
def test_checkfile_parser_near_misses(prefix, digest, sep, name) -> None:
    """Lines close to valid ones (the fuzzer rarely builds these by chance)."""
    raw = prefix + digest.encode() + sep + name
    for parser in PARSERS:
        text = parser.strip(raw + b"\n")
        if text is not None:
            parser.parse(text)


@settings(max_examples=300, deadline=None)
@given(name=st.binary(min_size=1, max_size=80).filter(
           lambda n: b"\0" not in n and b"\n" not in n[-1:]),
       binary=st.booleans(), tag=st.booleans())
def test_checkfile_round_trip(name: bytes, binary: bool, tag: bool) -> None:
    """What format_line writes, the parser reads back to the same name."""
    digest = hashlib.sha256(name).hexdigest()
    line = format_line(name, digest, tag="SHA256" if tag else None,
                       binary=binary and not tag)
    parser = CheckParser("SHA256", 256)
    text = parser.strip(line)
    assert text is not None
    if name.startswith(b"#") and not line.startswith(b"\\"):
        return
    parsed = parser.parse(text)
    if name.endswith(b"\r") and not line.startswith(b"\\"):
        return  # a CR before the newline is a CRLF ending to GNU as well
    assert parsed is not None, line
    assert parsed.name == name and parsed.hexdigest == digest
    assert unescape_name(escape_name(name)) == name

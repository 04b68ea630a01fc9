"""io_uring refused (seccomp makes io_uring_setup fail with EPERM or ENOSYS):
the default engine warns once and falls back to sync; --engine uring fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import SECCOMP_EXEC, cat_cmd, gnu_cat, no_traceback, run, stats_json, write

REASONS = {
    "EPERM": b"Operation not permitted",
    "ENOSYS": b"Function not implemented",
}


def refused(err: str, argv: list) -> list:
    return [sys.executable, SECCOMP_EXEC, err, *argv]


@pytest.mark.parametrize("err", sorted(REASONS))
@pytest.mark.parametrize("opts", [[], ["-A"]])
def test_default_engine_falls_back(tmp_path: Path, all_bytes: bytes, err: str,
                                   opts: list) -> None:
    f = write(tmp_path / "f", all_bytes)
    res = run(refused(err, cat_cmd([*opts, str(f), str(f)])))
    assert res.returncode == 0
    assert res.stdout == gnu_cat([*opts, str(f), str(f)]).stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(b"uring-cat: warning: io_uring unavailable")
    assert REASONS[err] in lines[0]
    assert b"sync" in lines[0]


@pytest.mark.parametrize("err", sorted(REASONS))
def test_fallback_stats(tmp_path: Path, err: str) -> None:
    f = write(tmp_path / "f", b"abc" * 1000)
    res = run(refused(err, cat_cmd(["--stats-format", "json", str(f)])))
    assert res.returncode == 0 and res.stdout == f.read_bytes()
    stats = stats_json(res.stderr)
    assert stats["engine"] == "sync"
    assert REASONS[err].decode() in stats["fallback_reason"]
    assert stats["bytes_read"] == stats["bytes_written"] == 3000


@pytest.mark.parametrize("err", sorted(REASONS))
def test_engine_uring_fails(tmp_path: Path, err: str) -> None:
    f = write(tmp_path / "f", b"data\n")
    res = run(refused(err, cat_cmd([str(f)], "uring")))
    assert res.returncode == 1
    assert res.stdout == b""
    no_traceback(res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(b"uring-cat: io_uring unavailable")
    assert REASONS[err] in lines[0]


def test_engine_sync_says_nothing(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"data\n")
    res = run(refused("EPERM", cat_cmd([str(f)], "sync")))
    assert res.returncode == 0 and res.stdout == b"data\n" and res.stderr == b""


def test_fallback_reads_stdin_from_start(tmp_path: Path) -> None:
    """The failed ring set-up must not have consumed any input."""
    data = b"0123456789" * 10000
    res = run(refused("EPERM", cat_cmd(["-", "-"])), input=data)
    assert res.stdout == data and res.returncode == 0


def test_seccomp_helper_only_blocks_io_uring() -> None:
    res = run(refused("EPERM", [sys.executable, "-c",
                                "import os; print(os.getpid() > 0)"]))
    assert res.stdout == b"True\n"

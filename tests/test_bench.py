"""`uringtools bench`: runs the workloads and reports real measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

URINGTOOLS = str(Path(sys.executable).parent / "uringtools")


def bench(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([URINGTOOLS, "bench", "--dir", str(tmp), *args],
                          capture_output=True, timeout=300)


def test_json_rows_for_every_contender(tmp_path: Path) -> None:
    res = bench("--size", "4M", "--files", "30", "--runs", "2", "--format", "json",
                "--workload", "cat-null", "--workload", "cp-tree",
                "--workload", "hash-big", tmp=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["rows"]
    by = {(r["workload"], r["command"]): r for r in rows}
    assert set(w for w, _ in by) == {"cat-null", "cp-tree", "hash-big"}
    assert ("cat-null", "GNU cat") in by and ("cp-tree", "GNU cp -r") in by
    for (workload, command), row in by.items():
        assert row["runs"] == 2 and row["wall_s"] > 0 and row["cpu_s"] >= 0
        if command.startswith("uring-"):
            # our syscalls come from our own counters: enters for the ring
            assert row["syscalls"] is not None and row["syscalls"] > 0
    assert by[("cat-null", "GNU cat")]["wall_vs_peer"] == 1.0
    # the data directory is removed afterwards
    assert list(tmp_path.iterdir()) == []


def test_markdown_and_cold(tmp_path: Path) -> None:
    res = bench("--size", "2M", "--runs", "1", "--format", "markdown", "--cold",
                "--workload", "cat-pipe", tmp=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout.decode()
    assert "page cache cold" in text
    assert "| cat-pipe | uring-cat |" in text and "| cat-pipe | GNU cat |" in text


def test_bad_size_is_one_line(tmp_path: Path) -> None:
    res = bench("--size", "lots", tmp=tmp_path)
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr and b"--size" in res.stderr

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


def test_big_copies_are_dropped_after_each_run_trees_kept(tmp_path: Path) -> None:
    """A copy of the big file is removed right after its run (its dirty
    pages would throttle the next runs with write-back); copied trees stay
    until the end (creating files where many were just deleted is slow on
    ext4), then everything goes."""
    from uringtools import benchmark as bm

    workloads, cleanup, _ = bm.build_workloads(str(tmp_path), 2 << 20, 20,
                                               ["cp-big", "cp-tree"])
    try:
        assert [w.name for w in workloads] == ["cp-big", "cp-tree"]
        for workload in workloads:
            bm.run_workload(workload, 1)
            assert all(len(c.runs) == 1 for c in workload.commands)
        left = sorted(p.is_dir() for p in (tmp_path / "dst").iterdir())
        # 3 contenders x (warm-up + 1 run), trees only
        assert left == [True] * 6
    finally:
        cleanup()
    assert not (tmp_path / "dst").exists()

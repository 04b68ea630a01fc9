#!/usr/bin/env python3
"""uring-cp against GNU cp: a 1 GiB page-cached file, and a tree of
10,000 x 4 KiB files on tmpfs (/dev/shm) and on ext4 (/tmp).

Each run copies into a fresh destination (DESIGN.md trap 16: on ext4,
creating 10k files right after deleting 10k is slow for minutes), runs of
the three commands alternate, and the table shows medians of wall time and
of CPU time (user+sys of the child, from wait4), with ratios to GNU cp.

    /tmp/venv/bin/python bench/bench_cp.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

BIN = Path(sys.executable).parent
URING_CP = str(BIN / "uring-cp")
GNU_CP = shutil.which("cp") or "/bin/cp"


def timed(argv: List[str]) -> Tuple[float, float]:
    """Wall and CPU (user+sys) seconds of one run; fails loudly."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}")
    return wall, ru.ru_utime + ru.ru_stime


def make_tree(root: Path, files: int, size: int) -> None:
    if root.exists() and len(os.listdir(root)) == files:
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(files):
        sub = root / f"d{i // 500:02d}"
        if i % 500 == 0:
            sub.mkdir()
        (sub / f"f{i:05d}").write_bytes(os.urandom(size))


def count_files(root: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(root))


def bench(name: str, src: Path, workdir: Path, recursive: bool,
          rounds: int) -> Dict[str, Tuple[float, float]]:
    cmds = {
        "GNU cp": [GNU_CP] + (["-r"] if recursive else []),
        "uring-cp": [URING_CP] + (["-r"] if recursive else []),
        "uring-cp --engine sync": [URING_CP, "--engine", "sync"]
                                  + (["-r"] if recursive else []),
    }
    results: Dict[str, List[Tuple[float, float]]] = {k: [] for k in cmds}
    serial = 0
    for r in range(rounds):
        order = list(cmds) if r % 2 == 0 else list(reversed(list(cmds)))
        for label in order:
            serial += 1
            dest = workdir / f"dest-{os.getpid()}-{serial}"
            if recursive:
                dest.mkdir()   # a fresh directory for every run
                target = dest / "t"
            else:
                target = dest
            results[label].append(timed(cmds[label] + [str(src), str(target)]))
            if recursive:
                assert count_files(target) == count_files(src)
                shutil.rmtree(dest)
            else:
                assert target.stat().st_size == src.stat().st_size
                target.unlink()
    out = {}
    for label, runs in results.items():
        out[label] = (statistics.median(w for w, _ in runs),
                      statistics.median(c for _, c in runs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="fewer files and a smaller file (smoke test)")
    args = ap.parse_args()
    big_size = (64 << 20) if args.quick else (1 << 30)
    nfiles = 500 if args.quick else 10_000

    rows = []
    ext4 = Path("/tmp/uring-cp-bench")
    shm = Path("/dev/shm/uring-cp-bench")
    ext4.mkdir(exist_ok=True)
    shm.mkdir(exist_ok=True)
    big = ext4 / "big"
    if not big.exists() or big.stat().st_size != big_size:
        with open(big, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(big_size >> 20):
                f.write(block)
    subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)
    cases = [
        (f"{big_size >> 20} MiB cached file, ext4", big, ext4, False, 1.0),
        (f"{nfiles:,} x 4 KiB tree, tmpfs", shm / "tree", shm, True, 0.8),
        (f"{nfiles:,} x 4 KiB tree, ext4", ext4 / "tree", ext4, True, 1.0),
    ]
    for label, src, work, recursive, goal in cases:
        if recursive:
            make_tree(src, nfiles, 4096)
        res = bench(label, src, work, recursive, args.rounds)
        gnu_wall, gnu_cpu = res["GNU cp"]
        for cmd, (wall, cpu) in res.items():
            rows.append((label, cmd, wall, cpu, wall / gnu_wall,
                         goal if cmd == "uring-cp" else None))
        print(f"done: {label}", file=sys.stderr)

    print(f"rounds: {args.rounds}, median of each; CPU = user+sys of the child\n")
    print("| case | command | wall s | CPU s | wall vs GNU | goal |")
    print("|---|---|---:|---:|---:|---:|")
    for label, cmd, wall, cpu, ratio, goal in rows:
        g = f"<= {goal:.1f}x" if goal else ""
        print(f"| {label} | {cmd} | {wall:.3f} | {cpu:.3f} | {ratio:.2f}x | {g} |")


if __name__ == "__main__":
    main()

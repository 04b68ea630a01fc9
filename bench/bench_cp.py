#!/usr/bin/env python3
"""uring-cp against GNU cp: a 1 GiB page-cached file, and a tree of
10,000 x 4 KiB files on tmpfs (/dev/shm) and on ext4 (/tmp).

Each run copies into a fresh destination, and the copies of a tree are
deleted only after the last run of that case (DESIGN.md trap 16: on ext4,
creating 10k files right after deleting 10k is slow for minutes); runs of
the three commands alternate, and the table shows medians of wall time and
of CPU time (user+sys of the child, from wait4), with ratios to GNU cp.
uringtools is byte-compiled first, as an installed package would be (the
environment may set PYTHONDONTWRITEBYTECODE, which would otherwise make
every run compile the package from source).

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


def make_flat(root: Path, files: int, size: int) -> None:
    if root.exists() and len(os.listdir(root)) == files:
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i:05d}").write_bytes(os.urandom(size))


def count_files(root: Path) -> int:
    return sum(len(f) for _, _, f in os.walk(root))


def bench(name: str, src: Path, workdir: Path, kind: str,
          rounds: int) -> Dict[str, Tuple[float, float]]:
    """kind: "file" (one big file), "tree" (cp -r), "many" (every file of
    the directory ``src`` as an operand, into a directory)."""
    flags = ["-r"] if kind == "tree" else []
    cmds = {
        "GNU cp": [GNU_CP] + flags,
        "uring-cp": [URING_CP] + flags,
        "uring-cp --engine sync": [URING_CP, "--engine", "sync"] + flags,
    }
    operands = ([str(p) for p in sorted(src.iterdir())] if kind == "many"
                else [str(src)])
    results: Dict[str, List[Tuple[float, float]]] = {k: [] for k in cmds}
    made: List[Path] = []
    serial = 0
    for r in range(rounds):
        order = list(cmds) if r % 2 == 0 else list(reversed(list(cmds)))
        for label in order:
            serial += 1
            dest = workdir / f"dest-{os.getpid()}-{serial}"
            if kind == "file":
                target = dest
            else:
                dest.mkdir()   # a fresh directory for every run
                target = dest / "t" if kind == "tree" else dest
            results[label].append(timed(cmds[label] + operands + [str(target)]))
            if kind == "file":
                assert target.stat().st_size == src.stat().st_size
                target.unlink()
            else:
                assert count_files(target) == count_files(src)
                made.append(dest)   # deleted after the last run (trap 16)
    for dest in made:
        shutil.rmtree(dest)
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

    package = Path(__file__).resolve().parent.parent / "uringtools"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)],
                   stdout=subprocess.DEVNULL, check=True)
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
    nmany = nfiles // 10
    cases = [
        (f"{big_size >> 20} MiB cached file, ext4", big, ext4, "file", 1.0),
        (f"{nfiles:,} x 4 KiB tree, tmpfs", shm / "tree", shm, "tree", 0.8),
        (f"{nfiles:,} x 4 KiB tree, ext4", ext4 / "tree", ext4, "tree", 1.0),
        (f"{nmany:,} x 4 KiB operands into a dir, tmpfs", shm / "many", shm,
         "many", None),
    ]
    for label, src, work, kind, goal in cases:
        if kind == "tree":
            make_tree(src, nfiles, 4096)
        elif kind == "many":
            make_flat(src, nmany, 4096)
        res = bench(label, src, work, kind, args.rounds)
        gnu_wall, gnu_cpu = res["GNU cp"]
        for cmd, (wall, cpu) in res.items():
            rows.append((label, cmd, wall, cpu, wall / gnu_wall,
                         goal if cmd == "uring-cp" else None))
        sys.stdout.flush()
        print(f"done: {label}", file=sys.stderr)

    print(f"rounds: {args.rounds}, median of each; CPU = user+sys of the child\n")
    print("| case | command | wall s | CPU s | wall vs GNU | goal |")
    print("|---|---|---:|---:|---:|---:|")
    for label, cmd, wall, cpu, ratio, goal in rows:
        g = f"<= {goal:.1f}x" if goal else ""
        print(f"| {label} | {cmd} | {wall:.3f} | {cpu:.3f} | {ratio:.2f}x | {g} |")


if __name__ == "__main__":
    main()

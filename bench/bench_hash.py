"""Benchmark uring-hash: sha256 of a page-cached file and of several files.

Compares, in alternating order over several rounds (medians reported):
  - ``uring-hash FILE`` (the installed script, a fresh process each run)
  - ``sha256sum FILE`` (GNU coreutils)
  - ``hashlib.file_digest`` in one thread, in this process (no start-up cost)
  - ``uring-hash --engine sync FILE``
  - hash_files() in this process with and without IOSQE_ASYNC
and then N smaller files: ``uring-hash F1..FN`` (worker threads) against
file_digest over the same files one after another in this process.

Usage: python bench/bench_hash.py [--size-mib 1024] [--files 4]
       [--file-mib 256] [--rounds 3] [--dir /dev/shm]
The data files are created in --dir and deleted afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

HERE = Path(sys.executable).parent
UH = str(HERE / "uring-hash") if (HERE / "uring-hash").exists() else "uring-hash"


def make_file(path: Path, mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for i in range(mib):
            out.write(chunk[i % 251:] + chunk[:i % 251])
    with open(path, "rb") as f:           # warm the page cache
        while f.read(1 << 22):
            pass


def run_cmd(argv: List[str]) -> Callable[[], None]:
    def go() -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return go


def file_digest(paths: List[Path]) -> Callable[[], None]:
    def go() -> None:
        for p in paths:
            with open(p, "rb") as f:
                hashlib.file_digest(f, "sha256")
    return go


def in_process(paths: List[Path], async_reads: bool) -> Callable[[], None]:
    from uringtools.hashing import hash_files

    def go() -> None:
        for _ in hash_files([str(p) for p in paths], "sha256",
                            async_reads=async_reads):
            pass
    return go


def measure(variants: Dict[str, Callable[[], None]], rounds: int
            ) -> Dict[str, float]:
    times: Dict[str, List[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]   # alternate the order
        for name in order:
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(title: str, med: Dict[str, float], size: int,
          refs: List[str]) -> str:
    lines = [f"### {title}", "",
             "| variant | median s | MB/s | " + " | ".join(f"x {r}" for r in refs)
             + " |", "|---|---:|---:|" + "---:|" * len(refs)]
    for name, t in med.items():
        ratios = " | ".join(f"{t / med[r]:.2f}" for r in refs)
        lines.append(f"| {name} | {t:.3f} | {size / t / 1e6:.0f} | {ratios} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--file-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-hash-", dir=args.dir))
    try:
        big = work / "big"
        make_file(big, args.size_mib)
        one = {
            "uring-hash": run_cmd([UH, str(big)]),
            "sha256sum": run_cmd(["sha256sum", str(big)]),
            "file_digest (1 thread, in-process)": file_digest([big]),
            "uring-hash --engine sync": run_cmd([UH, "--engine", "sync", str(big)]),
            "hash_files in-process, IOSQE_ASYNC": in_process([big], True),
            "hash_files in-process, no ASYNC": in_process([big], False),
        }
        med1 = measure(one, args.rounds)
        out = table(f"sha256, one {args.size_mib} MiB file in {args.dir}",
                    med1, args.size_mib << 20,
                    ["sha256sum", "file_digest (1 thread, in-process)"])
        big.unlink()
        small = [work / f"f{i}" for i in range(args.files)]
        for p in small:
            make_file(p, args.file_mib)
        many = {
            f"uring-hash {args.files} files": run_cmd([UH, *map(str, small)]),
            "file_digest one after another (in-process)": file_digest(small),
            f"sha256sum {args.files} files": run_cmd(["sha256sum",
                                                      *map(str, small)]),
        }
        med2 = measure(many, args.rounds)
        out += "\n" + table(
            f"sha256, {args.files} x {args.file_mib} MiB files, "
            f"{os.cpu_count()} CPUs", med2, args.files * args.file_mib << 20,
            ["file_digest one after another (in-process)",
             f"sha256sum {args.files} files"])
        print(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

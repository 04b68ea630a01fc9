#!/usr/bin/env python3
"""Run shell commands alternately, several rounds; print medians and ratios.

For comparing two builds of uringtools (or a command and its GNU peer) in
one run on a noisy machine. Each command is a shell snippet; ``$D`` is a
fresh destination path for that run (under ``--dir``). Destinations are
deleted after each run, or, with ``--reset CMD``, left alone and CMD runs
before every round instead (e.g. a fresh mkfs: on ext4, creating 10k files
right after deleting 10k is slow for minutes, DESIGN.md trap 16).

    python bench/alternate.py --rounds 7 --dir /dev/shm \\
        gnu 'cp -r /dev/shm/tree $D' \\
        ours 'uring-cp -r /dev/shm/tree $D'

The first command is the peer the ratios are taken against: the ratio of
the medians, and the median of each round's own ratio ("paired", steadier
when the host's speed drifts). Each round starts with the next command.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dir", default="/dev/shm",
                    help="where the $D destinations go")
    ap.add_argument("--reset", help="shell command run before every round "
                    "(destinations are then not deleted)")
    ap.add_argument("pairs", nargs="+", metavar="LABEL COMMAND")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give LABEL COMMAND pairs")
    commands = list(zip(args.pairs[::2], args.pairs[1::2]))
    times: Dict[str, List[float]] = {label: [] for label, _ in commands}
    cpus: Dict[str, List[float]] = {label: [] for label, _ in commands}
    for r in range(args.rounds):
        if args.reset:
            subprocess.run(args.reset, shell=True, check=True,
                           stdout=subprocess.DEVNULL)
        # rotate the order each round: no command always runs first
        for i in range(len(commands)):
            k = (i + r) % len(commands)
            label, command = commands[k]
            dest = os.path.join(args.dir, f"alternate-{os.getpid()}-{k}-{r}")
            env = dict(os.environ, D=dest)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            res = subprocess.run(command, shell=True, env=env,
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
            times[label].append(time.perf_counter() - t0)
            # user + system time of the command and everything it waited
            # for (its threads too: io-wq workers count)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[label].append(r1.ru_utime + r1.ru_stime
                               - r0.ru_utime - r0.ru_stime)
            if res.returncode != 0:
                sys.stderr.write(f"{label}: exit {res.returncode}: "
                                 f"{res.stderr.decode(errors='replace')}\n")
                return 1
            if not args.reset:
                if os.path.isdir(dest) and not os.path.islink(dest):
                    shutil.rmtree(dest)
                elif os.path.lexists(dest):
                    os.unlink(dest)
    first = commands[0][0]
    base = statistics.median(times[first])
    cpu_base = statistics.median(cpus[first]) or 1e-9
    print(f"| command | median | vs {first} | paired vs {first} "
          f"| CPU (user+sys) | CPU vs {first} | all runs (ms) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, _ in commands:
        m = statistics.median(times[label])
        c = statistics.median(cpus[label])
        # the median of each round's own ratio: the host's speed drifts
        # over minutes, and runs of one round are seconds apart
        paired = statistics.median(t / b for t, b in zip(times[label],
                                                         times[first]))
        runs = ", ".join(f"{t * 1e3:.0f}" for t in sorted(times[label]))
        print(f"| {label} | {m * 1e3:.0f} ms | {m / base:.2f}x | "
              f"{paired:.2f}x | {c * 1e3:.0f} ms | {c / cpu_base:.2f}x "
              f"| {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Chains of splice pairs in-process: how many pairs per chain, which ring flags.

Two experiments on one big page-cached file (no start-up in the numbers):

* ``null``: the file into /dev/null through a private pipe, as uring-cat
  does, with ``--pairs`` pairs per linked chain on rings set up with
  DEFER_TASKRUN (what the rings probe first), no flags, and COOP_TASKRUN.
* ``copy``: the file into a new file beside it, as uring-cp does: chains on
  ``--pipes`` pipes in flight, pairs of ``--chunk`` bytes; against
  ``os.copy_file_range`` (GNU cp's call) in the same minutes.

    python bench/splice_chains.py null /dev/shm/big --pairs 1 8 16 32
    python bench/splice_chains.py copy /dev/shm/big --pairs 16 --chunk 1M 512K

Prints the median wall and CPU (user+sys of this process, io-wq workers
included) of ``--runs`` runs per case, cases interleaved round by round.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import time
from typing import Callable, Dict, List, Tuple

from uringtools.ring import (OP_SPLICE, SETUP_COOP_TASKRUN, SQE_CQE_SKIP_SUCCESS,
                             SQE_IO_LINK, Ring)
from uringtools._uring import lib

F_SETPIPE_SZ = 1031
LINKED = SQE_IO_LINK | SQE_CQE_SKIP_SUCCESS
FLAGS = {"defer": lib.IORING_SETUP_SINGLE_ISSUER | lib.IORING_SETUP_DEFER_TASKRUN,
         "none": 0, "coop": SETUP_COOP_TASKRUN}


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def pipe_of(size: int) -> Tuple[int, int]:
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, size)
    return r, w


def chains(src: str, dst: str, pairs: int, pipes: int, chunk: int,
           flags: int, positional: bool) -> None:
    """Copy src to dst with linked chains of splice pairs; checks every CQE."""
    fd = os.open(src, os.O_RDONLY)
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) \
        if positional else os.open(dst, os.O_WRONLY)
    size = os.fstat(fd).st_size
    ring = Ring(max(8, 2 * pairs * pipes), setup_flags=flags)
    mids = [pipe_of(chunk) for _ in range(pipes)]
    try:
        if positional:
            ring.limit_workers(2)
        free = list(range(pipes))
        off = flying = 0
        while off < size or flying:
            while free and off < size:
                k = free.pop()
                r, w = mids[k]
                for j in range(pairs):
                    n = min(chunk, size - off)
                    last = j == pairs - 1 or off + n >= size
                    ring.prep(OP_SPLICE, w, off, n, -1, k << 8 | 1,
                              flags=LINKED, splice_fd_in=fd)
                    ring.prep(OP_SPLICE, out, -1, n, off if positional else -1,
                              k << 8 | 2, flags=0 if last else LINKED,
                              splice_fd_in=r)
                    off += n
                    if last:
                        break
                flying += 1
            for i in range(ring.wait(1)):
                ud, res = ring.cqe_user_data[i], ring.cqe_res[i]
                if ud & 0xFF != 2 or res <= 0:
                    raise RuntimeError(f"a chain stopped short: {ud:#x} {res}")
                free.append(ud >> 8)
                flying -= 1
    finally:
        ring.close()
        for r, w in mids:
            os.close(r)
            os.close(w)
        os.close(fd)
        os.close(out)


def copy_file_range(src: str, dst: str) -> None:
    fd = os.open(src, os.O_RDONLY)
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.copy_file_range(fd, out, 1 << 30):
            pass
    finally:
        os.close(fd)
        os.close(out)


def measure(cases: Dict[str, Callable[[], None]], runs: int,
            clean: Callable[[], None]) -> None:
    wall: Dict[str, List[float]] = {name: [] for name in cases}
    cpu: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            t0, c0 = time.perf_counter(), os.times()
            case()
            t1, c1 = time.perf_counter(), os.times()
            clean()
            wall[name].append(t1 - t0)
            cpu[name].append(c1.user + c1.system - c0.user - c0.system)
    print("| case | wall (median) | CPU (median) | all runs (ms) |")
    print("|---|---:|---:|---|")
    for name in cases:
        runs_ms = ", ".join(str(round(t * 1000)) for t in sorted(wall[name]))
        print(f"| {name} | {statistics.median(wall[name]) * 1000:.0f} ms "
              f"| {statistics.median(cpu[name]) * 1000:.0f} ms | {runs_ms} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["null", "copy"])
    ap.add_argument("file")
    ap.add_argument("--pairs", type=int, nargs="+", default=[1, 8, 16, 32])
    ap.add_argument("--pipes", type=int, default=2)
    ap.add_argument("--chunk", type=size_arg, nargs="+", default=[1 << 20])
    ap.add_argument("--flags", nargs="+", choices=sorted(FLAGS),
                    default=["defer", "none", "coop"])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    cases: Dict[str, Callable[[], None]] = {}
    if args.what == "null":
        for pairs in args.pairs:
            for flag in args.flags:
                cases[f"{pairs} pairs per chain, {flag}"] = (
                    lambda p=pairs, f=FLAGS[flag]: chains(
                        args.file, "/dev/null", p, 1, 1 << 20, f, False))
        measure(cases, args.runs, lambda: None)
        return
    dst = args.file + ".splice-chains"
    cases["os.copy_file_range"] = lambda: copy_file_range(args.file, dst)
    for chunk in args.chunk:
        for pairs in args.pairs:
            cases[f"{pairs} pairs of {chunk >> 10} KiB per chain, "
                  f"{args.pipes} pipes, coop"] = (
                lambda c=chunk, p=pairs: chains(args.file, dst, p, args.pipes,
                                                c, SETUP_COOP_TASKRUN, True))
    measure(cases, args.runs, lambda: os.unlink(dst))


if __name__ == "__main__":
    main()

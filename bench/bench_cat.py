"""uring-cat vs GNU cat vs uring-cat --engine sync.

A cached file to /dev/null and into a pipe; alternating runs; medians of
wall and CPU time (user+sys of the cat process alone), ratios to GNU cat,
and syscalls counted by strace -f -c in a separate untimed run.

    python bench/bench_cat.py [--size-mib 1024] [--runs 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import alternate, make_file, markdown_table, syscalls, tool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--keep", action="store_true", help="keep the data file")
    args = parser.parse_args()

    path = os.path.join(args.dir, f"uringtools-bench-cat-{args.size_mib}M")
    make_file(path, args.size_mib << 20)
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
    commands = {
        "GNU cat": ["cat", path],
        "uring-cat": [tool("uring-cat"), path],
        "uring-cat --no-splice": [tool("uring-cat"), "--no-splice", path],
        "uring-cat --engine sync": [tool("uring-cat"), "--engine", "sync", path],
    }
    rows = []
    try:
        for target, into_pipe in (("/dev/null", False), ("pipe", True)):
            samples = alternate(commands, args.runs, into_pipe=into_pipe)
            gnu = samples["GNU cat"]
            for name, sample in samples.items():
                calls = syscalls(commands[name], into_pipe=into_pipe)
                rows.append([
                    f"{args.size_mib} MiB -> {target}", name,
                    f"{sample.wall_median * 1000:.0f} ms",
                    f"{sample.wall_median / gnu.wall_median:.2f}x",
                    f"{sample.cpu_median * 1000:.0f} ms",
                    f"{sample.cpu_median / gnu.cpu_median:.2f}x",
                    f"{calls:,}" if calls is not None else "n/a",
                ])
        # start-up: a 24-byte file, against the interpreter importing click
        small = path + ".small"
        with open(small, "wb") as f:
            f.write(b"twenty-four bytes long!\n")
        starts = {
            "python -c 'import click'": [sys.executable, "-c", "import click"],
            "uring-cat (24 bytes)": [tool("uring-cat"), small],
            "GNU cat (24 bytes)": ["cat", small],
        }
        samples = alternate(starts, args.runs * 3)
        base = samples["python -c 'import click'"]
        for name, sample in samples.items():
            rows.append(["start-up", name, f"{sample.wall_median * 1000:.1f} ms",
                         f"{sample.wall_median / base.wall_median:.2f}x (vs import click)",
                         f"{sample.cpu_median * 1000:.1f} ms", "", ""])
        os.unlink(small)
    finally:
        if not args.keep:
            os.unlink(path)
    print(f"runs per cell: {args.runs} (medians), machine: {os.cpu_count()} cores")
    print(markdown_table(["workload", "command", "wall", "wall vs GNU",
                          "CPU", "CPU vs GNU", "syscalls"], rows))


if __name__ == "__main__":
    main()

"""Helpers for the bench scripts: alternate runs, medians, CPU and syscalls."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

BIN = os.path.dirname(sys.executable)


def tool(name: str) -> str:
    """Path of an installed uringtools script beside this interpreter."""
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name) or name


@dataclass
class Sample:
    wall: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def run_once(argv: Sequence[str], *, into_pipe: bool = False,
             stdin: Optional[int] = None) -> tuple:
    """Run argv once; return (wall seconds, CPU seconds of argv alone).

    With into_pipe, stdout is a pipe drained by a separate `cat`, whose CPU is
    not counted; otherwise stdout is /dev/null.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        t0 = time.perf_counter()
        if into_pipe:
            r, w = os.pipe()
            proc = subprocess.Popen(argv, stdout=w, stdin=stdin)
            os.close(w)
            sink = subprocess.Popen(["cat"], stdin=r, stdout=devnull)
            os.close(r)
        else:
            proc = subprocess.Popen(argv, stdout=devnull, stdin=stdin)
            sink = None
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sink is not None:
            sink.wait()
        wall = time.perf_counter() - t0
    finally:
        os.close(devnull)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with status {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def alternate(commands: Dict[str, Sequence[str]], runs: int,
              **kwargs: object) -> Dict[str, Sample]:
    """Run every command once per round, `runs` rounds, after a warm-up."""
    samples = {name: Sample() for name in commands}
    for argv in commands.values():
        run_once(argv, **kwargs)  # warm-up: page cache, imports
    for _ in range(runs):
        for name, argv in commands.items():
            wall, cpu = run_once(argv, **kwargs)
            samples[name].wall.append(wall)
            samples[name].cpu.append(cpu)
    return samples


def syscalls(argv: Sequence[str], *, into_pipe: bool = False) -> Optional[int]:
    """Total syscalls of argv (all threads) counted by strace -c, or None."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        cmd = ["strace", "-f", "-c", "-o", out.name, *argv]
        sink = "| cat > /dev/null" if into_pipe else "> /dev/null"
        subprocess.run(" ".join(map(_quote, cmd)) + " " + sink, shell=True,
                       check=True)
        text = out.read()
    match = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)", text, re.M) or \
        re.search(r"\s(\d+)\s+(?:\d+\s+)?total\s*$", text, re.M)
    return int(match.group(1)) if match else None


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)


def make_file(path: str, size: int) -> None:
    """Write `size` bytes of random-ish data (incompressible enough) to path."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

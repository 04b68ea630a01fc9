"""`uringtools bench`: the efficiency report, measured on this machine."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, NoReturn, Optional, Sequence

import click

from .. import benchmark as bm

WORKLOADS = ("cat-null", "cat-pipe", "cp-big", "cp-tree", "hash-big", "hash-many")


def _fmt_ratio(value: Optional[float]) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _fmt_rate(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value / bm.MiB:,.0f} MiB/s"


def _fmt_calls(value: Optional[float]) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def _markdown(rows: Sequence[Dict[str, Any]]) -> str:
    head = ["workload", "command", "wall (median)", "vs peer", "CPU/GiB",
            "CPU vs peer", "syscalls/GiB", "throughput"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r["workload"]), str(r["command"]), f"{r['wall_s'] * 1000:.0f} ms",
            _fmt_ratio(r["wall_vs_peer"]),
            f"{r['cpu_s_per_gib']:.3f} s" if r["cpu_s_per_gib"] is not None else "-",
            _fmt_ratio(r["cpu_vs_peer"]), _fmt_calls(r["syscalls_per_gib"]),
            _fmt_rate(r["throughput_bytes_per_s"])]) + " |")
    return "\n".join(lines)


def _rich_table(rows: Sequence[Dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=title)
    for name, justify in (("workload", "left"), ("command", "left"),
                          ("wall", "right"), ("vs peer", "right"), ("", "left"),
                          ("CPU/GiB", "right"), ("CPU vs peer", "right"),
                          ("syscalls/GiB", "right"), ("throughput", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        ratio = r["wall_vs_peer"]
        bar = ""
        if ratio is not None:
            width = max(1, min(30, round(ratio * 10)))
            colour = "green" if ratio <= 1.0 else "red"
            bar = f"[{colour}]{'█' * width}[/]"
        table.add_row(
            str(r["workload"]), str(r["command"]), f"{r['wall_s'] * 1000:,.0f} ms",
            _fmt_ratio(ratio), bar,
            f"{r['cpu_s_per_gib']:.3f} s" if r["cpu_s_per_gib"] is not None else "-",
            _fmt_ratio(r["cpu_vs_peer"]), _fmt_calls(r["syscalls_per_gib"]),
            _fmt_rate(r["throughput_bytes_per_s"]))
    if not console.is_terminal:
        # a file or pipe has no width to fit: keep every cell whole
        wide = console.options.update_width(1000)
        console.width = max(console.width,
                            console.measure(table, options=wide).maximum)
    console.print(table)


@click.command(name="bench", context_settings={"help_option_names": ["--help"]})
@click.option("--size", default="1G", show_default=True,
              help="size of the big file (K/M/G suffixes)")
@click.option("--files", type=click.IntRange(0, 10_000_000), default=10000,
              show_default=True, help="small files in the cp -r tree")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False),
              default=None, help="where to make the data [default: a new "
                                 "temporary directory, removed afterwards]")
@click.option("--runs", type=click.IntRange(1, 100), default=5, show_default=True,
              help="measured runs per command (medians are reported)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]),
              default="table", show_default=True)
@click.option("--workload", "workloads", multiple=True,
              type=click.Choice(WORKLOADS),
              help="run only these workloads (repeatable) [default: all]")
@click.option("--sweep", is_flag=True,
              help="instead: block size x queue depth for uring-cat through "
                   "the registered buffers")
@click.option("--cold", is_flag=True,
              help="evict the data from the page cache before every run")
def bench_command(size: str, files: int, data_dir: Optional[str], runs: int,
                  fmt: str, workloads: Sequence[str], sweep: bool,
                  cold: bool) -> None:
    """Measure uring-cat, uring-cp and uring-hash against GNU tools here.

    Runs alternate between contenders; medians of wall time, CPU per GiB,
    syscalls per GiB and throughput are reported with the ratio to the GNU
    peer.
    """
    try:
        nbytes = _parse_big_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size")
    from .common import Reporter, guard_std_fds, run_main

    closed = guard_std_fds()

    def body() -> int:
        if 1 in closed:   # the report would be lost: say so before measuring
            _fail("standard output: Bad file descriptor")
        _bench(nbytes, files, data_dir, runs, fmt, workloads, sweep, cold)
        return 0

    # Ctrl-C and SIGTERM unwind (the contender running is killed, the data
    # removed), then bench dies of the signal, as GNU tools do
    run_main(Reporter("uringtools bench"), body)


def _bench(nbytes: int, files: int, data_dir: Optional[str], runs: int,
           fmt: str, workloads: Sequence[str], sweep: bool, cold: bool) -> None:
    if not sweep and files == 0 and set(workloads) == {"cp-tree"}:
        _fail("nothing to measure: cp-tree needs --files 1 or more")
    try:
        # absolute: a --dir starting with '-' must not read as an option
        root = os.path.abspath(tempfile.mkdtemp(prefix="uringtools-bench-",
                                                dir=data_dir))
    except OSError as exc:
        _fail(f"{data_dir or tempfile.gettempdir()}: {_strerror(exc)}")
    needed = (nbytes if sweep else
              bm.space_needed(nbytes, files, runs, list(workloads) or None))
    try:
        st = os.statvfs(root)
        available = st.f_bavail * st.f_frsize
    except OSError:
        available = needed
    if needed > available:
        shutil.rmtree(root, ignore_errors=True)
        _fail(f"{data_dir or tempfile.gettempdir()}: not enough free space for "
              f"the data: {needed:,} bytes needed, {available:,} available")
    progress = None
    try:
        if sweep:
            rows = _run_sweep(root, nbytes, runs, cold)
        else:
            built, cleanup, paths = bm.build_workloads(root, nbytes, files,
                                                       list(workloads) or None)
            for workload in built:
                for tool, label in workload.missing:
                    click.echo(f"uringtools bench: {tool}: not found in PATH; "
                               f"{label} left out", err=True)
            try:
                total = sum((runs + 1) * len(w.commands) for w in built)
                progress, advance = _progress(total)
                bm.warm(paths)
                if cold:
                    _check_evictable(paths)
                evict = (lambda: bm.evict(paths)) if cold else None
                for workload in built:
                    bm.run_workload(workload, runs, advance, evict)
            finally:
                if progress is not None:
                    progress.stop()
                cleanup()
            rows = [row for w in built for row in w.rows()]
    except RuntimeError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename}: {_strerror(exc)}" if exc.filename
              else _strerror(exc))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    title = (f"uringtools bench: {os.cpu_count()} cores, {runs} runs, "
             f"page cache {'cold' if cold else 'warm'}")
    try:
        if fmt == "json":
            click.echo(json.dumps({"title": title, "rows": rows}, indent=2))
        elif fmt == "markdown":
            click.echo(title + "\n\n" + _markdown(rows))
        else:
            _rich_table(rows, title)
        sys.stdout.flush()
    except OSError as exc:
        from .common import stdout_failed

        stdout_failed("uringtools bench", exc.errno or 0)


def _check_evictable(paths: Sequence[str]) -> None:
    """--cold: fail unless evicting really empties the page cache of the
    data (tmpfs keeps its files there: the runs would be warm)."""
    bm.evict(paths)
    for path in paths:
        if bm.cached_bytes([path]):
            _fail(f"--cold: {path}: stays in the page cache after eviction "
                  "(tmpfs?); use --dir on a disk file system")


def _strerror(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or 0)


def _fail(message: str) -> NoReturn:
    """``uringtools bench: message`` on stderr, status 1."""
    click.echo(f"uringtools bench: {message}", err=True)
    raise SystemExit(1)


def _parse_big_size(text: str) -> int:
    raw = text.strip().upper().rstrip("B").rstrip("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if raw and raw[-1] in units and raw[:-1].isdigit():
        return int(raw[:-1]) * units[raw[-1]]
    if raw.isdigit():
        return int(raw)
    raise ValueError(f"invalid size {text!r}")


def _progress(total: int):  # -> (Progress | None, callable)
    if not sys.stderr.isatty():
        return None, lambda label: None
    from rich.console import Console
    from rich.progress import Progress

    # redrawn between runs only: a refresh thread writing while a peer runs
    # would count in that peer's syscalls (benchmark._OwnIO)
    progress = Progress(console=Console(stderr=True), redirect_stdout=False,
                        transient=True, auto_refresh=False)
    task = progress.add_task("measuring", total=total)
    progress.start()

    def advance(label: str) -> None:
        progress.update(task, advance=1, description=label)
        progress.refresh()

    return progress, advance


def _run_sweep(root: str, nbytes: int, runs: int, cold: bool) -> List[Dict[str, Any]]:
    path = os.path.join(root, "big")
    bm.write_file(path, nbytes)
    bm.warm([path])
    if cold:
        _check_evictable([path])
    commands = list(bm.sweep_commands(path, (16 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20),
                                      (1, 2, 4, 8, 16)))
    workload = bm.Workload("sweep: uring-cat --no-splice", nbytes,
                           [c for _, _, c in commands], peer="128K x 4")
    progress, advance = _progress((runs + 1) * len(commands))
    try:
        bm.run_workload(workload, runs, advance,
                        (lambda: bm.evict([path])) if cold else None)
    finally:
        if progress is not None:
            progress.stop()
    return workload.rows()

"""Helpers the benchmarks share: their command line and scratch folders, the CPU a process
still burns once a call has returned, and readers of /proc (Linux) for processes' children,
CPU time and memory."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
# Models the benchmarks export (ONNX), kept between runs so that each is exported once.
MODEL_CACHE_DIR = ROOT / "var" / "bench-models"
IDLE_SECONDS = 0.3  # longer than a BLAS worker thread spins before it sleeps


def script_parser(docstring: str, **options) -> argparse.ArgumentParser:
    """A benchmark's command line, described by the first line of its docstring (pass the
    script's `__doc__`); `options` go to `ArgumentParser` (an epilog, say)."""
    return argparse.ArgumentParser(description=docstring.splitlines()[0], **options)


def add_seed_option(parser: argparse.ArgumentParser) -> None:
    """`--seed` (default 0): the seed of a benchmark's random data, so that two runs measure
    the same data unless asked otherwise."""
    parser.add_argument("--seed", type=int, default=0)


@contextlib.contextmanager
def scratch_folder(name: str) -> Iterator[Path]:
    """A fresh temporary folder named `bench-<name>-...`, removed with its contents on exit:
    whatever a benchmark writes never lands in the checkout."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        yield Path(folder)


def leftover_cpu(run: Callable[[], object]) -> float:
    """The median CPU seconds the process burns while it sleeps just after `run()`: threads
    a library left spinning (BLAS workers, say) take cores from whatever runs next."""
    burnt = []
    for _ in range(3):
        time.sleep(IDLE_SECONDS)  # whatever ran before has gone quiet
        run()
        began = time.process_time()
        time.sleep(IDLE_SECONDS)
        burnt.append(time.process_time() - began)
    return float(median(burnt))


def process_children() -> dict[int, list[int]]:
    """Every process's children, from /proc/<pid>/stat (the parent is field 4)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """The children of `pid`, their children, and so on."""
    children = process_children()
    found, pending = set(), [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (fields 14 and 15 of its stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def status_kib(pid: int) -> dict[str, int]:
    """The sizes in /proc/<pid>/status, in KiB (VmRSS, VmHWM, RssAnon...); empty when the
    process has exited."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # exited meanwhile
        return {}
    sizes = {}
    for line in lines:
        name, _, value = line.partition(":")
        amount = value.split()
        if len(amount) == 2 and amount[1] == "kB":
            sizes[name] = int(amount[0])
    return sizes

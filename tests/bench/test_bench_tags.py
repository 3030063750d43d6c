"""`make bench`'s tag-count benchmark, run tiny so that it cannot rot: a throwaway
catalog per database, each timing read filled in."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.bench.test_bench_service import ROOT

pytestmark = pytest.mark.slow
CELL = r"\d+\.\d\d \(\d+\.\dx\)"


def test_the_tiny_benchmark_times_every_read_at_every_size():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_tags.py"), "--sizes", "100,300",
         "--databases", "sqlite,postgres", "--repeats", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("| sqlite |")]
    assert [line.split("|")[2].strip() for line in lines] == ["100", "300"]
    for line in lines:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")][2:]
        assert len(cells) == 4 and all(re.fullmatch(CELL, cell) for cell in cells), line
    assert "| postgres |" in run.stdout  # measured, or said to be skipped

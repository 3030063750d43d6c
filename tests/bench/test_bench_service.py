"""`make bench`'s end-to-end benchmark, run tiny (bench/bench_service.py --tiny) so that it
cannot rot: the real product (gunicorn, a Celery worker, the import command) and the bare
eager script, with a handful of searches and photos."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"\d+(\.\d+)?"
LATENCY = rf"{NUMBER} / {NUMBER} \(server {NUMBER}\)"
MEMORY = rf"{NUMBER} / {NUMBER} \({NUMBER}\)"
ROWS = {
    "search p50 / p95 ms, 1 client, 100 vectors": LATENCY,
    "search p50 / p95 ms, 4 clients, 100 vectors": LATENCY,
    "search p50 / p95 ms, 1 client, 300 vectors": LATENCY,
    "search p50 / p95 ms, 4 clients, 300 vectors": LATENCY,
    "bare eager script, batch 1, ms (alternated with the 1-client, 100 row)": NUMBER,
    "search speed-up over the bare script (p50, 1 client, 100)": rf"{NUMBER}x",
    "indexing 8 photos of 2 MP, images/s": NUMBER,
    "bare eager script, batch 16, images/s (just before the row above)": NUMBER,
    "indexing speed-up over the bare script": rf"{NUMBER}x",
    "projected time to index 1,000,000 photos of 2 MP at the product's rate": (
        r"\d+ h \d\d min|\d+ min"
    ),
    "RSS MiB web (gunicorn worker), warm / after load (anonymous after load)": MEMORY,
    "RSS MiB Celery worker main, warm / after load (anonymous after load)": MEMORY,
    "RSS MiB Celery pool child, warm / after load (anonymous after load)": MEMORY,
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_service.py"), "--tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )


def table_rows(output: str) -> dict[str, list[str]]:
    """The markdown table's cells by row label."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("| "):
            label, *cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[label] = cells
    return rows


@pytest.mark.timeout(600)
def test_the_tiny_benchmark_runs_without_a_failed_search_or_an_unindexed_photo(tiny_run):
    assert tiny_run.returncode == 0, tiny_run.stderr[-4000:]


@pytest.mark.timeout(600)
def test_every_row_has_a_number_for_the_product_and_the_bare_script(tiny_run):
    rows = table_rows(tiny_run.stdout)
    assert rows["measure"] == ["engine: default", "target"]
    for label, pattern in ROWS.items():
        assert label in rows, f"no row {label!r} in:\n{tiny_run.stdout}"
        assert re.fullmatch(pattern, rows[label][0]), f"{label}: {rows[label]}"
    assert rows["search speed-up over the bare script (p50, 1 client, 100)"][1] == ">= 1.45x"
    assert rows["indexing speed-up over the bare script"][1] == ">= 3.0x"


@pytest.mark.timeout(600)
def test_the_machine_is_named_first(tiny_run):
    first = tiny_run.stdout.splitlines()[0]
    assert first.startswith("Machine: ")
    assert "torch " in first and "onnxruntime " in first

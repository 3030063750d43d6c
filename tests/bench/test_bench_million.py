"""`make bench`'s million-vector benchmark, run tiny (bench/bench_million.py --tiny: 3,000
vectors, the approximate index forced) so that it cannot rot: the store built and compacted,
recall measured against the exact scan, a second process, a merge, and the product over
HTTP at two catalog sizes with a database row per vector."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.bench.test_bench_service import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_million.py"), "--tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def table(run: subprocess.CompletedProcess) -> dict[str, str]:
    rows = {}
    for line in run.stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| measure"):
            measure, value, _target = (cell.strip() for cell in line.strip("|").split("|"))
            rows[measure] = value
    return rows


def test_the_tiny_run_succeeds_and_measures_every_row(tiny_run):
    assert tiny_run.returncode == 0, tiny_run.stderr[-4000:]
    rows = table(tiny_run)
    assert re.fullmatch(r"\d+ s", rows["approximate index build (faiss HNSW32-SQ8, 2 threads)"])
    assert "approximate index" in rows["files on disk"]
    assert rows["an upsert until another process's query returns it"].endswith("ms)")
    http = rows["search over HTTP, p50 at 100 / 3,000 catalog images"]
    assert re.match(r"[\d.]+ / [\d.]+ ms: [\d.]+x", http), http
    assert re.match(
        r"[\d,]+ / [\d,]+ MiB", rows["web process resident memory at 100 / 3,000, private part"]
    )


def test_every_filter_fills_top_k_and_recall_is_measured(tiny_run):
    rows = table(tiny_run)
    recalls = {measure: value for measure, value in rows.items() if "recall@10" in measure}
    assert len(recalls) == 3  # no filter, 1%, 10%
    for measure, value in recalls.items():
        recall, filled = re.fullmatch(r"([\d.]+), (\d+ of \d+)", value).groups()
        assert filled == "20 of 20", measure
        # 3,000 vectors: the index finds nearly all of the exact answers.
        assert float(recall) >= 0.9, measure

"""`make bench`'s catalog sync benchmark, run tiny (bench/bench_sync.py --tiny) so that it
cannot rot: a feed synced, synced again with nothing downloaded, and new rows synced to
indexed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.test_bench_service import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_sync.py"), "--tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def row(run: subprocess.CompletedProcess, sync: str) -> dict[str, str]:
    """One sync's row of the table, by column heading."""
    table = [line for line in run.stdout.splitlines() if line.startswith("|")]
    [line] = [line for line in table if line.startswith(f"| {sync} |")]
    return dict(zip(cells(table[0]), cells(line), strict=True))


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_the_tiny_benchmark_succeeds(tiny_run):
    assert tiny_run.returncode == 0, tiny_run.stderr[-4000:]
    assert "ERROR" not in tiny_run.stderr


def test_the_resync_downloads_no_picture_byte(tiny_run):
    resync = row(tiny_run, "re-sync, pictures unchanged")
    assert resync["rows"] == "200"
    assert resync["picture answers"] == "304: 200"
    assert resync["picture bytes downloaded"] == "0 bytes"


def test_every_row_of_the_first_sync_to_indexed_is_indexed(tiny_run):
    assert row(tiny_run, "first sync, new rows, to indexed (indexing inline)")["rows"] == "20"
    assert "images indexed 20; 20 vectors in the store." in tiny_run.stdout

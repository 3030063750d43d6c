"""`make bench` records each benchmark's output in docs/benchmarks.md, between that
benchmark's markers, and only when the benchmark succeeded (bench/record_in_docs.py)."""

from __future__ import annotations

import re
import sys

import pytest

from bench import record_in_docs
from tests.bench.test_bench_service import ROOT

DOCUMENT = """# Benchmarks

Prose before.

<!-- bench:service:start -->

An old table.

<!-- bench:service:end -->

Prose between.

<!-- bench:tags:start -->

Another old table.

<!-- bench:tags:end -->
"""
OUTPUT = "Machine: test box\n| measure | value |\n| --- | --- |\n| search | 12.0 |\nLoad: 0.5\n"


@pytest.fixture
def docs(tmp_path, monkeypatch):
    path = tmp_path / "benchmarks.md"
    path.write_text(DOCUMENT)
    monkeypatch.setattr(record_in_docs, "DOCS", path)
    return path


def test_a_run_replaces_its_own_block_and_nothing_else():
    document = record_in_docs.recorded(DOCUMENT, "service", OUTPUT, "2026-12-06")
    assert "An old table." not in document
    assert document.replace(record_in_docs.block(OUTPUT, "2026-12-06"), "An old table.") == DOCUMENT
    assert record_in_docs.block(OUTPUT, "2026-12-06") == (
        "Recorded by `make bench` on 2026-12-06.\n\n"
        "| measure | value |\n| --- | --- |\n| search | 12.0 |\n\n"
        "```text\nMachine: test box\nLoad: 0.5\n```"
    )


def test_a_successful_benchmark_is_shown_and_recorded(docs, capsys):
    command = [sys.executable, "-c", f"print({OUTPUT!r}, end='')"]
    assert record_in_docs.main(["tags", *command]) == 0
    assert capsys.readouterr().out == OUTPUT
    assert "| search | 12.0 |" in docs.read_text()
    assert "Another old table." not in docs.read_text()
    assert "An old table." in docs.read_text()


def test_a_failed_benchmark_leaves_the_document_as_it_was(docs):
    command = [sys.executable, "-c", "print('| half | a table |'); raise SystemExit(3)"]
    assert record_in_docs.main(["service", *command]) == 3
    assert docs.read_text() == DOCUMENT


def test_a_benchmark_without_its_markers_is_not_run(docs, tmp_path):
    ran = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(ran)!r}, 'w')"]
    assert record_in_docs.main(["vectorstore", *command]) == 2
    assert not ran.exists()
    assert docs.read_text() == DOCUMENT


def test_markers_out_of_order_are_refused():
    swapped = "<!-- bench:service:end -->\n<!-- bench:service:start -->\n"
    with pytest.raises(record_in_docs.MarkersMissing):
        record_in_docs.recorded(swapped, "service", OUTPUT, "2026-12-06")


def test_every_benchmark_make_bench_records_has_its_block_in_the_docs():
    names = re.findall(r"^\t\$\(RECORD\) ([a-z-]+) ", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert len(names) == 7  # vectorstore, exact-scoring, embedding, service, tags, sync, million
    document = (ROOT / "docs" / "benchmarks.md").read_text()
    for name in names:
        record_in_docs.recorded(document, name, OUTPUT, "2026-12-06")  # raises if missing

"""Run one benchmark, show its output, and record it in docs/benchmarks.md.

    python bench/record_in_docs.py service python bench/bench_service.py [its arguments]

What the command prints on stdout replaces what docs/benchmarks.md holds between
`<!-- bench:service:start -->` and `<!-- bench:service:end -->`: its markdown table lines
as a table, its other lines in a text block beneath, under the day of the run. `make bench`
records each benchmark this way, so the tables are never pasted by hand.

Nothing is written when the command fails, or when the markers are not there exactly once
each, in that order (checked before the benchmark starts too): a broken run never erases
the last good one. The exit status is the command's, or 2 for missing markers.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


class MarkersMissing(Exception):
    pass


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def block(output: str, day: str) -> str:
    """The markdown that records one run's stdout."""
    lines = output.splitlines()
    table = [line for line in lines if line.startswith("|")]
    other = "\n".join(line for line in lines if not line.startswith("|")).strip("\n")
    parts = [f"Recorded by `make bench` on {day}."]
    if table:
        parts.append("\n".join(table))
    if other:
        parts.append(f"```text\n{other}\n```")
    return "\n\n".join(parts)


def recorded(document: str, name: str, output: str, day: str) -> str:
    """`document` with the block between `name`'s markers replaced by this run's."""
    start, end = markers(name)
    if document.count(start) != 1 or document.count(end) != 1:
        raise MarkersMissing(f"{DOCS.name} needs {start} and {end}, once each")
    head, rest = document.split(start)
    if end not in rest:
        raise MarkersMissing(f"{DOCS.name}: {end} comes before {start}")
    tail = rest.split(end)[1]
    return f"{head}{start}\n\n{block(output, day)}\n\n{end}{tail}"


def write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.chmod(temporary, path.stat().st_mode & 0o777)  # mkstemp's file is 0600
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    name, command = argv[0], argv[1:]
    day = datetime.date.today().isoformat()
    try:
        recorded(DOCS.read_text(), name, "", day)
    except MarkersMissing as error:
        print(f"record_in_docs: {error}", file=sys.stderr)
        return 2
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    captured = []
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        captured.append(line)
    status = process.wait()
    if status != 0:
        print(f"record_in_docs: {name} failed; {DOCS.name} left as it was", file=sys.stderr)
        return status
    try:
        # Read again: the document may have been edited during a run of minutes.
        write_atomically(DOCS, recorded(DOCS.read_text(), name, "".join(captured), day))
    except MarkersMissing as error:
        print(f"record_in_docs: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

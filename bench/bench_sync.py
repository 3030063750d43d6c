"""Catalog sync at feed scale: a re-sync whose pictures did not change, and a first sync to indexed.

    python bench/bench_sync.py                                # 10,000 rows, then 1,000 indexed
    python bench/bench_sync.py --rows 2000 --indexed-rows 100
    python bench/bench_sync.py --tiny                         # 200 and 20 rows, a quick check

The feed's pictures (distinct 160x120 PNGs drawn from the seed) come from a web server on
127.0.0.1 in this process (bench/picture_server.py) that gives each an ETag, answers 304
to a request that names it, and counts its answers and the picture bytes it sends. Each
sync runs `catalog.sync.catalog_sync` (what `manage.py sync_catalog` runs) in a child
process of its own, with a temporary VAR_DIR and SQLite database, the in-memory broker,
random weights and `make run`'s other defaults (SYNC_FETCH_CONCURRENCY 4, local image
host and vector store); the clock covers the sync only, not Django's start.

- Re-sync (the issue's target: 10,000 rows in under 60 s on 2 cores, no picture
  downloaded): a CSV feed of --rows items, one URL picture each, is synced once into an
  empty catalog with no worker (the broker holds the indexing tasks: "stored, not
  embedded", timed too), then synced again in a fresh process, as cron would.
- First sync to indexed: --indexed-rows new items into another empty catalog, with
  CELERY_TASK_ALWAYS_EAGER: the indexing tasks the sync queues (a batch of INDEX_BATCH_SIZE
  rows at a time, as a worker would get them) run inside the sync's process, so the time
  runs until every picture is embedded, published and in the vector store. The model is loaded
  before the clock starts, as in a warm worker.

The run fails (exit 1) when a sync fails a row, the re-sync downloads a picture byte or
changes a row, or a row is not indexed at the end; missing the time target is reported,
not a failure. The table goes to stdout (markdown), progress to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    MODEL_CACHE_DIR,
    add_seed_option,
    scratch_folder,
    script_parser,
)

TARGET_ROWS, TARGET_SECONDS = 10_000, 60.0
TINY_ROWS, TINY_INDEXED_ROWS = 200, 20
TAGS = ["kitchen", "garden", "blue", "red", "sale", "new", "wood", "steel"]
PROGRESS_STEPS = 10  # progress lines per sync


def main() -> int:
    args = parse_args()
    if args.child:
        return run_child(args)
    print(machine_line(), flush=True)
    with scratch_folder("sync") as scratch:
        progress(f"drawing {args.rows + args.indexed_rows:,} pictures")
        files = pictures(args)
        from bench.picture_server import PictureServer

        with PictureServer(files) as server:
            results = run_syncs(args, scratch, server)
    print(table(args, results))
    print(notes(args, results))
    errors = check(args, results)
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    return 1 if errors else 0


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="rows of the re-synced feed")
    parser.add_argument(
        "--indexed-rows", type=int, default=1_000, help="new rows synced to indexed"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=f"{TINY_ROWS} and {TINY_INDEXED_ROWS} rows, a quick check",
    )
    add_seed_option(parser)
    # In the child: which sync, of which feed.
    parser.add_argument("--child", choices=("store", "resync", "indexed"), help=argparse.SUPPRESS)
    parser.add_argument("--feed", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.rows, args.indexed_rows = TINY_ROWS, TINY_INDEXED_ROWS
    if args.rows < 1 or args.indexed_rows < 1:
        parser.error("--rows and --indexed-rows take a positive number")
    return args


def pictures(args: argparse.Namespace) -> dict[str, bytes]:
    """Every picture of both feeds, by path: /a/N.png for the re-synced feed, /b/N.png for
    the indexed one; drawn before any clock starts."""
    from bench.picture_server import picture

    files = {f"/a/{n}.png": picture(n, args.seed) for n in range(args.rows)}
    offset = args.rows  # /b pictures differ from /a ones
    for n in range(args.indexed_rows):
        files[f"/b/{n}.png"] = picture(offset + n, args.seed)
    return files


def write_feed(path: Path, server, folder: str, rows: int) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["external_id", "image", "title", "tags", "link_url", "metadata.price"])
        for n in range(rows):
            writer.writerow(
                [
                    f"{folder}-{n:06d}",
                    server.url(f"/{folder}/{n}.png"),
                    f"Item {n}",
                    ", ".join(TAGS[(n + k) % len(TAGS)] for k in range(n % 3)),
                    f"https://shop.example/{folder}/{n}",
                    f"{n % 100}.50",
                ]
            )
    return path


def run_syncs(args: argparse.Namespace, scratch: Path, server) -> dict[str, dict]:
    feed = write_feed(scratch / "feed-a.csv", server, "a", args.rows)
    catalog = scratch / "catalog-a"
    results = {}
    for phase in ("store", "resync"):
        results[phase] = run_child_process(phase, feed, catalog, args)
        results[phase]["answers"], results[phase]["body_bytes"] = server.take_counts()
    feed = write_feed(scratch / "feed-b.csv", server, "b", args.indexed_rows)
    results["indexed"] = run_child_process("indexed", feed, scratch / "catalog-b", args)
    results["indexed"]["answers"], results["indexed"]["body_bytes"] = server.take_counts()
    return results


def run_child_process(phase: str, feed: Path, var_dir: Path, args: argparse.Namespace) -> dict:
    from bench.service_process import settings_names

    var_dir.mkdir(exist_ok=True)
    # `make run`'s defaults: the variables .env.example lists are left out, as bench_service does.
    env = {name: value for name, value in os.environ.items() if name not in settings_names()}
    env.update(
        DJANGO_SETTINGS_MODULE="visualsearch.settings",
        DATABASE_URL=f"sqlite:///{var_dir}/bench.sqlite3",
        VAR_DIR=str(var_dir),
        EMBEDDING_WEIGHTS="random",  # same arithmetic as ImageNet weights, no download
        EMBEDDING_CACHE_DIR=str(MODEL_CACHE_DIR),  # the exported model survives between runs
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER="true" if phase == "indexed" else "false",
    )
    command = [sys.executable, __file__, "--child", phase, "--feed", str(feed)]
    progress(f"{phase}: starting")
    finished = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if finished.returncode != 0:
        raise SystemExit(f"the {phase} sync exited {finished.returncode}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def run_child(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from catalog.sync import catalog_sync

    call_command("migrate", verbosity=0)
    # Eager tasks log a line each; progress lines say enough.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    # The picture server is on 127.0.0.1 on a port the system picked: allowed here only,
    # in-process, never through the environment.
    settings.URL_FETCH_ALLOW_LOOPBACK = True
    settings.URL_FETCH_PORTS = None
    if args.child == "indexed":
        warm_model()

    done = total = 0

    def on_start(feed) -> None:
        nonlocal total
        total = len(feed.rows)

    def on_row(_row) -> None:
        nonlocal done
        done += 1
        if done % max(1, total // PROGRESS_STEPS) == 0 or done == total:
            elapsed = time.perf_counter() - began
            progress(f"{args.child}: {done:,}/{total:,} rows, {elapsed:.1f} s")

    cpu_began, began = time.process_time(), time.perf_counter()
    report = catalog_sync(source=args.feed, on_start=on_start, on_row=on_row)
    seconds = time.perf_counter() - began
    result = {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_began,
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "failed": report.failed,
        "new_pictures": report.new_pictures,
        "downloaded_bytes": report.downloaded_bytes,
        "failures": [f"line {f.line}: {f.code}: {f.detail}" for f in report.failures[:5]],
        "fetch_threads": settings.SYNC_FETCH_CONCURRENCY,
    }
    if args.child == "indexed":
        result["statuses"] = image_statuses()
        result["vectors"] = vector_count()
    print(json.dumps(result))
    return 0


def warm_model() -> None:
    """Load the model (exporting it to ONNX on a machine that never did) and run it once."""
    from PIL import Image

    from search.embedding import get_encoder

    progress("indexed: loading the model")
    get_encoder().embed_one(Image.new("RGB", (224, 224), (120, 80, 40)))


def image_statuses() -> dict[str, int]:
    from django.db.models import Count

    from catalog.models import CatalogImage

    rows = CatalogImage.objects.values_list("status").annotate(count=Count("id"))
    return {str(status): count for status, count in rows}


def vector_count() -> int:
    from search.vectorstores import get_vector_store

    return get_vector_store().count()


def table(args: argparse.Namespace, results: dict[str, dict]) -> str:
    store, resync, indexed = results["store"], results["resync"], results["indexed"]
    met = "met" if resync["seconds"] < TARGET_SECONDS else "missed"
    target = f"< {TARGET_SECONDS:.0f} s for {TARGET_ROWS:,} rows on 2 cores: " + (
        met if args.rows >= TARGET_ROWS else f"not measured ({args.rows:,} rows)"
    )
    lines = [
        "",
        "| sync | rows | seconds | rows/s | CPU s (sync process) | picture answers | "
        "picture bytes downloaded | target |",
        "|---|---:|---:|---:|---:|---|---:|---|",
        row("first sync, new rows, stored, not embedded (no worker)", store),
        row("re-sync, pictures unchanged", resync, target),
        row("first sync, new rows, to indexed (indexing inline)", indexed),
    ]
    return "\n".join(lines)


def row(name: str, result: dict, target: str = "") -> str:
    answers = ", ".join(f"{status}: {count:,}" for status, count in result["answers"].items())
    cells = [
        name,
        f"{result['rows']:,}",
        f"{result['seconds']:.1f}",
        f"{result['rows'] / result['seconds']:,.0f}",
        f"{result['cpu_seconds']:.1f}",
        answers or "none",
        size(result["body_bytes"]),
        target,
    ]
    return "| " + " | ".join(cells) + " |"


def notes(args: argparse.Namespace, results: dict[str, dict]) -> str:
    resync, indexed = results["resync"], results["indexed"]
    statuses = ", ".join(f"{name} {count:,}" for name, count in indexed["statuses"].items())
    return "\n".join(
        [
            "",
            f"Re-sync: {resync['unchanged']:,} of {resync['rows']:,} rows unchanged, "
            f"{resync['updated']:,} updated, {resync['failed']:,} failed; "
            f"pictures fetched {resync['fetch_threads']} at a time (SYNC_FETCH_CONCURRENCY).",
            f"To indexed: images {statuses}; {indexed['vectors']:,} vectors in the store. "
            "Indexing ran inline in the sync's own process (CELERY_TASK_ALWAYS_EAGER, a task "
            "per INDEX_BATCH_SIZE rows, as the sync queues them), not in a worker: on 2 cores "
            "that is the same CPU.",
            f"SQLite, local image host and vector store, random weights; seed {args.seed}; "
            f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}",
        ]
    )


def check(args: argparse.Namespace, results: dict[str, dict]) -> list[str]:
    store, resync, indexed = results["store"], results["resync"], results["indexed"]
    errors = []
    for phase, result in results.items():
        if result["failed"]:
            errors.append(f"{phase}: {result['failed']} row(s) failed: {result['failures']}")
    if store["created"] != args.rows:
        errors.append(f"store: created {store['created']} of {args.rows} rows")
    if resync["unchanged"] != args.rows:
        errors.append(f"resync: {resync['unchanged']} of {args.rows} rows unchanged")
    if resync["body_bytes"] or resync["downloaded_bytes"]:
        errors.append(
            f"resync: {resync['body_bytes']} picture bytes sent by the server, "
            f"{resync['downloaded_bytes']} counted by the sync; expected none"
        )
    if resync["answers"] != {304: args.rows}:
        errors.append(f"resync: the server answered {resync['answers']}, not 304 to every row")
    indexed_count = indexed["statuses"].get("indexed", 0)
    if indexed_count != args.indexed_rows or indexed["vectors"] != args.indexed_rows:
        errors.append(
            f"indexed: {indexed_count} images indexed and {indexed['vectors']} vectors, "
            f"of {args.indexed_rows} rows ({indexed['statuses']})"
        )
    return errors


def machine_line() -> str:
    from search.embedding.cpu_features import cpu_description

    return (
        f"Machine: {cpu_description()}, "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable; "
        f"Python {platform.python_version()}; "
        f"load average (1 min) at the start: {os.getloadavg()[0]:.2f}"
    )


def size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1_048_576:
        return f"{count / 1024:.1f} KB"
    return f"{count / 1_048_576:.1f} MB"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

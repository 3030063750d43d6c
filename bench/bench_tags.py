"""What the tag counts cost the search page as the catalog grows, on SQLite and PostgreSQL.

    python bench/bench_tags.py                  # 1k, 10k, 100k images, both databases (~2 min)
    python bench/bench_tags.py --sizes 100,300 --databases sqlite --repeats 3   # a quick check

Every view of the search page (GET /) and GET /api/tags/ ask for
`catalog.selectors.searchable_tag_counts()`; the page asks for `searchable_image_count()`
too. For each database this fills a throwaway catalog (a temporary SQLite file; a
temporary PostgreSQL database on --postgres, created and dropped here, skipped when no
server answers) to 1,000, 10,000 and 100,000 rows with `bulk_create`: 200 distinct tags,
each image 0-5 of them drawn from a Zipf-like distribution (a few tags are everywhere,
most are rare), 90% of images active and indexed. At each size it times, as medians:

- `searchable_tag_counts()` read again and again (what most page views pay);
- the same right after a curator's tag edit (`services.image_update`): the first read
  after the catalog changed, which counts from the rows (what every read paid before the
  counts were cached, catalog.searchable_counts);
- GET / through Django's test client, steady and right after a tag edit.

Each database runs in its own process (Django's settings are read once per process). The
table (stdout, markdown) shows milliseconds on this machine and each size's ratio to the
smallest catalog; compare within one run only. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_seed_option, scratch_folder, script_parser  # noqa: E402

TAGS = [f"tag{rank:03d}" for rank in range(1, 201)]
ZIPF_EXPONENT = 1.1  # tag k (by rank) is drawn 1/k^1.1 as often as the most common one
SEARCHABLE_SHARE = 0.9  # of images active and indexed; the rest failed or were hidden
COLUMNS = ("counts", "counts_after_edit", "page", "page_after_edit")


def main() -> int:
    args = parse_args()
    if args.child:
        return run_child(args)
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}")
    results = {}
    for database in args.databases:
        progress(f"{database}: starting")
        results[database] = run_database(database, args)
    print(table(args.sizes, results))
    print(f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000", type=sizes)
    parser.add_argument("--databases", default="sqlite,postgres", type=lambda s: s.split(","))
    parser.add_argument("--repeats", type=int, default=15, help="timed reads per median")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"),
        help="server to create the temporary database on",
    )
    add_seed_option(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # DATABASE_URL, in the child
    return parser.parse_args()


def sizes(text: str) -> list[int]:
    return sorted(int(part) for part in text.split(","))


def run_database(database: str, args: argparse.Namespace) -> dict | None:
    """Run the measurements in a child process on a throwaway database of that kind;
    None when no PostgreSQL server answers."""
    with scratch_folder("tags") as var_dir:
        if database == "sqlite":
            return run_child_process(f"sqlite:///{var_dir}/bench.sqlite3", var_dir, args)
        name = f"bench_tags_{os.getpid()}"
        import psycopg

        try:
            admin = psycopg.connect(f"{args.postgres.rstrip('/')}/postgres", autocommit=True)
        except psycopg.OperationalError as exc:
            progress(f"postgres: skipped, {exc}")
            return None
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            return run_child_process(f"{args.postgres.rstrip('/')}/{name}", var_dir, args)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


def run_child_process(database_url: str, var_dir: Path, args: argparse.Namespace) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "visualsearch.settings",
        "DATABASE_URL": database_url,
        "VAR_DIR": str(var_dir),
        "EMBEDDING_WEIGHTS": "random",
        "CELERY_BROKER_URL": "memory://",
    }
    env.pop("CACHE_URL", None)  # per-process memory, as `make run` has it
    command = [
        sys.executable,
        __file__,
        "--child",
        database_url,
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
    ]
    finished = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def run_child(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host, as in tests
    call_command("migrate", verbosity=0)
    rng = random.Random(args.seed)
    rows: dict[str, dict] = {}
    filled = 0
    for size in args.sizes:
        progress(f"  filling to {size:,} images")
        fill(rng, filled, size)
        filled = size
        rows[str(size)] = measure(rng, args.repeats)
        progress(f"  {size:,}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in rows[str(size)].items()))
    print(json.dumps(rows))
    return 0


def fill(rng: random.Random, start: int, stop: int) -> None:
    from catalog.models import CatalogImage

    weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, len(TAGS) + 1)]
    Status = CatalogImage.Status
    batch = []
    for number in range(start, stop):
        searchable = rng.random() < SEARCHABLE_SHARE
        # Of the rest, half indexed but hidden by a curator, half failed and still active.
        status = Status.INDEXED if searchable or rng.random() < 0.5 else Status.FAILED
        batch.append(
            CatalogImage(
                sha256=f"{number:064x}",
                title=f"image {number}",
                tags=sorted(set(rng.choices(TAGS, weights, k=rng.randint(0, 5)))),
                status=status,
                is_active=searchable or status == Status.FAILED,
            )
        )
    CatalogImage.objects.bulk_create(batch, batch_size=2000)


def measure(rng: random.Random, repeats: int) -> dict[str, float]:
    from django.test import Client

    from catalog import selectors, services
    from catalog.models import CatalogImage

    client = Client()
    searchable = CatalogImage.objects.filter(is_active=True, status=CatalogImage.Status.INDEXED)
    edited = list(searchable.order_by("?")[: max(2, repeats)])  # one per edit below

    def page() -> None:
        response = client.get("/")
        if response.status_code != 200:
            raise SystemExit(f"GET / answered {response.status_code}")

    def edit() -> None:  # a curator's tag edit, committed (autocommit): what changes counts
        image = edited.pop() if edited else searchable.first()
        services.image_update(image=image, tags=[*image.tags, rng.choice(TAGS)])

    selectors.searchable_tag_counts()  # the first read of a process is nobody's steady state
    page()
    return {
        "counts": median_ms(selectors.searchable_tag_counts, repeats),
        "counts_after_edit": median_ms(selectors.searchable_tag_counts, repeats // 2, edit),
        "page": median_ms(page, repeats),
        "page_after_edit": median_ms(page, repeats // 2, edit),
    }


def median_ms(
    run: Callable[[], object], repeats: int, before: Callable[[], object] | None = None
) -> float:
    """Median milliseconds of `run()`, with `before()` (untimed) ahead of each call."""
    seconds = []
    for _ in range(max(1, repeats)):
        if before:
            before()
        began = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds) * 1e3


def table(sizes: list[int], results: dict[str, dict | None]) -> str:
    heads = {
        "counts": "`searchable_tag_counts()`",
        "counts_after_edit": "same, first read after a tag edit",
        "page": "GET /",
        "page_after_edit": "GET /, first after a tag edit",
    }
    lines = [
        "",
        f"Median ms (and the ratio to the {sizes[0]:,}-image catalog) on this machine, "
        f"{len(TAGS)} tags, Zipf-like, {SEARCHABLE_SHARE:.0%} searchable",
        "",
        "| database | images | " + " | ".join(heads[c] for c in COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for database, rows in results.items():
        if rows is None:
            lines.append(f"| {database} | - | skipped: no server answered |" + " |" * 3)
            continue
        first = rows[str(sizes[0])]
        for size in sizes:
            row = rows[str(size)]
            cells = [f"{row[c]:.2f} ({row[c] / first[c]:.1f}x)" for c in COLUMNS]
            lines.append(f"| {database} | {size:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end speed of the product against a bare torchvision script, in one run.

    python bench/bench_service.py                 # torch pass, then onnx pass (~2 min, 2 cores)
    python bench/bench_service.py --tiny          # a quick check that it still works (tests)
    python bench/bench_service.py --engines onnx --set EMBEDDING_THREADS=2
    python bench/bench_service.py --engines onnx-int8   # ONNX with EMBEDDING_PRECISION=int8

Each engine pass starts the product as `make run` does (bench/service_process.py), in a
temporary VAR_DIR on a free port, with `make run`'s defaults except random weights, no rate
limit and a persistent model cache (--cache-dir). It then measures:

- indexing: `manage.py import_images DIR --wait` on 2-megapixel photos, images/s from the
  command's start to its end (every photo indexed by the real worker), and the time that
  rate projects for a catalog of 1,000,000 such photos on this machine;
- search: `POST /api/search/` with a 1-megapixel JPEG as the page sends it (a data: URL),
  p50 / p95 over HTTP (and the server's own `took_ms` p50) with 1 and 4 concurrent
  clients, at each catalog size; synthetic vectors are upserted into the running server's
  local store. The torch and int8 passes measure the smallest size only: the store's cost
  does not depend on the engine;
- resident memory of the web process (the gunicorn worker) and of the Celery worker's
  main and pool processes, once warm and again after the load.

The bare script (bench/eager_baseline.py) runs in its own process beside them, on the same
JPEG and photos. Its indexing run comes just before each pass's import, and its batch-1
calls alternate with the 1-client searches on the smallest catalog, so that each ratio
compares two measurements made under the same load: the machine may be shared.

The table (stdout, markdown) puts every ratio next to its target (search: issue #10;
indexing: issue #19); progress goes to stderr. The exit status is 1 when any request
failed, any photo was not indexed, or a service did not start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import MODEL_CACHE_DIR, scratch_folder, script_parser  # noqa: E402
from bench.eager_baseline import EagerBaseline  # noqa: E402
from bench.service_process import ProcessMemory, RunningService, ServiceFailed  # noqa: E402
from bench.workload import (  # noqa: E402
    VECTOR_DIMENSION,
    fill_store,
    query_jpeg,
    search_body,
    write_index_photos,
)
from search.vectorstores.local import LocalVectorStore  # noqa: E402

SEARCH_TARGET = 1.45  # issue #10: search p50 at least 1.45x faster than the bare script
INDEX_TARGET = 3.0  # issue #19: indexing end to end at least 3x its batch-16 rate
PROJECTED_PHOTOS = 1_000_000  # issue #19: how long a catalog of this many photos takes
# An engine pass named `<engine>-int8` runs that engine with EMBEDDING_PRECISION=int8.
INT8_SUFFIX = "-int8"


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]  # catalog vectors searched, in order
    photos: int  # indexed through the worker
    rounds: int  # of 1-client searches alternated with the bare script's calls
    one_client_searches: int  # per round
    eager_searches: int  # per round
    four_client_searches: int  # per client


FULL = Plan(sizes=(1_000, 10_000, 100_000), photos=200, rounds=4, one_client_searches=10,
            eager_searches=6, four_client_searches=15)  # fmt: skip
TINY = Plan(sizes=(100, 300), photos=8, rounds=1, one_client_searches=5, eager_searches=3,
            four_client_searches=2)  # fmt: skip


@dataclass
class Latencies:
    p50: float  # milliseconds over HTTP, as the client sees them
    p95: float
    server_p50: float  # the server's own took_ms: decode, embed, look up


@dataclass
class EnginePass:
    engine: str
    index_rate: float | None = None
    eager_index_rate: float | None = None  # measured just before the import
    eager_search_ms: float | None = None  # alternated with the 1-client searches
    searches: dict[tuple[int, int], Latencies] = field(default_factory=dict)
    memory_warm: ProcessMemory | None = None
    memory_loaded: ProcessMemory | None = None
    errors: list[str] = field(default_factory=list)


def main() -> int:
    args = parse_args()
    plan = TINY if args.tiny else FULL
    print(machine_line(), flush=True)
    with scratch_folder("service") as scratch:
        jpeg = query_jpeg()
        (scratch / "query.jpg").write_bytes(jpeg)
        progress(f"writing {plan.photos} photos of 2 MP; starting the bare eager script")
        write_index_photos(scratch / "photos", plan.photos)
        eager = EagerBaseline(scratch / "query.jpg", scratch / "photos")
        exported_now = not any(args.cache_dir.glob("*.onnx"))
        try:
            body = search_body(jpeg)
            passes = [run_pass(engine, plan, scratch, body, eager, args) for engine in args.engines]
        finally:
            eager.close()
    print(table(plan, passes))
    print(f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    if exported_now and any(p.engine != "torch" for p in passes):
        print(
            f"Note: {args.cache_dir} held no exported model, so this run exported it, and the "
            "process that did holds torch: run again for steady-state memory figures."
        )
    errors = [f"{p.engine}: {error}" for p in passes for error in p.errors]
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    return 1 if errors else 0


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--tiny", action="store_true", help="100/300 vectors, 8 photos, one pass")
    parser.add_argument(
        "--engines",
        help="comma-separated EMBEDDING_ENGINE passes; 'default' leaves it unset, "
        f"'onnx{INT8_SUFFIX}' is onnx with EMBEDDING_PRECISION=int8 "
        "(default: torch,onnx; with --tiny: default)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=MODEL_CACHE_DIR,
        help="EMBEDDING_CACHE_DIR, kept between runs so the model is exported once",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another setting for the services (e.g. EMBEDDING_THREADS=2)",
    )
    args = parser.parse_args()
    args.engines = (args.engines or ("default" if args.tiny else "torch,onnx")).split(",")
    pairs = [item.partition("=") for item in args.overrides]
    if any(not sep or not name for name, sep, _ in pairs):
        parser.error("--set takes NAME=VALUE")
    args.overrides = {name: value for name, _, value in pairs}
    return args


def machine_line() -> str:
    cpu, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and cpu == "unknown CPU":
            cpu = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    isa = [name for name in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if name in flags]
    return (
        f"Machine: {cpu}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable "
        f"({', '.join(isa) or 'no AVX'}); Python {platform.python_version()}, "
        f"torch {version('torch')}, torchvision {version('torchvision')}, "
        f"onnxruntime {version('onnxruntime')}; "
        f"load average (1 min) at the start: {os.getloadavg()[0]:.2f}"
    )


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_pass(
    engine: str,
    plan: Plan,
    scratch: Path,
    body: bytes,
    eager: EagerBaseline,
    args: argparse.Namespace,
) -> EnginePass:
    result = EnginePass(engine)
    var_dir = scratch / f"var-{engine}"
    sizes = plan.sizes[:1] if engine == "torch" or engine.endswith(INT8_SUFFIX) else plan.sizes
    overrides = args.overrides
    if engine.endswith(INT8_SUFFIX):
        overrides = {**overrides, "EMBEDDING_PRECISION": "int8"}
    service = RunningService(
        var_dir,
        engine=engine.removesuffix(INT8_SUFFIX),
        cache_dir=args.cache_dir,
        overrides=overrides,
    )
    try:
        progress(f"{engine}: starting the service on port {service.port} ({var_dir})")
        with service:
            service.wait_until_ready(body)
            service.wait_until_idle()
            result.memory_warm = service.memory()
            progress(f"{engine}: indexing {plan.photos} photos, bare script then the worker")
            result.eager_index_rate = eager.index_rate()
            result.index_rate = index_photos(service, scratch / "photos", plan.photos)
            store = LocalVectorStore(var_dir / "vectors", dimension=VECTOR_DIMENSION)
            for size in sizes:
                fill_store(store, size)
                progress(f"{engine}: searching {store.count():,} vectors")
                first = size == sizes[0]
                search_catalog(service.port, body, size, eager if first else None, plan, result)
            result.memory_loaded = service.memory()
    except (ServiceFailed, subprocess.TimeoutExpired, OSError) as exc:
        result.errors.append(f"{exc}\n{service.log_tail()}")
    return result


def search_catalog(
    port: int, body: bytes, size: int, eager: EagerBaseline | None, plan: Plan, result: EnginePass
) -> None:
    """The 1- and 4-client rows at one catalog size; with `eager`, the 1-client searches
    alternate with the bare script's calls."""
    # Not counted: the server's processes reload the store's index.
    result.errors += searches(port, body, 1, 1).errors
    if eager is not None:
        one, result.eager_search_ms = alternated(port, body, eager, plan)
    else:
        one = searches(port, body, 1, plan.one_client_searches * plan.rounds)
    four = searches(port, body, 4, plan.four_client_searches)
    result.searches[size, 1], result.searches[size, 4] = percentiles(one), percentiles(four)
    result.errors += one.errors + four.errors


def index_photos(service: RunningService, folder: Path, expected: int) -> float:
    """Images/s of `import_images --wait` from start to every photo settled; raises
    ServiceFailed when any photo was refused, failed or never indexed."""
    started = time.perf_counter()
    output = service.manage("import_images", str(folder), "--wait", "--timeout", "900")
    elapsed = time.perf_counter() - started
    if f"{expected} indexed" not in output:
        raise ServiceFailed(f"Expected {expected} photos indexed; import_images said: {output}")
    return expected / elapsed


@dataclass
class Timings:
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def alternated(port: int, body: bytes, eager: EagerBaseline, plan: Plan) -> tuple[Timings, float]:
    """1-client searches and the bare script's batch-1 calls, in alternate rounds; returns
    the searches' timings and the bare script's median milliseconds."""
    timings, bare = Timings(), []
    for _ in range(plan.rounds):
        bare += eager.search(plan.eager_searches)
        time.sleep(0.5)  # the bare script's idle math threads stop spinning
        more = searches(port, body, 1, plan.one_client_searches)
        timings.client_ms += more.client_ms
        timings.server_ms += more.server_ms
        timings.errors += more.errors
    return timings, statistics.median(bare)


def searches(port: int, body: bytes, clients: int, each: int) -> Timings:
    """Timings of `clients` threads sending `each` searches one after another, each on its
    own keep-alive connection; failed searches are listed in its errors."""
    timings = Timings()
    start_together = threading.Barrier(clients)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start_together.wait()
        for _ in range(each):
            started = time.perf_counter()
            try:
                connection.request(
                    "POST", "/api/search/", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                timings.errors.append(f"search failed: {exc!r}")
                connection.close()
                continue
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                timings.errors.append(f"search answered {response.status}: {answer[:200]!r}")
                continue
            timings.client_ms.append(elapsed)
            timings.server_ms.append(json.loads(answer)["took_ms"])
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


def percentiles(timings: Timings) -> Latencies | None:
    if not timings.client_ms:
        return None
    ordered = sorted(timings.client_ms)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
    return Latencies(statistics.median(ordered), p95, statistics.median(timings.server_ms))


def table(plan: Plan, passes: list[EnginePass]) -> str:
    """One markdown table: a column per engine pass, then the targets."""
    rows = []
    for size in plan.sizes:
        for clients in (1, 4):
            label = f"search p50 / p95 ms, {clients} client{'s' * (clients > 1)}, {size:,} vectors"
            rows.append([label, *(_latency(p.searches.get((size, clients))) for p in passes), ""])
    smallest = plan.sizes[0]
    rows += [
        [f"bare eager script, batch 1, ms (alternated with the 1-client, {smallest:,} row)"]
        + [_number(p.eager_search_ms) for p in passes]
        + [""],
        [f"search speed-up over the bare script (p50, 1 client, {smallest:,})"]
        + [_ratio(p.eager_search_ms, _p50(p.searches.get((smallest, 1)))) for p in passes]
        + [f">= {SEARCH_TARGET}x"],
        [f"indexing {plan.photos} photos of 2 MP, images/s"]
        + [_number(p.index_rate) for p in passes]
        + [""],
        ["bare eager script, batch 16, images/s (just before the row above)"]
        + [_number(p.eager_index_rate) for p in passes]
        + [""],
        ["indexing speed-up over the bare script"]
        + [_ratio(p.index_rate, p.eager_index_rate) for p in passes]
        + [f">= {INDEX_TARGET}x"],
        [f"projected time to index {PROJECTED_PHOTOS:,} photos of 2 MP at the product's rate"]
        + [_duration(PROJECTED_PHOTOS / p.index_rate if p.index_rate else None) for p in passes]
        + [""],
    ]
    for label, read in (
        ("web (gunicorn worker)", lambda m: m.web),
        ("Celery worker main", lambda m: m.worker_main),
        ("Celery pool child", lambda m: m.worker_pool),
    ):
        label = f"RSS MiB {label}, warm / after load (anonymous after load)"
        rows.append([label, *(_memory(p, read) for p in passes), ""])
    header = ["measure", *(f"engine: {p.engine}" for p in passes), "target"]
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _latency(latencies: Latencies | None) -> str:
    if latencies is None:
        return "-"
    return f"{latencies.p50:.1f} / {latencies.p95:.1f} (server {latencies.server_p50:.1f})"


def _p50(latencies: Latencies | None) -> float | None:
    return latencies.p50 if latencies else None


def _number(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def _duration(seconds: float | None) -> str:
    """`seconds` as hours and minutes (`9 h 15 min`), or minutes under an hour."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _memory(result: EnginePass, read) -> str:
    if result.memory_warm is None or result.memory_loaded is None:
        return "-"
    warm, loaded = read(result.memory_warm), read(result.memory_loaded)
    return f"{warm.total:.0f} / {loaded.total:.0f} ({loaded.anonymous:.0f})"


if __name__ == "__main__":
    sys.exit(main())

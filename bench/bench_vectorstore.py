"""How fast is LocalVectorStore next to plain numpy brute force?

    python bench/bench_vectorstore.py [--n 100000] [--queries 50]

Builds a store of N random unit vectors in a temporary directory, then times queries
against an in-memory `matrix @ q` + argpartition baseline over the same vectors, in the
same run, so the ratio says what the store's bookkeeping costs. Then a batch as indexing
sends for its near-duplicate check (INDEX_BATCH_SIZE, 16): one `query_many` against 16
`query` calls, taking turns, with the same answers checked. Then float16 storage
(LOCAL_STORE_PRECISION): a copy of the store converted to float16, its file size and its
query time beside the float32 store's, taking turns; and on image-like vectors
(bench/synthetic.py) how far its scores move and how much of the float32 top 10 it keeps.
Needs no Django.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.common import (  # noqa: E402
    IDLE_SECONDS,
    add_seed_option,
    leftover_cpu,
    scratch_folder,
    script_parser,
)
from bench.synthetic import ImageLikeVectors, exact_top  # noqa: E402
from search.vectorstores.base import VectorRecord  # noqa: E402
from search.vectorstores.local import LocalVectorStore  # noqa: E402

TOP_K = 10
BATCH_TOP_K = 8  # catalog.pipeline.duplicates.CANDIDATES
TAGS = [f"tag{i}" for i in range(10)]  # one tag per vector, so a tag filter keeps ~10%
ONE_TAG_FILTER = {"tags": [TAGS[0]]}


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the store")
    parser.add_argument("--queries", type=int, default=50, help="timed queries per row")
    parser.add_argument("--dimension", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1000, help="records per upsert")
    parser.add_argument("--queries-per-batch", type=int, default=16, help="for query_many")
    parser.add_argument("--batch-rounds", type=int, default=5, help="query_many timings")
    parser.add_argument(
        "--image-like", type=int, default=20_000, help="image-like vectors (float16 agreement)"
    )
    parser.add_argument(
        "--agreement-queries", type=int, default=200, help="queries for float16 agreement"
    )
    add_seed_option(parser)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    with scratch_folder("vectorstore") as folder:
        store = LocalVectorStore(folder, dimension=args.dimension)
        matrix, build_seconds = build(store, rng, args.n, args.dimension, args.batch)
        queries = unit_vectors(rng, args.queries, args.dimension)

        check_same_answers(store, matrix, queries[:5])
        seconds = time_side_by_side(store, matrix, rng, queries)
        leftover = {
            "numpy": leftover_cpu(lambda: numpy_top_k(matrix, queries[0])),
            "store": leftover_cpu(lambda: store.query(queries[0], TOP_K)),
        }
        cold = time_fresh_process(folder, args.dimension, queries[0])
        batch_queries = unit_vectors(rng, args.queries_per_batch, args.dimension)
        batch_seconds = time_query_many(store, batch_queries, args.batch_rounds)
        with scratch_folder("vectorstore-float16") as copy:
            half = float16_copy(store, copy)
            half_seconds = time_float16(store, half["store"], queries)
    agreement = float16_agreement(
        args.seed, args.image_like, args.agreement_queries, args.dimension
    )

    print()
    print(
        f"LocalVectorStore, {args.n:,} x {args.dimension} float32, top_k={TOP_K}, "
        f"{args.queries} queries per row"
    )
    print(
        f"build: {args.n:,} upserts in {build_seconds:.1f} s "
        f"({args.n / build_seconds:,.0f} vectors/s, batches of {args.batch})"
    )
    print()
    print(f"{'':38} {'median ms':>10} {'p95 ms':>8} {'vs numpy':>9}")
    rows = [
        ("numpy in-memory matrix @ q", seconds["numpy"]),
        ("LocalVectorStore.query", seconds["store"]),
        ("  with a tag filter (~10% kept)", seconds["filtered"]),
        ("  right after another writer's upsert", seconds["after_write"]),
    ]
    baseline = seconds["numpy"]
    base_median = float(np.median(baseline))
    for label, row_seconds in rows:
        median, p95 = np.median(row_seconds), np.percentile(row_seconds, 95)
        ratio = median / base_median
        print(f"{label:38} {median * 1e3:10.1f} {p95 * 1e3:8.1f} {ratio:8.2f}x")
    print(
        f"CPU still burnt in the {IDLE_SECONDS * 1e3:.0f} ms after a query returns (BLAS "
        f"threads spinning): numpy {leftover['numpy'] * 1e3:.0f} ms, "
        f"LocalVectorStore {leftover['store'] * 1e3:.0f} ms"
    )
    print()
    print(
        "fresh process (cold in-process cache, warm page cache): "
        f"open {cold['open'] * 1e3:.0f} ms, first query {cold['first'] * 1e3:.0f} ms, "
        f"second query {cold['second'] * 1e3:.1f} ms"
    )
    print()
    n = len(batch_queries)
    print(
        f"{n} queries: query_many vs {n} x query, top_k={BATCH_TOP_K}, "
        f"{args.batch_rounds} rounds taking turns"
    )
    print(f"{'':38} {'query_many':>10} {f'{n} x query':>10} {'ratio':>7}")
    for label, (many, one_by_one) in batch_seconds.items():
        many_ms, single_ms = np.median(many) * 1e3, np.median(one_by_one) * 1e3
        print(f"{label:38} {many_ms:8.1f}ms {single_ms:8.1f}ms {single_ms / many_ms:6.2f}x")
    print()
    print_float16(half, half_seconds, agreement)


def build(
    store: LocalVectorStore,
    rng: np.random.Generator,
    count: int,
    dimension: int,
    batch: int,
) -> tuple[np.ndarray, float]:
    """Fill the store; returns the same vectors in memory and the seconds spent upserting."""
    matrix = np.empty((count, dimension), dtype=np.float32)
    upserting = 0.0
    for start in progress(range(0, count, batch), total=-(-count // batch)):
        stop = min(start + batch, count)
        matrix[start:stop] = unit_vectors(rng, stop - start, dimension)
        records = [
            VectorRecord(id=f"img-{i}", vector=matrix[i], metadata={"tags": [TAGS[i % 10]]})
            for i in range(start, stop)
        ]
        began = time.perf_counter()
        store.upsert(records)
        upserting += time.perf_counter() - began
    return matrix, upserting


def numpy_top_k(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    scores = matrix @ query
    best = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
    return best[np.argsort(-scores[best])]


def check_same_answers(store: LocalVectorStore, matrix: np.ndarray, queries: np.ndarray) -> None:
    for query in queries:
        expected = [f"img-{i}" for i in numpy_top_k(matrix, query)]
        found = [match.id for match in store.query(query, TOP_K)]
        if found != expected:
            raise SystemExit(f"The store disagrees with numpy: {found} != {expected}")


def time_side_by_side(
    store: LocalVectorStore,
    matrix: np.ndarray,
    rng: np.random.Generator,
    queries: np.ndarray,
) -> dict[str, np.ndarray]:
    """Seconds per query of each contender, taking turns so machine noise hits all alike.

    The last one queries right after a one-record upsert made through another store
    object, as a web process does after a worker indexed an image.
    """
    writer = LocalVectorStore(store.path, dimension=store.dimension)
    contenders: dict[str, Callable[[np.ndarray], object]] = {
        "numpy": lambda q: numpy_top_k(matrix, q),
        "store": lambda q: store.query(q, TOP_K),
        "filtered": lambda q: store.query(q, TOP_K, where=ONE_TAG_FILTER),
        "after_write": lambda q: store.query(q, TOP_K),
    }
    for run in contenders.values():
        run(queries[0])  # page faults and cache loads are the cold row's business
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for index, query in enumerate(queries):
        for name, run in contenders.items():
            if name == "after_write":
                vector = unit_vectors(rng, 1, store.dimension)[0]
                writer.upsert([VectorRecord(id=f"late-{index}", vector=vector)])
            began = time.perf_counter()
            run(query)
            seconds[name].append(time.perf_counter() - began)
    return {name: np.array(values) for name, values in seconds.items()}


def time_query_many(
    store: LocalVectorStore, queries: np.ndarray, rounds: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Seconds per batch of one `query_many` and of a `query` per vector, taking turns.

    The filter that keeps every record takes the masked full scan, as the duplicate
    check's `{"model": [current model]}` does outside a reindex.
    """
    filters = {"no filter": None, "a filter keeping every record": {"tags": TAGS}}
    timings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label, where in filters.items():
        many = store.query_many(queries, BATCH_TOP_K, where)
        if many != [store.query(query, BATCH_TOP_K, where) for query in queries]:
            raise SystemExit(f"query_many disagrees with query ({label})")
        seconds: tuple[list[float], list[float]] = ([], [])
        for _ in range(rounds):
            began = time.perf_counter()
            store.query_many(queries, BATCH_TOP_K, where)
            seconds[0].append(time.perf_counter() - began)
            began = time.perf_counter()
            for query in queries:
                store.query(query, BATCH_TOP_K, where)
            seconds[1].append(time.perf_counter() - began)
        timings[label] = (np.array(seconds[0]), np.array(seconds[1]))
    return timings


def time_fresh_process(path: Path, dimension: int, query: np.ndarray) -> dict:
    """Open the store in a new interpreter and time its first and second query."""
    code = textwrap.dedent(
        f"""
        import json, sys, time
        import numpy as np
        from search.vectorstores.local import LocalVectorStore

        query = np.array(json.loads(sys.stdin.read()), dtype=np.float32)
        began = time.perf_counter()
        store = LocalVectorStore({str(path)!r}, dimension={dimension})
        opened = time.perf_counter()
        store.query(query, {TOP_K})
        first = time.perf_counter()
        store.query(query, {TOP_K})
        second = time.perf_counter()
        print(json.dumps({{
            "open": opened - began, "first": first - opened, "second": second - first,
        }}))
        """
    )
    finished = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(query.tolist()),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    return json.loads(finished.stdout)


def float16_copy(store: LocalVectorStore, folder: Path) -> dict:
    """A copy of `store` in `folder`, converted to float16 as `vectorstore_compact
    --precision float16` does; with its file sizes and conversion time."""
    shutil.copytree(store.path, folder, dirs_exist_ok=True)
    half = LocalVectorStore(folder, dimension=store.dimension)
    report = half.convert_precision("float16")
    return {"store": half, "report": report}


def time_float16(
    store: LocalVectorStore, half: LocalVectorStore, queries: np.ndarray
) -> dict[str, np.ndarray]:
    """Seconds per query of the float32 store and its float16 copy, taking turns; and the
    share of the float32 top 10 the copy returns (uniform random vectors: worst case)."""
    contenders = {"float32": store, "float16": half}
    for contender in contenders.values():
        contender.query(queries[0], TOP_K)  # cold: page faults, cache loads
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    kept = []
    for query in queries:
        found = {}
        for name, contender in contenders.items():
            began = time.perf_counter()
            found[name] = contender.query(query, TOP_K)
            seconds[name].append(time.perf_counter() - began)
        wide = {match.id for match in found["float32"]}
        kept.append(len(wide & {match.id for match in found["float16"]}) / len(wide))
    timings = {name: np.array(values) for name, values in seconds.items()}
    timings["kept"] = np.array(kept)
    return timings


def float16_agreement(seed: int, count: int, queries: int, dimension: int) -> dict:
    """On image-like vectors: float16 store answers against the exact float32 ones."""
    rng = np.random.default_rng(seed)
    family = ImageLikeVectors(dimension=dimension)
    matrix = family.draw(rng, count)
    asked = family.draw(rng, queries)
    with scratch_folder("vectorstore-agreement") as folder:
        half = LocalVectorStore(folder, dimension=dimension, precision="float16")
        for start in range(0, count, 1000):
            half.upsert(
                VectorRecord(id=str(i), vector=matrix[i]) for i in range(start, start + 1000)
            )
        answers = half.query_many(asked, TOP_K)
    expected = exact_top(matrix, asked, TOP_K)
    kept, same_order, returned_diff = [], 0, []
    for row, matches in enumerate(answers):
        found = [int(match.id) for match in matches]
        kept.append(len(set(found) & set(expected[row].tolist())) / TOP_K)
        same_order += found == expected[row].tolist()
        exact = matrix[found] @ asked[row]
        returned_diff.append(np.abs(np.array([m.score for m in matches]) - exact))
    # Every row's score, float16 against float32 (what a threshold or a percentage sees).
    rounded = matrix.astype(np.float16).astype(np.float32)
    all_diff = np.abs(rounded @ asked.T - matrix @ asked.T)
    returned = np.concatenate(returned_diff)
    return {
        "count": count,
        "queries": queries,
        "kept": np.array(kept),
        "same_order": same_order,
        "all_max": float(all_diff.max()),
        "all_mean": float(all_diff.mean()),
        "top_max": float(returned.max()),
        "top_mean": float(returned.mean()),
    }


def print_float16(half: dict, seconds: dict[str, np.ndarray], agreement: dict) -> None:
    report = half["report"]
    print("float16 storage (LOCAL_STORE_PRECISION=float16), the same store converted")
    print(
        f"vector file: {report.bytes_before / 2**20:,.1f} MiB float32 -> "
        f"{report.bytes_after / 2**20:,.1f} MiB float16 (converted in {report.seconds:.1f} s)"
    )
    print(f"{'':38} {'median ms':>10} {'p95 ms':>8} {'vs f32':>9}")
    base_median = float(np.median(seconds["float32"]))
    for name in ("float32", "float16"):
        median, p95 = np.median(seconds[name]), np.percentile(seconds[name], 95)
        label = f"LocalVectorStore.query, {name}"
        print(f"{label:38} {median * 1e3:10.1f} {p95 * 1e3:8.1f} {median / base_median:8.2f}x")
    kept = seconds["kept"]
    print(
        f"uniform random vectors: float32 top {TOP_K} kept {kept.mean():.1%} "
        f"(worst query {kept.min():.0%})"
    )
    kept = agreement["kept"]
    print(
        f"image-like vectors ({agreement['count']:,}, {agreement['queries']} queries): "
        f"float32 top {TOP_K} kept {kept.mean():.2%} (worst query {kept.min():.0%}, "
        f"same order {agreement['same_order'] / agreement['queries']:.0%})"
    )
    print(
        f"  score |float16 - float32|: every row max {agreement['all_max']:.2e} "
        f"mean {agreement['all_mean']:.2e}; returned top {TOP_K} max "
        f"{agreement['top_max']:.2e} mean {agreement['top_mean']:.2e}"
    )


def unit_vectors(rng: np.random.Generator, count: int, dimension: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def progress(items: Iterable[int], total: int) -> Iterable[int]:
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc="upserting", unit="batch")


if __name__ == "__main__":
    main()

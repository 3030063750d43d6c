"""Which exact way of scoring every vector is cheapest here? float32 vs float16, threads.

    python bench/bench_exact_scoring.py [--n 100000] [--queries 30] [--rounds 3]

The local vector store scores a query against every stored vector (`matrix @ q` over a
memory-mapped file). This compares, in one run and taking turns so machine noise hits all
alike, ways of doing that which stay exact over all vectors:

- float32, numpy's `matrix @ q` (BLAS sgemv with numpy's default threads);
- float32, `np.vecdot(matrix, q)` (one thread: what the store does);
- float32, `np.vecdot` split over two Python threads (both cores, no BLAS pool);
- float16 storage, half the bytes, cast to float32 a block of about 1 MiB at a time
  (so the block stays in cache) and then scored.

For each: wall time per query, CPU time per query, and the CPU time the process keeps
burning in the 300 ms after a query returns (BLAS worker threads spin before they sleep;
on a 2-core machine that is taken from the model's own thread pool).

The vectors look like ResNet features rather than Gaussian noise: all positive
(post-ReLU averages), with a large shared component, L2-normalised, so their cosines
crowd together (about 0.55 to 0.62) and neighbours in the top 10 differ by very little.
On those, float16 is also checked for giving the same top 10 as float32. Needs no Django.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import IDLE_SECONDS, add_seed_option, leftover_cpu, scratch_folder, script_parser

TOP_K = 10
BLOCK_BYTES = 1024 * 1024  # float16 bytes cast per block; the float32 copy stays in L2
WRITE_ROWS = 10_000  # vectors made and written at a time: about 80 MB of float32 at 2048-d


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="vectors scored per query")
    parser.add_argument("--dimension", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=30, help="timed queries per round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each contender takes")
    add_seed_option(parser)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    with scratch_folder("scoring") as folder:
        # The component every vector shares, which crowds their cosines together.
        mean = np.abs(rng.standard_normal(args.dimension, dtype=np.float32)) * 0.5
        float32, float16 = write_vector_files(folder, rng, args.n, mean)
        queries = feature_like_vectors(rng, args.queries, mean)
        contenders = make_contenders(float32, float16)
        seconds, cpu = time_in_turns(contenders, queries, args.rounds)
        idle_cpu = {
            name: leftover_cpu(lambda run=run: run(queries[0])) for name, run in contenders.items()
        }
        agreement = top_k_agreement(contenders, queries)

    print()
    print(
        f"Exact scoring of {args.n:,} x {args.dimension} feature-like vectors, memory-mapped, "
        f"{args.queries} queries x {args.rounds} rounds; {os.cpu_count()} CPUs, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )
    print()
    header = f"{'':44} {'median ms':>10} {'p95 ms':>8} {'cpu ms':>7} {'cpu after':>10}"
    print(header)
    for name in contenders:
        wall = seconds[name]
        print(
            f"{name:44} {np.median(wall) * 1e3:10.1f} {np.percentile(wall, 95) * 1e3:8.1f} "
            f"{np.median(cpu[name]) * 1e3:7.1f} {idle_cpu[name] * 1e3:10.1f}"
        )
    print(f"('cpu after': CPU burnt by the process in the {IDLE_SECONDS * 1e3:.0f} ms after)")
    print()
    print(
        f"float16 vs float32, top {TOP_K} over {len(queries)} queries: same ids in the same "
        f"order {agreement['same_order']}/{len(queries)}, mean overlap "
        f"{agreement['overlap']:.2f}/{TOP_K}; largest score difference "
        f"{agreement['max_error']:.1e}, smallest gap between neighbours in a float32 top "
        f"{TOP_K + 1} {agreement['min_gap']:.1e}"
    )


def feature_like_vectors(rng: np.random.Generator, count: int, mean: np.ndarray) -> np.ndarray:
    """Unit vectors shaped like pooled ReLU features: positive, sparse-ish, around `mean`."""
    dimension = len(mean)
    vectors = np.abs(rng.standard_normal((count, dimension), dtype=np.float32))
    vectors *= rng.gamma(0.5, 1.0, size=(count, dimension)).astype(np.float32)
    vectors += mean
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def write_vector_files(
    directory: Path, rng: np.random.Generator, count: int, mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The same vectors as float32 and as float16 files, mapped read-only like the store's."""
    dimension = len(mean)
    paths = directory / "vectors.f32", directory / "vectors.f16"
    with paths[0].open("wb") as wide, paths[1].open("wb") as narrow:
        for start in range(0, count, WRITE_ROWS):
            block = feature_like_vectors(rng, min(WRITE_ROWS, count - start), mean)
            wide.write(block.tobytes())
            narrow.write(block.astype(np.float16).tobytes())
    return (
        np.memmap(paths[0], dtype=np.float32, mode="r", shape=(count, dimension)),
        np.memmap(paths[1], dtype=np.float16, mode="r", shape=(count, dimension)),
    )


def make_contenders(
    float32: np.ndarray, float16: np.ndarray
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    count, dimension = float32.shape
    pool = ThreadPoolExecutor(max_workers=1)
    half = count // 2

    def vecdot_two_threads(query: np.ndarray) -> np.ndarray:
        scores = np.empty(count, dtype=np.float32)
        other = pool.submit(np.vecdot, float32[:half], query, out=scores[:half])
        np.vecdot(float32[half:], query, out=scores[half:])
        other.result()
        return scores

    block_rows = max(1, BLOCK_BYTES // (dimension * 2))
    buffer = np.empty((block_rows, dimension), dtype=np.float32)

    def float16_blocks(query: np.ndarray) -> np.ndarray:
        scores = np.empty(count, dtype=np.float32)
        for start in range(0, count, block_rows):
            block = buffer[: min(block_rows, count - start)]
            np.copyto(block, float16[start : start + len(block)], casting="unsafe")
            np.vecdot(block, query, out=scores[start : start + len(block)])
        return scores

    return {
        "float32 matrix @ q (BLAS, default threads)": lambda query: float32 @ query,
        "float32 np.vecdot (one thread, the store)": lambda query: np.vecdot(float32, query),
        "float32 np.vecdot, two Python threads": vecdot_two_threads,
        "float16 storage, 1 MiB blocks cast + vecdot": float16_blocks,
    }


def time_in_turns(
    contenders: dict[str, Callable[[np.ndarray], np.ndarray]], queries: np.ndarray, rounds: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Wall and CPU seconds per query of each contender, a round of queries at a time."""
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            run(queries[0])  # page faults are the first query's business, not this table's
            for query in queries:
                began_cpu, began = time.process_time(), time.perf_counter()
                run(query)
                wall[name].append(time.perf_counter() - began)
                cpu[name].append(time.process_time() - began_cpu)
    return (
        {name: np.array(values) for name, values in wall.items()},
        {name: np.array(values) for name, values in cpu.items()},
    )


def top_k_agreement(
    contenders: dict[str, Callable[[np.ndarray], np.ndarray]], queries: np.ndarray
) -> dict[str, float]:
    exact = contenders["float32 np.vecdot (one thread, the store)"]
    narrow = contenders["float16 storage, 1 MiB blocks cast + vecdot"]
    same_order, overlaps, max_error, min_gap = 0, [], 0.0, np.inf
    for query in queries:
        wide_scores, narrow_scores = exact(query), narrow(query)
        wide_top = np.argsort(-wide_scores, kind="stable")[: TOP_K + 1]
        narrow_top = np.argsort(-narrow_scores, kind="stable")[:TOP_K]
        same_order += bool((wide_top[:TOP_K] == narrow_top).all())
        overlaps.append(len(set(wide_top[:TOP_K].tolist()) & set(narrow_top.tolist())))
        max_error = max(max_error, float(np.abs(wide_scores - narrow_scores).max()))
        min_gap = min(min_gap, float((-np.diff(wide_scores[wide_top])).min()))
    return {
        "same_order": same_order,
        "overlap": float(np.mean(overlaps)),
        "max_error": max_error,
        "min_gap": min_gap,
    }


if __name__ == "__main__":
    main()

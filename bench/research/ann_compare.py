# ruff: noqa: E501, SIM115 - a research harness: wide result tables, short-lived files
"""Measured comparison of approximate nearest-neighbour libraries for the local store.

Not part of `make bench`: it needs its own venv with the libraries compared
(`python3 -m venv /tmp/ann-compare/venv && /tmp/ann-compare/venv/bin/pip install numpy
hnswlib usearch faiss-cpu`). Results and the design they led to: docs/design/approximate-index.md.

    python ann_compare.py gen   --n 100000                  # data, queries, exact answers
    python ann_compare.py run   --n 100000 --config usearch-f32-M16
    python ann_compare.py load  --n 100000 --config usearch-f32-M16 --mode view
    python ann_compare.py gather --n 100000                 # exact scan of a rare tag's rows
    python ann_compare.py all   --n 100000 --configs a,b,c  # run + load for each, in turn
    python ann_compare.py table --n 100000                  # markdown tables of the results

Research script for issue 19 (not product code). Everything lives under --root
(/tmp/ann-compare by default). Each `run` is its own process so its memory is its own;
each `load` is a fresh process that opens the saved index as a web process would and
reports the anonymous (private) and file-backed (shared) memory it holds after queries.

Data: synthetic 2048-d unit vectors shaped like pooled CNN features: a shared positive
component (cosines crowd together as ResNet features do), cluster centres with
unequal cluster sizes, a low-dimensional spread around each centre (48 directions, a
decaying spectrum, so the intrinsic dimension is a few tens) and small isotropic noise.
Queries are fresh draws from the same clusters (new photos of the same kinds of things).
The 1% filter keeps a random 1% of ids (the hard case: a tag that follows no cluster).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for bench.synthetic
from bench.synthetic import DIMENSION as DIM
from bench.synthetic import ImageLikeVectors, exact_top

N_QUERIES = 500  # recall is measured on all, times on all (one query per call)
N_EXTRA = 1000  # held-out vectors for the incremental add
K = 10
FILTER_FRACTION = 0.01
SEED = 19


# ---------------------------------------------------------------- data


def paths(root: Path, n: int) -> dict[str, Path]:
    d = root / f"data-{n}"
    return {
        "dir": d,
        "base": d / "base.f32",
        "extra": d / "extra.f32",
        "queries": d / "queries.f32",
        "truth": d / "truth.npy",
        "allowed": d / "allowed.npy",
        "truth_filtered": d / "truth_filtered.npy",
    }


def cmd_gen(args) -> None:
    p = paths(args.root, args.n)
    p["dir"].mkdir(parents=True, exist_ok=True)
    gen = ImageLikeVectors(SEED)
    rng = np.random.default_rng(SEED + 1)
    began = time.perf_counter()
    with p["base"].open("wb") as f:
        for start in range(0, args.n, 10000):
            f.write(gen.draw(rng, min(10000, args.n - start)).tobytes())
    p["extra"].write_bytes(gen.draw(rng, N_EXTRA).tobytes())
    queries = gen.draw(rng, N_QUERIES)
    p["queries"].write_bytes(queries.tobytes())
    base = np.memmap(p["base"], dtype=np.float32, mode="r", shape=(args.n, DIM))
    truth = exact_top(base, queries, K)
    np.save(p["truth"], truth)
    allowed = np.sort(rng.choice(args.n, size=int(args.n * FILTER_FRACTION), replace=False))
    np.save(p["allowed"], allowed)
    np.save(p["truth_filtered"], exact_top(base, queries, K, rows=allowed))
    # What the data looks like: cosine of the 1st and 10th neighbour vs a random pair.
    s = np.einsum("qd,qkd->qk", queries[:100], base[truth[:100]])
    rand = np.einsum("qd,qd->q", queries[:100], base[rng.choice(args.n, 100)])
    pairs = base[rng.choice(args.n, 2000)]
    sv = np.linalg.svd(pairs - pairs.mean(0), compute_uv=False) ** 2
    pr = float(sv.sum() ** 2 / (sv**2).sum())  # participation ratio: effective dimension
    info = {
        "n": args.n,
        "seconds": time.perf_counter() - began,
        "cos_nn1_median": float(np.median(s[:, 0])),
        "cos_nn10_median": float(np.median(s[:, 9])),
        "cos_random_median": float(np.median(rand)),
        "gap_nn10_nn11_median": None,
        "participation_ratio_2000_sample": pr,
    }
    (p["dir"] / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def load_data(root: Path, n: int):
    p = paths(root, n)
    base = np.memmap(p["base"], dtype=np.float32, mode="r", shape=(n, DIM))
    extra = np.fromfile(p["extra"], dtype=np.float32).reshape(-1, DIM)
    queries = np.fromfile(p["queries"], dtype=np.float32).reshape(-1, DIM)
    return (
        base,
        extra,
        queries,
        np.load(p["truth"]),
        np.load(p["allowed"]),
        np.load(p["truth_filtered"]),
    )


# ---------------------------------------------------------------- memory


def memory() -> dict[str, float]:
    """MiB of this process: anonymous (private copy) and file-backed (shared page cache)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


# ---------------------------------------------------------------- adapters

# Each config: library, options. Adapters give a uniform build/search/add/delete/save/load.
CONFIGS = {
    "hnswlib-M16-ef200": ("hnswlib", {"M": 16, "efc": 200}),
    "hnswlib-M32-ef200": ("hnswlib", {"M": 32, "efc": 200}),
    "usearch-f32-M16": ("usearch", {"dtype": "f32", "M": 16, "efc": 128}),
    "usearch-f16-M16": ("usearch", {"dtype": "f16", "M": 16, "efc": 128}),
    "usearch-i8-M16": ("usearch", {"dtype": "i8", "M": 16, "efc": 128}),
    "usearch-i8-M32": ("usearch", {"dtype": "i8", "M": 32, "efc": 200}),
    "usearch-f16-M32": ("usearch", {"dtype": "f16", "M": 32, "efc": 200}),
    # Inner product instead of cosine: no norms per distance (vectors are unit already).
    "usearch-f16-M32-ip": ("usearch", {"dtype": "f16", "M": 32, "efc": 200, "metric": "ip"}),
    "faiss-HNSW32-Flat": ("faiss", {"kind": "hnsw", "M": 32, "efc": 128}),
    "faiss-HNSW32-SQ8": ("faiss", {"kind": "hnswsq", "M": 32, "efc": 128}),
    "faiss-IVF1024-Flat": ("faiss", {"kind": "ivf", "nlist": 1024}),
    "faiss-IVF1024-SQ8": ("faiss", {"kind": "ivfsq", "nlist": 1024}),
}
EFS = [16, 24, 32, 48, 64, 96, 128, 192, 256]
NPROBES = [4, 8, 16, 32, 48, 64, 96, 128]


class HnswlibAdapter:
    def __init__(self, opts):
        import hnswlib

        self.lib = hnswlib
        self.opts = opts
        self.index = None

    def build(self, data, threads):
        self.index = self.lib.Index(space="ip", dim=DIM)
        self.index.init_index(
            max_elements=len(data) + N_EXTRA,
            ef_construction=self.opts["efc"],
            M=self.opts["M"],
            allow_replace_deleted=True,
        )
        for start in range(0, len(data), 20000):
            block = np.ascontiguousarray(data[start : start + 20000])
            self.index.add_items(block, np.arange(start, start + len(block)), num_threads=threads)

    def knobs(self):
        return EFS

    def set_knob(self, ef):
        self.index.set_ef(max(ef, K))

    def search(self, q, k, allowed_mask=None):
        if allowed_mask is None:
            labels, _ = self.index.knn_query(q, k=k, num_threads=1)
        else:
            labels, _ = self.index.knn_query(
                q, k=k, num_threads=1, filter=lambda label: bool(allowed_mask[label])
            )
        return labels[0]

    def add(self, data, ids, threads):
        self.index.add_items(data, ids, num_threads=threads)

    def delete(self, ids):
        for i in ids:
            self.index.mark_deleted(int(i))
        return "mark_deleted (tombstone; slot reusable with replace_deleted=True)"

    def save(self, path):
        self.index.save_index(str(path))

    def load(self, path, mode, n):
        self.index = self.lib.Index(space="ip", dim=DIM)
        self.index.load_index(str(path), max_elements=n + N_EXTRA)
        return "read into private memory (no mmap)"

    def modes(self):
        return ["read"]


class UsearchAdapter:
    def __init__(self, opts):
        from usearch.index import Index

        self.Index = Index
        self.opts = opts
        self.index = None

    def build(self, data, threads):
        self.index = self.Index(
            ndim=DIM,
            metric=self.opts.get("metric", "cos"),
            dtype=self.opts["dtype"],
            connectivity=self.opts["M"],
            expansion_add=self.opts["efc"],
        )
        for start in range(0, len(data), 20000):
            block = np.ascontiguousarray(data[start : start + 20000])
            self.index.add(np.arange(start, start + len(block)), block, threads=threads)

    def knobs(self):
        return EFS

    def set_knob(self, ef):
        self.index.expansion_search = ef

    def search(self, q, k, allowed_mask=None):
        if allowed_mask is not None:
            return None  # no predicate search in the Python binding (C++ has one)
        return self.index.search(q, k, threads=1).keys

    def add(self, data, ids, threads):
        self.index.add(ids, data, threads=threads)

    def delete(self, ids):
        self.index.remove(ids)
        return "remove (tombstone, compact() reclaims)"

    def save(self, path):
        self.index.save(str(path))

    def load(self, path, mode, n):
        if mode == "view":
            self.index = self.Index.restore(str(path), view=True)
            return "Index.restore(view=True): memory-mapped, read-only"
        self.index = self.Index.restore(str(path), view=False)
        return "Index.restore(): read into private memory"

    def modes(self):
        return ["view", "read"]


class FaissAdapter:
    def __init__(self, opts):
        import faiss

        self.faiss = faiss
        self.opts = opts
        self.index = None

    def build(self, data, threads):
        faiss = self.faiss
        faiss.omp_set_num_threads(threads)
        kind = self.opts["kind"]
        ip = faiss.METRIC_INNER_PRODUCT
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(DIM, self.opts["M"], ip)
        elif kind == "hnswsq":
            index = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, self.opts["M"], ip)
        else:
            quantizer = faiss.IndexFlatIP(DIM)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, DIM, self.opts["nlist"], ip)
            else:
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, DIM, self.opts["nlist"], faiss.ScalarQuantizer.QT_8bit, ip
                )
            self._quantizer = quantizer
        if kind in ("hnsw", "hnswsq"):
            index.hnsw.efConstruction = self.opts["efc"]
        if not index.is_trained:
            sample = np.ascontiguousarray(data[:: max(1, len(data) // 40000)])
            index.train(sample)
        # IDMap2 would give arbitrary ids but blocks remove on HNSW anyway; ids == rows.
        for start in range(0, len(data), 20000):
            index.add(np.ascontiguousarray(data[start : start + 20000]))
        self.index = index
        self.deleted = None

    def knobs(self):
        return NPROBES if self.opts["kind"].startswith("ivf") else EFS

    def set_knob(self, value):
        self.knob = value

    def _params(self, sel):
        faiss = self.faiss
        if self.opts["kind"].startswith("ivf"):
            return faiss.SearchParametersIVF(nprobe=self.knob, sel=sel)
        return faiss.SearchParametersHNSW(efSearch=self.knob, sel=sel)

    def search(self, q, k, allowed_mask=None):
        faiss = self.faiss
        faiss.omp_set_num_threads(1)
        sel = None
        if allowed_mask is not None:
            sel = faiss.IDSelectorBitmap(
                len(allowed_mask), faiss.swig_ptr(self._bitmap(allowed_mask))
            )
        elif self.deleted is not None:
            sel = self._not_deleted
        _, labels = self.index.search(q[None, :], k, params=self._params(sel))
        return labels[0]

    def _bitmap(self, mask):
        key = id(mask)
        if getattr(self, "_bitmap_key", None) != key:
            self._bitmap_key = key
            self._bitmap_bytes = np.packbits(mask, bitorder="little")
        return self._bitmap_bytes

    def add(self, data, ids, threads):
        self.faiss.omp_set_num_threads(threads)
        assert ids[0] == self.index.ntotal
        self.index.add(np.ascontiguousarray(data))

    def delete(self, ids):
        faiss = self.faiss
        if self.opts["kind"].startswith("ivf"):
            self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))
            return "remove_ids (IVF: removed from the lists)"
        # HNSW cannot remove: keep a not-deleted selector on every later query.
        self._deleted_ids = np.asarray(ids, dtype=np.int64)
        self._batch = faiss.IDSelectorBatch(self._deleted_ids)
        self._not_deleted = faiss.IDSelectorNot(self._batch)
        self.deleted = self._deleted_ids
        return "not supported on HNSW: an IDSelectorNot on every query"

    def save(self, path):
        self.faiss.write_index(self.index, str(path))

    def load(self, path, mode, n):
        faiss = self.faiss
        flags = {
            "read": 0,
            "mmap": faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY,
            "mmap_ifc": faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY,
        }[mode]
        self.index = faiss.read_index(str(path), flags)
        self.deleted = None
        return f"read_index flags={mode}"

    def modes(self):
        return ["read", "mmap", "mmap_ifc"]


ADAPTERS = {"hnswlib": HnswlibAdapter, "usearch": UsearchAdapter, "faiss": FaissAdapter}


def adapter_for(config: str):
    lib, opts = CONFIGS[config]
    return ADAPTERS[lib](opts)


# ---------------------------------------------------------------- measuring


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(set(found[:K].tolist()) & set(truth[:K].tolist())) / K


def sweep(adapter, queries, truth, knobs, allowed_mask=None, truth_filtered=None):
    rows = []
    for knob in knobs:
        adapter.set_knob(knob)
        adapter.search(queries[0], K, allowed_mask)  # warm
        times, recalls, filled = [], [], []
        for qi, q in enumerate(queries):
            began = time.perf_counter()
            found = adapter.search(q, K, allowed_mask)
            times.append(time.perf_counter() - began)
            if found is None:
                return None
            found = found[found >= 0]
            filled.append(len(found) >= K)
            t = truth[qi] if truth_filtered is None else truth_filtered[qi]
            recalls.append(recall(found, t))
        rows.append(
            {
                "knob": knob,
                "recall": float(np.mean(recalls)),
                "recall_min": float(np.min(recalls)),
                "p50_ms": float(np.median(times) * 1e3),
                "p95_ms": float(np.percentile(times, 95) * 1e3),
                "filled": float(np.mean(filled)),
            }
        )
        print("   ", rows[-1], flush=True)
        if rows[-1]["recall"] >= 0.999 and knob != knobs[-1]:
            break  # no point sweeping further
    return rows


def cmd_run(args) -> None:
    base, extra, queries, truth, allowed, truth_filtered = load_data(args.root, args.n)
    out_dir = args.root / "results"
    out_dir.mkdir(exist_ok=True)
    index_path = args.root / "indexes" / f"{args.config}-{args.n}.index"
    index_path.parent.mkdir(exist_ok=True)
    adapter = adapter_for(args.config)
    result = {"config": args.config, "n": args.n, "threads_build": args.threads}
    mem0 = memory()
    began, cpu0 = time.perf_counter(), time.process_time()
    adapter.build(base, args.threads)
    result["build_s"] = time.perf_counter() - began
    result["build_cpu_s"] = time.process_time() - cpu0
    mem1 = memory()
    result["build_anon_mib"] = mem1["RssAnon"] - mem0["RssAnon"]
    print(args.config, "built in", round(result["build_s"], 1), "s", mem1, flush=True)
    adapter.save(index_path)
    result["file_mib"] = index_path.stat().st_size / 2**20
    result["bytes_per_vector"] = index_path.stat().st_size / args.n
    knobs = adapter.knobs()
    result["sweep"] = sweep(adapter, queries, truth, knobs)

    # Rerank: ask for 4k, rescore exactly from the float32 matrix (what the store would do).
    def reranked(q, knob):
        adapter.set_knob(knob)
        cand = adapter.search(q, 4 * K)
        cand = cand[cand >= 0]
        s = base[np.sort(cand)] @ q
        return np.sort(cand)[np.argsort(-s)[:K]]

    rr = []
    for knob in knobs[:6]:
        times, recalls = [], []
        for qi, q in enumerate(queries):
            b = time.perf_counter()
            f = reranked(q, knob)
            times.append(time.perf_counter() - b)
            recalls.append(recall(f, truth[qi]))
        rr.append(
            {
                "knob": knob,
                "recall": float(np.mean(recalls)),
                "p50_ms": float(np.median(times) * 1e3),
                "p95_ms": float(np.percentile(times, 95) * 1e3),
            }
        )
        print("    rerank4k", rr[-1], flush=True)
        if rr[-1]["recall"] >= 0.999:
            break
    result["rerank_4k"] = rr

    # Filtered: a random 1% of ids allowed.
    mask = np.zeros(args.n + N_EXTRA, dtype=bool)
    mask[allowed] = True
    fknobs = [k for k in knobs if k >= 32][:4] if knobs is EFS else knobs[-4:]
    if knobs is EFS:
        fknobs = [64, 256, 1024]
    f = sweep(adapter, queries[:100], truth, fknobs, mask, truth_filtered[:100])
    result["filtered_1pct"] = f if f is not None else "not supported by the Python binding"

    # Incremental add of 1,000 held-out vectors, then delete 1,000 existing ones.
    ids = np.arange(args.n, args.n + N_EXTRA)
    began = time.perf_counter()
    adapter.add(extra, ids, args.threads)
    result["add_1000_s"] = time.perf_counter() - began
    gone = np.unique(truth[:, 0])[:N_EXTRA]  # delete answers we know are asked for
    gone = np.concatenate([gone, np.setdiff1d(np.arange(N_EXTRA * 3), gone)[: N_EXTRA - len(gone)]])
    began = time.perf_counter()
    result["delete_how"] = adapter.delete(gone)
    result["delete_1000_s"] = time.perf_counter() - began
    # After: exact truth over what is left, and deleted ids must never come back.
    left = np.ones(args.n + N_EXTRA, dtype=bool)
    left[gone] = False
    full = np.concatenate([np.asarray(base), extra])
    truth_after = exact_top(full, queries[:200], K, rows=np.flatnonzero(left))
    del full
    gc.collect()
    best = next((r for r in result["sweep"] if r["recall"] >= 0.98), result["sweep"][-1])
    adapter.set_knob(best["knob"])
    times, recalls, leaked = [], [], 0
    for qi, q in enumerate(queries[:200]):
        b = time.perf_counter()
        found = adapter.search(q, K)
        times.append(time.perf_counter() - b)
        found = found[found >= 0]
        leaked += int(np.isin(found, gone).sum())
        recalls.append(recall(found, truth_after[qi]))
    result["after_changes"] = {
        "knob": best["knob"],
        "recall": float(np.mean(recalls)),
        "p50_ms": float(np.median(times) * 1e3),
        "deleted_returned": leaked,
    }
    result["rss_end"] = memory()
    (out_dir / f"{args.config}-{args.n}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("sweep",)}, indent=None))


def cmd_load(args) -> None:
    """A fresh process opening the saved index, as a web process would."""
    _, _, queries, truth, _, _ = load_data(args.root, args.n)
    index_path = args.root / "indexes" / f"{args.config}-{args.n}.index"
    adapter = adapter_for(args.config)
    mem0 = memory()
    began = time.perf_counter()
    how = adapter.load(index_path, args.mode, args.n)
    load_s = time.perf_counter() - began
    mem1 = memory()
    adapter.set_knob(args.knob)
    times, recalls = [], []
    for qi, q in enumerate(queries[:300]):
        b = time.perf_counter()
        found = adapter.search(q, K)
        times.append(time.perf_counter() - b)
        recalls.append(recall(found, truth[qi]))
    mem2 = memory()
    result = {
        "config": args.config,
        "mode": args.mode,
        "how": how,
        "load_s": load_s,
        "anon_after_load_mib": mem1["RssAnon"] - mem0["RssAnon"],
        "file_after_load_mib": mem1["RssFile"] - mem0["RssFile"],
        "anon_after_300q_mib": mem2["RssAnon"] - mem0["RssAnon"],
        "file_after_300q_mib": mem2["RssFile"] - mem0["RssFile"],
        "knob": args.knob,
        "first_query_ms": times[0] * 1e3,
        "p50_ms": float(np.median(times[1:]) * 1e3),
        "recall": float(np.mean(recalls)),
    }
    out = args.root / "results" / f"load-{args.config}-{args.n}-{args.mode}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def cmd_gather(args) -> None:
    """Exact scan of a rare tag's rows: gather m random rows of the mapped matrix, score."""
    base, _, queries, _, _, _ = load_data(args.root, args.n)
    rng = np.random.default_rng(5)
    np.asarray(base[: len(base)]).sum()  # warm the page cache
    result = {}
    for m in (1000, 3000, 10000, 30000):
        if m > len(base):
            continue
        rows = np.sort(rng.choice(len(base), m, replace=False))
        times = []
        block = max(1, 4 * 2**20 // (DIM * 4))
        for q in queries[:50]:
            b = time.perf_counter()
            scores = np.empty(m, dtype=np.float32)
            for s in range(0, m, block):
                scores[s : s + block] = np.vecdot(base[rows[s : s + block]], q)
            np.argpartition(-scores, K)[:K]
            times.append(time.perf_counter() - b)
        result[m] = {
            "p50_ms": float(np.median(times) * 1e3),
            "p95_ms": float(np.percentile(times, 95) * 1e3),
        }
        print(m, result[m], flush=True)
    # And the full exact scan, one thread, for the crossover.
    times = []
    for q in queries[:20]:
        b = time.perf_counter()
        scores = np.vecdot(base, q)
        np.argpartition(-scores, K)[:K]
        times.append(time.perf_counter() - b)
    result["full_scan_1_thread"] = {"rows": len(base), "p50_ms": float(np.median(times) * 1e3)}
    print(result["full_scan_1_thread"])
    (args.root / "results" / f"gather-{args.n}.json").write_text(json.dumps(result, indent=1))


def cmd_table(args) -> None:
    """Markdown tables of the results for --n."""
    import glob

    n = args.n
    print(
        "| config | build s (2 thr) | file MiB | B/vector | knob for >=0.98 | recall | p50 ms | p95 ms | best recall (knob, p50) | rerank 4k: knob, recall, p50 | add 1k s | delete 1k | after add+delete: recall, p50, deleted returned | 1% filter (knob: recall, p50, filled) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for f in sorted(glob.glob(f"{args.root}/results/*-{n}.json")):
        if "/load-" in f or "/gather-" in f:
            continue
        r = json.load(open(f))
        sw = r["sweep"]
        hit = next((s for s in sw if s["recall"] >= 0.98), None)
        best = max(sw, key=lambda s: s["recall"])
        rr = next((s for s in r["rerank_4k"] if s["recall"] >= 0.98), r["rerank_4k"][-1])
        fl = r["filtered_1pct"]
        fls = (
            "no predicate in Python binding"
            if isinstance(fl, str)
            else "; ".join(
                f"{s['knob']}: {s['recall']:.2f}, {s['p50_ms']:.1f} ms, {s['filled']:.0%}"
                for s in fl
            )
        )
        a = r["after_changes"]
        print(
            f"| {r['config']} | {r['build_s']:.0f} | {r['file_mib']:.0f} | {r['bytes_per_vector']:.0f} | "
            + (
                f"{hit['knob']} | {hit['recall']:.3f} | {hit['p50_ms']:.2f} | {hit['p95_ms']:.2f} | "
                if hit
                else "never | - | - | - | "
            )
            + f"{best['recall']:.3f} ({best['knob']}, {best['p50_ms']:.2f}) | {rr['knob']}, {rr['recall']:.3f}, {rr['p50_ms']:.2f} | {r['add_1000_s']:.2f} | {r['delete_1000_s'] * 1e3:.1f} ms, {r['delete_how']} | {a['recall']:.3f}, {a['p50_ms']:.2f}, {a['deleted_returned']} | {fls} |"
        )
    print()
    print(
        "| config | load mode | load ms | private (anon) MiB after load / after 300 q | shared (file) MiB after 300 q | first query ms | p50 ms | recall |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for f in sorted(glob.glob(f"{args.root}/results/load-*-{n}-*.json")):
        r = json.load(open(f))
        print(
            f"| {r['config']} | {r['how']} | {r['load_s'] * 1e3:.0f} | {r['anon_after_load_mib']:.0f} / {r['anon_after_300q_mib']:.0f} | {r['file_after_300q_mib']:.0f} | {r['first_query_ms']:.1f} | {r['p50_ms']:.2f} | {r['recall']:.3f} |"
        )


def cmd_all(args) -> None:
    for config in args.configs.split(","):
        here = [sys.executable, __file__, "--root", str(args.root), "--n", str(args.n)]
        subprocess.run([*here, "run", "--config", config], check=True)
        res = json.loads((args.root / "results" / f"{config}-{args.n}.json").read_text())
        knob = res["after_changes"]["knob"]
        for mode in adapter_for(config).modes():
            subprocess.run(
                [*here, "load", "--config", config, "--mode", mode, "--knob", str(knob)], check=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/ann-compare"))
    parser.add_argument("--n", type=int, default=100_000)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("gen")
    run = sub.add_parser("run")
    run.add_argument("--config", required=True, choices=sorted(CONFIGS))
    run.add_argument("--threads", type=int, default=2)
    load = sub.add_parser("load")
    load.add_argument("--config", required=True, choices=sorted(CONFIGS))
    load.add_argument("--mode", required=True)
    load.add_argument("--knob", type=int, default=64)
    sub.add_parser("gather")
    sub.add_parser("table")
    every = sub.add_parser("all")
    every.add_argument("--configs", required=True)
    args = parser.parse_args()
    {
        "gen": cmd_gen,
        "run": cmd_run,
        "load": cmd_load,
        "gather": cmd_gather,
        "all": cmd_all,
        "table": cmd_table,
    }[args.cmd](args)


if __name__ == "__main__":
    main()

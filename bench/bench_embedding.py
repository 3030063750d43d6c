"""The inference engines side by side: torch eager, ONNX Runtime fp32 and int8, in one run.

Usage: python bench/bench_embedding.py [--images 32] [--batch-sizes 1,16] [--rounds 2]
    [--int8-schemes u8s8,s8s8]
Uses the seeded random ResNet50 (same cost as real weights, no download needed). Each row
embeds the same photos through `ImageEncoder` (preprocessing included); the engines take
turns, and each row keeps its fastest of `--rounds` rounds (other work on a shared machine
only ever slows a round down). Ratios are against torch eager and against ONNX fp32 at the
same batch size; the cosine is against torch's vectors. int8 rows name their quantisation:
by default the one chosen for this CPU, and S8S8 (signed activations, the former model) for
comparison.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "visualsearch.settings")
os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="bench-embedding-"))

import django

django.setup()

import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import MODEL_CACHE_DIR, script_parser  # noqa: E402
from search.embedding import EmbeddingOptions, ImageEncoder  # noqa: E402
from search.embedding.cpu_features import (  # noqa: E402
    INT8_SCHEMES,
    cpu_description,
    this_cpu_int8_scheme,
)
from search.embedding.onnx_engine import cosines  # noqa: E402

SAMPLE_PHOTOS = 8  # distinct photos (scikit-image samples), cycled up to --images
TORCH, ONNX = "torch eager fp32", "onnx fp32"


def engines(int8_schemes: list[str]) -> dict[str, dict]:
    rows = {TORCH: dict(engine="torch"), ONNX: dict(engine="onnx")}
    for scheme in int8_schemes:
        rows[f"onnx int8 {scheme}"] = dict(engine="onnx", precision="int8", quantization=scheme)
    return rows


def main() -> None:
    chosen = this_cpu_int8_scheme()
    parser = script_parser(__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--int8-schemes",
        default=",".join(dict.fromkeys([chosen, "s8s8"])),
        help=f"int8 quantisations to time, of {', '.join(INT8_SCHEMES)} (this CPU's: {chosen})",
    )
    parser.add_argument("--cache-dir", default=str(MODEL_CACHE_DIR))
    args = parser.parse_args()

    folder = Path(skimage.data.__file__).parent
    photos = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))[:SAMPLE_PHOTOS]]
    images = [photos[i % len(photos)] for i in range(args.images)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    encoders: dict[str, ImageEncoder] = {}
    agreement: dict[str, float] = {}
    reference = None
    for name, choice in engines(args.int8_schemes.split(",")).items():
        options = EmbeddingOptions(weights="random", cache_dir=args.cache_dir, **choice)
        started = time.perf_counter()
        encoders[name] = ImageEncoder(options)
        print(f"{name}: ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        vectors = encoders[name].embed_batch(images[:SAMPLE_PHOTOS])  # warm-up, and compared
        reference = vectors if reference is None else reference
        agreement[name] = float(cosines(reference, vectors).min())

    rates: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for name, encoder in encoders.items():
            for batch_size in batch_sizes:
                started = time.perf_counter()
                encoder.embed_batch(images, batch_size=batch_size)
                rate = args.images / (time.perf_counter() - started)
                rates[name, batch_size] = max(rate, rates.get((name, batch_size), 0.0))

    print(f"Embedding, {args.images} photos, random-weight ResNet50, {os.cpu_count()} CPUs")
    print(f"CPU: {cpu_description()}; int8 quantisation chosen for it: {chosen}")
    print(f"{'engine':<18} {'batch':>5} {'ms/image':>9} {'images/s':>9} {'vs torch':>9} "
          f"{'vs onnx fp32':>13} {'min cosine':>11}")  # fmt: skip
    for name, batch_size in rates:  # engines in order, each with its batch sizes
        rate = rates[name, batch_size]
        print(
            f"{name:<18} {batch_size:>5} {1000 / rate:>9.1f} {rate:>9.1f} "
            f"{rate / rates[TORCH, batch_size]:>8.2f}x {rate / rates[ONNX, batch_size]:>12.2f}x "
            f"{agreement[name]:>11.6f}"
        )
    int8 = f"onnx int8 {chosen}"
    if int8 in encoders:
        ratios = ", ".join(
            f"{rates[int8, b] / rates[ONNX, b]:.2f}x at batch {b}" for b in batch_sizes
        )
        print(f"int8 ({chosen}) against fp32 on this CPU: {ratios}")


if __name__ == "__main__":
    main()

"""The inference engines side by side: torch eager, ONNX Runtime fp32 and int8, in one run.

Usage: python bench/bench_embedding.py [--images 32] [--batch-sizes 1,16] [--engines ...]
Uses the seeded random ResNet50 (same cost as real weights, no download needed). Each row
embeds the same photos through `ImageEncoder` (preprocessing included); the ratio is
against torch eager at the same batch size, and the cosine against torch's vectors.
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
from search.embedding.onnx_engine import cosines  # noqa: E402

SAMPLE_PHOTOS = 8  # distinct photos (scikit-image samples), cycled up to --images
ENGINES = {
    "torch eager fp32": dict(engine="torch"),
    "onnx fp32": dict(engine="onnx"),
    "onnx int8": dict(engine="onnx", precision="int8"),
}


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--cache-dir", default=str(MODEL_CACHE_DIR))
    args = parser.parse_args()

    folder = Path(skimage.data.__file__).parent
    photos = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))[:SAMPLE_PHOTOS]]
    images = [photos[i % len(photos)] for i in range(args.images)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    rates: dict[tuple[str, int], float] = {}
    agreement: dict[str, float] = {}
    reference = None
    for name in args.engines.split(","):
        options = EmbeddingOptions(weights="random", cache_dir=args.cache_dir, **ENGINES[name])
        started = time.perf_counter()
        encoder = ImageEncoder(options)
        print(f"{name}: ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        vectors = encoder.embed_batch(images[:SAMPLE_PHOTOS])  # warm-up, and what is compared
        reference = vectors if reference is None else reference
        agreement[name] = float(cosines(reference, vectors).min())
        for batch_size in batch_sizes:
            started = time.perf_counter()
            encoder.embed_batch(images, batch_size=batch_size)
            rates[name, batch_size] = args.images / (time.perf_counter() - started)

    first = args.engines.split(",")[0]
    print(f"\nEmbedding, {args.images} photos, random-weight ResNet50, {os.cpu_count()} CPUs")
    print(f"{'engine':<18} {'batch':>5} {'ms/image':>9} {'vs ' + first:>22} {'min cosine':>11}")
    for name, batch_size in rates:
        rate = rates[name, batch_size]
        ratio = rate / rates[first, batch_size]
        print(
            f"{name:<18} {batch_size:>5} {1000 / rate:>9.1f} {ratio:>21.2f}x "
            f"{agreement[name]:>11.6f}"
        )


if __name__ == "__main__":
    main()

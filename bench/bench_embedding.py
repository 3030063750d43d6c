"""Embedding throughput: batched indexing against one-at-a-time calls, in one run.

Usage: python bench/bench_embedding.py [--images 32] [--batch-sizes 1,8,16]
Uses the seeded random ResNet50 (same cost as real weights, no download needed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import skimage.data
from PIL import Image

from search.embedding import EmbeddingOptions, ImageEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8,16")
    args = parser.parse_args()

    folder = Path(skimage.data.__file__).parent
    photos = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))[:8]]
    images = [photos[i % len(photos)] for i in range(args.images)]

    started = time.perf_counter()
    encoder = ImageEncoder(EmbeddingOptions(weights="random"))
    print(f"model build: {time.perf_counter() - started:.2f} s")
    encoder.embed_batch(images[:2])  # warm-up

    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        started = time.perf_counter()
        encoder.embed_batch(images, batch_size=batch_size)
        rows.append((batch_size, args.images / (time.perf_counter() - started)))

    baseline = rows[0][1]
    print(f"{'batch size':>10}  {'images/s':>9}  {'vs first':>8}")
    for batch_size, rate in rows:
        print(f"{batch_size:>10}  {rate:>9.1f}  {rate / baseline:>7.2f}x")


if __name__ == "__main__":
    main()

"""The bare script a user could write instead of the product: the benchmark's baseline.

Torchvision's eager ResNet50 (random weights: same arithmetic as trained ones, no
download), classifier replaced by Identity, eval mode, inference_mode, and the weights'
own evaluation transforms. No Django and nothing of the project: this is what the
product has to beat.

Run as a subprocess (`EagerBaseline` below drives it) it builds the model, warms it up,
prints `ready`, then answers one JSON line per command read from stdin:

- `search N`: N calls of base64 decode + Pillow decode + preprocessing + a forward pass
  at batch 1, on the same base64 text a search sends; their milliseconds, as a list;
- `index`: Pillow decode + preprocessing + forward passes at batch 16 over every JPEG in
  --photos, start to end; images per second.

A long-lived process lets the benchmark alternate the bare script with the product, so
both meet the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import time
from pathlib import Path

INDEX_BATCH = 16


def main() -> None:
    import torch
    from PIL import Image
    from torchvision.models import ResNet50_Weights, resnet50

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", type=Path, required=True, help="the JPEG a search sends")
    parser.add_argument("--photos", type=Path, required=True, help="folder of JPEGs to index")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet50(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    transform = ResNet50_Weights.IMAGENET1K_V1.transforms()
    query_text = base64.b64encode(args.query.read_bytes()).decode("ascii")
    photos = sorted(args.photos.glob("*.jpg"))

    def search_once() -> float:
        started = time.perf_counter()
        image = Image.open(io.BytesIO(base64.b64decode(query_text))).convert("RGB")
        with torch.inference_mode():
            model(transform(image).unsqueeze(0))
        return (time.perf_counter() - started) * 1000

    def index(paths: list[Path]) -> float:
        started = time.perf_counter()
        for start in range(0, len(paths), INDEX_BATCH):
            chunk = paths[start : start + INDEX_BATCH]
            batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in chunk])
            with torch.inference_mode():
                model(batch)
        return len(paths) / (time.perf_counter() - started)

    for _ in range(2):  # the first calls allocate and pick kernels, at both batch sizes
        search_once()
    index(photos[:INDEX_BATCH])
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, count = line.strip().partition(" ")
        if command == "search":
            answer = [search_once() for _ in range(int(count))]
        elif command == "index":
            answer = index(photos)
        else:
            answer = {"error": f"unknown command {line.strip()!r}"}
        print(json.dumps(answer), flush=True)


class EagerBaseline:
    """The bare script in a subprocess of its own, its model built once."""

    def __init__(self, query: Path, photos: Path):
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--query", str(query), "--photos", str(photos)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # "ready"

    def search(self, calls: int) -> list[float]:
        """Milliseconds of `calls` batch-1 searches, one after another."""
        return self._ask(f"search {calls}")

    def index_rate(self) -> float:
        """Images per second over the photos, at batch 16."""
        return self._ask("index")

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(30)

    def _ask(self, command: str):
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return json.loads(self._read())

    def _read(self) -> str:
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench/eager_baseline.py exited {self._process.wait()}")
        return line


if __name__ == "__main__":
    main()

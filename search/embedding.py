"""ResNet50 image embeddings: 2048-d global-average-pooled features, L2-normalised.

One encoder per process, built lazily on first use (never at import, so never before a
Celery or gunicorn fork). Catalog indexing and queries share `preprocess`, so a query and
a catalog copy of the same picture give the same vector.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

DIMENSION = 2048
NAMED_WEIGHTS = ("IMAGENET1K_V1", "IMAGENET1K_V2")
RANDOM_WEIGHTS = "random"


class EmbeddingWeightsUnavailable(RuntimeError):
    """The configured weights could not be loaded; the message says what to set instead."""


@dataclass(frozen=True)
class EmbeddingOptions:
    weights: str = "IMAGENET1K_V1"  # IMAGENET1K_V1, IMAGENET1K_V2, a file path, or "random"
    seed: int = 0  # only for random weights
    batch_size: int = 2  # images per forward pass
    threads: int = 0  # 0 leaves torch's default

    @property
    def is_random(self) -> bool:
        return self.weights.lower() == RANDOM_WEIGHTS

    @property
    def resize_size(self) -> int:
        """The shorter side the weights' transform resizes to (torchvision's resize_size)."""
        return 232 if self.weights.upper() == "IMAGENET1K_V2" else 256

    @property
    def is_file(self) -> bool:
        return not self.is_random and self.weights.upper() not in NAMED_WEIGHTS

    @classmethod
    def from_settings(cls) -> EmbeddingOptions:
        from django.conf import settings

        return cls(
            weights=settings.EMBEDDING_WEIGHTS,
            seed=settings.EMBEDDING_SEED,
            batch_size=settings.EMBEDDING_BATCH_SIZE,
            threads=settings.EMBEDDING_THREADS,
        )


def model_id_for(options: EmbeddingOptions) -> str:
    """The id stored with every vector, so a change of weights can be detected.

    Cheap: it does not load the model. A state-dict file is identified by a hash of its
    contents, computed once per process and path.
    """
    if options.is_random:
        return f"resnet50/random-seed{options.seed}"
    if options.is_file:
        return f"resnet50/file-{_file_digest(options.weights)}"
    return f"resnet50/{options.weights.upper()}"


@functools.lru_cache(maxsize=8)
def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return "missing"
    return digest.hexdigest()[:12]


class ImageEncoder:
    """Turns PIL images into L2-normalised float32 vectors of `DIMENSION` floats."""

    def __init__(self, options: EmbeddingOptions):
        import torch

        self.options = options
        self.model_id = model_id_for(options)
        self._model, self._transform = _build_model(options)
        self._torch = torch
        # Torch modules are safe to call from several threads, but running two forward
        # passes at once on 2 cores only makes both slower; queue them instead.
        self._lock = threading.Lock()

    def preprocess(self, image: Image.Image):
        """The chosen weights' evaluation transform (resize, centre crop 224, normalise)."""
        return self._transform(image)

    def embed_batch(
        self, images: Sequence[Image.Image], batch_size: int | None = None
    ) -> np.ndarray:
        """An (n, 2048) float32 array, one unit-length row per image, in order.

        Images go through the model `batch_size` at a time (default: the options').
        """
        if not images:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        torch = self._torch
        rows = []
        step = batch_size or self.options.batch_size
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            batch = torch.stack([self.preprocess(image) for image in chunk])
            with self._lock, torch.inference_mode():
                features = self._model(batch)
            features = torch.nn.functional.normalize(features.float(), dim=1)
            rows.append(features.numpy())
        return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)

    def embed_one(self, image: Image.Image) -> np.ndarray:
        return self.embed_batch([image])[0]


def _build_model(options: EmbeddingOptions):
    import torch
    from torchvision.models import ResNet50_Weights, resnet50

    if options.threads:
        torch.set_num_threads(options.threads)

    if options.is_random:
        # Seeded without disturbing the process's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            model = resnet50(weights=None)
        transform = ResNet50_Weights.IMAGENET1K_V1.transforms()
        logger.warning(
            "EMBEDDING_WEIGHTS=random: embeddings come from an untrained network; "
            "similarity results are not meaningful."
        )
    elif options.is_file:
        model = resnet50(weights=None)
        model.load_state_dict(_load_state_dict(options.weights))
        transform = ResNet50_Weights.IMAGENET1K_V1.transforms()
    else:
        weights = ResNet50_Weights[options.weights.upper()]
        try:
            model = resnet50(weights=weights, progress=True)
        except Exception as exc:  # urllib errors, SSL errors, truncated downloads
            raise EmbeddingWeightsUnavailable(
                f"Could not download ResNet50 {weights.name} weights ({exc}). Either allow "
                "access to download.pytorch.org once (they are cached under TORCH_HOME), "
                "set EMBEDDING_WEIGHTS to the path of a local ResNet50 state-dict file, "
                "or set EMBEDDING_WEIGHTS=random for a dry run with meaningless results."
            ) from exc
        transform = weights.transforms()

    model.fc = torch.nn.Identity()  # keep the 2048-d pooled features, drop the classifier
    model.eval()
    return model, transform


def _load_state_dict(path: str):
    import torch

    file = Path(path)
    if not file.is_file():
        raise EmbeddingWeightsUnavailable(
            f"EMBEDDING_WEIGHTS={path!r} is neither IMAGENET1K_V1, IMAGENET1K_V2, random, "
            "nor an existing state-dict file."
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EmbeddingWeightsUnavailable(
            f"Could not read ResNet50 weights from {path} ({exc}); save them with "
            "torch.save(model.state_dict(), path)."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


_encoders: dict[EmbeddingOptions, ImageEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(options: EmbeddingOptions | None = None) -> ImageEncoder:
    """The process's encoder for the configured weights, built on first call."""
    options = options or EmbeddingOptions.from_settings()
    with _encoders_lock:  # two request threads must not build two models
        if options not in _encoders:
            _encoders[options] = ImageEncoder(options)
        return _encoders[options]


def encoder_is_loaded(options: EmbeddingOptions | None = None) -> bool:
    """Whether this process has built the encoder for these options yet."""
    return (options or EmbeddingOptions.from_settings()) in _encoders

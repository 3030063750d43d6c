"""The process's image encoder: preprocessing, one inference thread, the chosen engine.

Every forward pass of the process runs on one dedicated thread, whatever thread asked
for it. ONNX Runtime and torch each keep a pool of math threads per calling thread, so
gunicorn's request threads calling the model directly would each start a pool, and the
pools would fight over the cores (on 2 cores that cost a third of every search). Request
threads preprocess their own pictures in parallel, then queue for the one pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from search.embedding.options import DIMENSION, EmbeddingOptions, model_id_for
from search.embedding.preprocessing import preprocess, preprocess_batch

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)


class ImageEncoder:
    """Turns PIL images into L2-normalised float32 vectors of `DIMENSION` floats."""

    def __init__(self, options: EmbeddingOptions):
        self.options = options
        self.model_id = model_id_for(options)
        # One thread, started here (after any fork: encoders are built lazily), runs
        # every forward pass; the engine is built on it so torch's pool lives there too.
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        try:
            self._engine = self._inference.submit(_build_engine, options).result()
        except BaseException:
            self._inference.shutdown(wait=False)
            raise

    @property
    def engine(self) -> str:
        return self._engine.name

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The weights' evaluation transform (resize, centre crop 224, normalise)."""
        return preprocess(image, self.options.resize_size)

    def embed_batch(
        self, images: Sequence[Image.Image], batch_size: int | None = None
    ) -> np.ndarray:
        """An (n, 2048) float32 array, one unit-length row per image, in order.

        Images go through the model `batch_size` at a time (default: the options').
        """
        if not images:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        step = batch_size or self.options.effective_batch_size
        rows = []
        for start in range(0, len(images), step):
            pixels = preprocess_batch(images[start : start + step], self.options.resize_size)
            rows.append(self._inference.submit(self._engine.run, pixels).result())
        features = np.concatenate(rows).astype(np.float32, copy=False)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return np.ascontiguousarray(features / np.maximum(norms, 1e-12), dtype=np.float32)

    def embed_one(self, image: Image.Image) -> np.ndarray:
        return self.embed_batch([image])[0]


def _build_engine(options: EmbeddingOptions):
    if options.engine == "torch":
        from search.embedding.torch_engine import TorchEngine

        return TorchEngine(options)
    from search.embedding.onnx_engine import OnnxEngine

    return OnnxEngine(options)


_encoders: dict[EmbeddingOptions, ImageEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(options: EmbeddingOptions | None = None) -> ImageEncoder:
    """The process's encoder for the configured model, built on first call."""
    options = options or EmbeddingOptions.from_settings()
    with _encoders_lock:  # two request threads must not build two models
        if options not in _encoders:
            _encoders[options] = ImageEncoder(options)
        return _encoders[options]


def encoder_is_loaded(options: EmbeddingOptions | None = None) -> bool:
    """Whether this process has built the encoder for these options yet."""
    return (options or EmbeddingOptions.from_settings()) in _encoders


def warm_up_in_background(log: logging.Logger | None = None) -> threading.Thread:
    """Build the configured encoder on a background thread, so the first search or task
    of a fresh process does not wait for it. Called after a fork (gunicorn's
    post_worker_init, Celery's worker_process_init), never before one."""

    def build():
        try:
            get_encoder()
        except Exception:  # searches and tasks report the same error, with what to do
            (log or logger).exception("Could not load the embedding model")

    thread = threading.Thread(target=build, name="warm-up-model", daemon=True)
    thread.start()
    return thread

"""ResNet50 image embeddings: 2048-d global-average-pooled features, L2-normalised.

One encoder per process, built lazily on first use (never at import, so never before a
Celery or gunicorn fork). Catalog indexing and queries share one preprocessing path, so
a query and a catalog copy of the same picture give the same vector.

The modules: `options` (settings, model ids, thread counts), `preprocessing` (the
weights' transform in Pillow and numpy), `encoder` (the per-process encoder and its one
inference thread), `torch_engine` (eager PyTorch, and the network the ONNX model is
exported from), `onnx_engine` (export, cache, int8 quantisation, ONNX Runtime sessions).
"""

from search.embedding.encoder import (
    ImageEncoder,
    encoder_is_loaded,
    get_encoder,
    warm_up_in_background,
)
from search.embedding.options import (
    DIMENSION,
    NAMED_WEIGHTS,
    RANDOM_WEIGHTS,
    EmbeddingOptions,
    EmbeddingWeightsUnavailable,
    model_id_for,
    share_cores,
    usable_cores,
)

__all__ = [
    "DIMENSION",
    "NAMED_WEIGHTS",
    "RANDOM_WEIGHTS",
    "EmbeddingOptions",
    "EmbeddingWeightsUnavailable",
    "ImageEncoder",
    "encoder_is_loaded",
    "get_encoder",
    "model_id_for",
    "share_cores",
    "usable_cores",
    "warm_up_in_background",
]

"""What the configured model is: weights, engine, precision and threads, and its model id."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from search.embedding.cpu_features import INT8_SCHEMES, this_cpu_int8_scheme
from visualsearch.cores import usable_cores

DIMENSION = 2048
NAMED_WEIGHTS = ("IMAGENET1K_V1", "IMAGENET1K_V2")
RANDOM_WEIGHTS = "random"
ENGINES = ("onnx", "torch")
PRECISIONS = ("fp32", "int8")

# Images per forward pass when EMBEDDING_BATCH_SIZE is 0, by engine, measured on a 2-core
# CPU with 2 inference threads: ONNX Runtime's cost per image is nearly flat (18.4 ms at 1,
# 17.8 at 4, 19.5 at 16); torch eager gets slower per image past small batches.
DEFAULT_BATCH_SIZE = {"onnx": 4, "torch": 2}


class EmbeddingWeightsUnavailable(RuntimeError):
    """The configured model could not be loaded; the message says what to set instead."""


@dataclass(frozen=True)
class EmbeddingOptions:
    weights: str = "IMAGENET1K_V1"  # IMAGENET1K_V1, IMAGENET1K_V2, a file path, or "random"
    seed: int = 0  # only for random weights
    batch_size: int = 0  # images per forward pass; 0: the engine's measured default
    threads: int = 0  # the inference pool's threads; 0: the cores this process may use
    engine: str = "onnx"  # "onnx" (ONNX Runtime) or "torch" (eager PyTorch)
    precision: str = "fp32"  # "fp32", or "int8" (ONNX engine only)
    cache_dir: str = ""  # where exported ONNX models live; "" means VAR_DIR/models
    # int8 only: an INT8_SCHEMES tag (u8s8, u8s8rr, s8s8); "" picks the one for this CPU
    quantization: str = ""

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise EmbeddingWeightsUnavailable(
                f"EMBEDDING_ENGINE={self.engine!r} is not one of {', '.join(ENGINES)}."
            )
        if self.precision not in PRECISIONS:
            raise EmbeddingWeightsUnavailable(
                f"EMBEDDING_PRECISION={self.precision!r} is not one of {', '.join(PRECISIONS)}."
            )
        if self.precision == "int8" and self.engine != "onnx":
            raise EmbeddingWeightsUnavailable(
                "EMBEDDING_PRECISION=int8 needs EMBEDDING_ENGINE=onnx "
                "(the torch engine is fp32 only)."
            )
        if self.quantization and self.quantization not in INT8_SCHEMES:
            raise EmbeddingWeightsUnavailable(
                f"The int8 quantization {self.quantization!r} is not one of "
                f"{', '.join(INT8_SCHEMES)}."
            )

    @property
    def is_random(self) -> bool:
        return self.weights.lower() == RANDOM_WEIGHTS

    @property
    def is_file(self) -> bool:
        return not self.is_random and self.weights.upper() not in NAMED_WEIGHTS

    @property
    def resize_size(self) -> int:
        """The shorter side the weights' transform resizes to (torchvision's resize_size)."""
        return 232 if self.weights.upper() == "IMAGENET1K_V2" else 256

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE[self.engine]

    @property
    def effective_threads(self) -> int:
        return self.threads or process_share_of_cores()

    @property
    def int8_scheme(self) -> str:
        """The tag of the int8 quantisation: the one asked for, or the one that suits the
        CPU this process runs on (`cpu_features`)."""
        return self.quantization or this_cpu_int8_scheme()

    @property
    def fp32(self) -> EmbeddingOptions:
        """The same model at full precision (what int8 is calibrated and compared against)."""
        return EmbeddingOptions(**{**self.__dict__, "precision": "fp32", "quantization": ""})

    @classmethod
    def from_settings(cls, **overrides) -> EmbeddingOptions:
        from django.conf import settings

        values = dict(
            weights=settings.EMBEDDING_WEIGHTS,
            seed=settings.EMBEDDING_SEED,
            batch_size=settings.EMBEDDING_BATCH_SIZE,
            threads=settings.EMBEDDING_THREADS,
            engine=settings.EMBEDDING_ENGINE,
            precision=settings.EMBEDDING_PRECISION,
            quantization=settings.EMBEDDING_INT8_QUANTIZATION,
            cache_dir=str(settings.EMBEDDING_CACHE_DIR),
        )
        return cls(**{**values, **overrides})


def model_id_for(options: EmbeddingOptions) -> str:
    """The id stored with every vector, so a change of model can be detected.

    The engine is left out on purpose: fp32 vectors from ONNX Runtime and from torch agree
    to cosine 0.9999 (checked at export), so switching engines needs no reindex. int8
    vectors differ a little more, so they get their own id and are never mixed with fp32;
    the id names the int8 scheme too (`resnet50/IMAGENET1K_V1/int8-u8s8`), as models
    quantised for different CPUs give different vectors.
    Cheap: it does not load the model. A state-dict file is identified by a hash of its
    contents, computed once per process and path.
    """
    if options.is_random:
        base = f"resnet50/random-seed{options.seed}"
    elif options.is_file:
        base = f"resnet50/file-{_file_digest(options.weights)}"
    else:
        base = f"resnet50/{options.weights.upper()}"
    return base if options.precision == "fp32" else f"{base}/int8-{options.int8_scheme}"


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


# How many processes of one Celery worker share this machine's cores (see share_cores).
_sibling_processes = 1


def share_cores(processes: int) -> None:
    """Say that this process is one of `processes` pool processes of a worker, so that
    automatic thread counts (EMBEDDING_THREADS=0) divide the cores between them. Indexing
    is throughput work: two processes with one inference thread each index ~1.4x faster
    on 2 cores than one process with two threads, as decoding, thumbnails and database
    writes of one overlap the other's forward pass (`make bench`)."""
    global _sibling_processes
    _sibling_processes = max(1, processes)


def process_share_of_cores() -> int:
    """The cores this process may keep busy: all it may use, divided between the pool
    processes of a worker (share_cores). Sizes the inference pool (EMBEDDING_THREADS=0)
    and the local vector store's scan."""
    return max(1, usable_cores() // _sibling_processes)

"""ResNet50 on ONNX Runtime: exported once from the torch network, cached on disk.

The export needs torch; running the cached file does not, so once the file exists web and
worker processes never import torch (it costs hundreds of megabytes per process).

Cache files are named by model id, opset and ONNX Runtime version, written to a temporary
name and renamed into place, under a file lock so that a web process and a worker starting
at once export once. An export is kept only if ONNX Runtime and torch embed a fixed set
of pictures to cosine >= `MIN_AGREEMENT`; otherwise it is refused with an error.

int8 models are quantised with the scheme that suits the CPU (`cpu_features`), whose tag
is in the model id and so in the file name.
"""

from __future__ import annotations

import fcntl
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from search.embedding.cpu_features import INT8_SCHEMES
from search.embedding.options import (
    EmbeddingOptions,
    EmbeddingWeightsUnavailable,
    model_id_for,
)
from search.embedding.preprocessing import CROP_SIZE, preprocess_batch

logger = logging.getLogger(__name__)

OPSET = 17
MIN_AGREEMENT = 0.9999  # cosine between the two engines' vectors of the same picture
# A floor against a broken quantisation (saturated sums, say), not the judge of quality:
# `compare_precision` measures int8 against fp32 on the catalog itself.
MIN_INT8_AGREEMENT = 0.98
INPUT, OUTPUT = "pixels", "features"


class EmbeddingExportRefused(EmbeddingWeightsUnavailable):
    """The exported model does not give the same vectors as torch (or the int8 model as
    fp32); it was not cached."""


class OnnxEngine:
    """An ONNX Runtime session with one intra-op pool of `effective_threads` threads."""

    name = "onnx"

    def __init__(self, options: EmbeddingOptions):
        self.path = model_file(options)
        try:
            self._session = open_session(self.path, options.effective_threads)
        except Exception as exc:  # ONNX Runtime raises its own types for unreadable models
            # A cached file that no longer loads (damaged, or edited by hand) is made again
            # once rather than failing every search until someone deletes it.
            logger.warning("Cached model %s does not load (%s); exporting it again", self.path, exc)
            self.path.unlink(missing_ok=True)
            self.path = model_file(options)
            self._session = open_session(self.path, options.effective_threads)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Raw (n, 2048) features for an (n, 3, 224, 224) float32 batch."""
        return self._session.run([OUTPUT], {INPUT: pixels})[0]


def open_session(path: Path, threads: int):
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Pool threads spin between operators (waking a sleeping thread for each of the
    # network's ~70 parallel steps cost 8-15 ms per picture), but for 0.1 ms only: by
    # default they spin on for ~17 ms after a run, taking the cores from request threads
    # and from the other process (web or worker) on the same machine (`make bench`).
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    session_options.add_session_config_entry("session.intra_op.spin_duration_us", "100")
    return ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])


def cache_path(options: EmbeddingOptions) -> Path:
    """Where the model file for these options lives (whether or not it exists yet)."""
    import onnxruntime as ort
    from django.conf import settings

    folder = Path(options.cache_dir or settings.EMBEDDING_CACHE_DIR)
    slug = model_id_for(options).replace("/", "__")
    return folder / f"{slug}.opset{OPSET}.ort{ort.__version__}.onnx"


def model_file(options: EmbeddingOptions) -> Path:
    """The cached model file for these options, exported (or quantised) on first use."""
    path = cache_path(options)
    if path.exists():
        return path
    with ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_file_lock(path.with_name(path.name + ".lock")))
        except OSError as exc:
            raise EmbeddingWeightsUnavailable(
                f"The model cache {path.parent} cannot be written ({exc}); set "
                "EMBEDDING_CACHE_DIR to a writable folder, or EMBEDDING_ENGINE=torch."
            ) from exc
        if path.exists():  # another process made it while this one waited
            return path
        if options.precision == "int8":
            quantize(options, reference_images(calibration=True), path=path)
        else:
            export(options, path)
    return path


def export(options: EmbeddingOptions, path: Path) -> None:
    """Export the torch network to `path`, after checking both engines agree."""
    import torch

    from search.embedding.torch_engine import build_network

    logger.info("Exporting %s to ONNX at %s", model_id_for(options), path)
    network = build_network(options)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                network,
                (torch.zeros(1, 3, CROP_SIZE, CROP_SIZE),),
                str(temporary),
                dynamo=False,  # needs neither onnxscript nor a tracing-time compiler
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
        pixels = preprocess_batch(reference_images(), options.resize_size)
        with torch.inference_mode():
            expected = network(torch.from_numpy(pixels)).numpy()
        session = open_session(temporary, options.effective_threads)
        agreement = cosines(expected, session.run([OUTPUT], {INPUT: pixels})[0])
        if agreement.min() < MIN_AGREEMENT:
            raise EmbeddingExportRefused(
                f"The ONNX export of {model_id_for(options)} disagrees with torch (cosine "
                f"{agreement.min():.6f} < {MIN_AGREEMENT}); it was not cached. Set "
                "EMBEDDING_ENGINE=torch, or try another onnxruntime version."
            )
        os.replace(temporary, path)
        logger.info("ONNX model cached (agreement with torch: cosine >= %.7f)", agreement.min())
    finally:
        temporary.unlink(missing_ok=True)


def quantize(
    options: EmbeddingOptions, calibration: Sequence[Image.Image], path: Path | None = None
) -> Path:
    """Static int8 quantisation of the fp32 model, calibrated on `calibration` pictures;
    written to `path` (default: the int8 options' cache path).

    Weights per channel, activations per tensor, with the signedness (and reduce_range) of
    the options' `int8_scheme`. The QDQ format, which ONNX Runtime fuses into its integer
    kernels when it loads the model: on a 2-core AMD EPYC with VNNI it ran as fast as the
    QOperator format (QLinearConv), with the same vectors. The model is kept only if
    its vectors of the reference photos agree with fp32's to cosine `MIN_INT8_AGREEMENT`.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = path or cache_path(options)
    scheme = INT8_SCHEMES[options.int8_scheme]
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    source = model_file(options.fp32)
    pixels = preprocess_batch(calibration, options.resize_size)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._rows = iter(range(len(pixels)))

        def get_next(self):
            row = next(self._rows, None)
            return None if row is None else {INPUT: pixels[row : row + 1]}

    logger.info("Quantising %s on %d pictures", model_id_for(options), len(pixels))
    prepared = path.with_name(f"{path.name}.{os.getpid()}.pre.tmp")
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(temporary),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=scheme.reduce_range,
            activation_type=types[scheme.activations],
            weight_type=types[scheme.weights],
        )
        photos = {INPUT: preprocess_batch(reference_images(), options.resize_size)}
        expected = open_session(source, options.effective_threads).run([OUTPUT], photos)
        got = open_session(temporary, options.effective_threads).run([OUTPUT], photos)
        agreement = cosines(expected[0], got[0])
        if agreement.min() < MIN_INT8_AGREEMENT:
            raise EmbeddingExportRefused(
                f"The int8 model {model_id_for(options)} disagrees with fp32 (cosine "
                f"{agreement.min():.4f} < {MIN_INT8_AGREEMENT}); it was not cached. Set "
                "EMBEDDING_PRECISION=fp32."
            )
        os.replace(temporary, path)
        logger.info("int8 model cached (agreement with fp32: cosine >= %.5f)", agreement.min())
    finally:
        prepared.unlink(missing_ok=True)
        temporary.unlink(missing_ok=True)
    return path


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def reference_images(calibration: bool = False) -> list[Image.Image]:
    """Real photos to check an export against (4) or to calibrate int8 on (about 60):
    scikit-image's sample photos, which ship with the package, plus flipped and cropped
    copies for calibration. Synthetic pictures stand in where scikit-image is missing."""
    try:
        import skimage.data

        folder = Path(skimage.data.__file__).parent
        files = sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg"))
        photos = [Image.open(file).convert("RGB") for file in files]
    except ImportError:
        photos = []
    if len(photos) < 4:
        rng = np.random.default_rng(0)
        photos += [
            Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) for _ in range(4)
        ]
    if not calibration:
        return photos[:4]
    variants = []
    for photo in photos:
        width, height = photo.size
        variants += [
            photo,
            photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            photo.crop((width // 4, height // 4, width, height)),
        ]
    return variants


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

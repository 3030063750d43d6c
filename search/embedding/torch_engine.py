"""ResNet50 in eager PyTorch: builds the network from the configured weights, runs it.

Also the source of the ONNX engine's model, which is exported from this network.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from search.embedding.options import EmbeddingOptions, EmbeddingWeightsUnavailable

logger = logging.getLogger(__name__)


def build_network(options: EmbeddingOptions):
    """The torchvision ResNet50 for these weights, classifier removed, in eval mode."""
    import torch
    from torchvision.models import ResNet50_Weights, resnet50

    if options.is_random:
        # Seeded without disturbing the process's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            model = resnet50(weights=None)
        logger.warning(
            "EMBEDDING_WEIGHTS=random: embeddings come from an untrained network; "
            "similarity results are not meaningful."
        )
    elif options.is_file:
        model = resnet50(weights=None)
        model.load_state_dict(_load_state_dict(options.weights))
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

    model.fc = torch.nn.Identity()  # keep the 2048-d pooled features, drop the classifier
    model.eval()
    return model


class TorchEngine:
    """Eager PyTorch. Every call must come from the same thread (see `encoder`): each
    thread that runs torch operators gets its own OpenMP pool."""

    name = "torch"

    def __init__(self, options: EmbeddingOptions):
        import torch

        torch.set_num_threads(options.effective_threads)
        self._torch = torch
        self._model = build_network(options)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Raw (n, 2048) features for an (n, 3, 224, 224) float32 batch."""
        with self._torch.inference_mode():
            return self._model(self._torch.from_numpy(pixels)).numpy()


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

"""The weights' evaluation transform, in Pillow and numpy (no torch needed).

It reproduces torchvision's `ResNet50_Weights.*.transforms()` on PIL images step by step:
resize the shorter side to `resize_size` with Pillow's bilinear filter (which antialiases),
centre-crop 224 x 224 with torchvision's rounding, scale to [0, 1], normalise with the
ImageNet mean and standard deviation, and lay out channels first. Both engines are fed
from here, so a query and a catalog copy of the same picture always get the same input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

CROP_SIZE = 224
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side at `shorter`, as torchvision computes it."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def preprocess(image: Image.Image, resize_size: int) -> np.ndarray:
    """One picture as a (3, 224, 224) float32 array, ready for the network."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = resized_size(*image.size, resize_size)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    width, height = image.size
    # torchvision's centre crop rounds half to even, as round() does.
    left = round((width - CROP_SIZE) / 2.0)
    top = round((height - CROP_SIZE) / 2.0)
    image = image.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
    pixels = (pixels - _MEAN) / _STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def preprocess_batch(images: Sequence[Image.Image], resize_size: int) -> np.ndarray:
    """An (n, 3, 224, 224) float32 batch."""
    batch = np.empty((len(images), 3, CROP_SIZE, CROP_SIZE), dtype=np.float32)
    for index, image in enumerate(images):
        batch[index] = preprocess(image, resize_size)
    return batch

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from search.embedding import (
    DIMENSION,
    EmbeddingOptions,
    EmbeddingWeightsUnavailable,
    ImageEncoder,
    get_encoder,
    model_id_for,
)
from search.imaging import decode_image
from tests.conftest import encode, photo

RANDOM = EmbeddingOptions(weights="random", seed=0)
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png"]


@pytest.fixture(scope="module")
def encoder():
    return get_encoder(RANDOM)


def test_it_gives_2048_dimensional_unit_vectors(encoder):
    vectors = encoder.embed_batch([photo(name) for name in NAMES[:2]])
    assert vectors.shape == (2, DIMENSION)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_random_weights_are_deterministic_for_a_seed(encoder):
    again = ImageEncoder(RANDOM)  # a second, independently built model
    other_seed = ImageEncoder(EmbeddingOptions(weights="random", seed=1))
    image = photo("coffee.png")
    assert np.array_equal(encoder.embed_one(image), again.embed_one(image))
    assert not np.allclose(encoder.embed_one(image), other_seed.embed_one(image))


def test_a_batch_equals_single_calls(encoder):
    images = [photo(name) for name in NAMES]
    batch = encoder.embed_batch(images, batch_size=2)
    singles = np.stack([encoder.embed_one(image) for image in images])
    assert np.allclose(batch, singles, atol=1e-5)


def test_an_exif_rotated_copy_gives_nearly_the_same_vector(encoder):
    upright = photo("astronaut.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; viewers rotate it 90 degrees counter-clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_270)
    limits = {"max_bytes": 10**8, "max_pixels": 10**8}
    original = encoder.embed_one(decode_image(encode(upright, quality=95), **limits).image)
    rotated = encoder.embed_one(
        decode_image(encode(stored, quality=95, exif=exif.tobytes()), **limits).image
    )
    unrotated = encoder.embed_one(stored)  # the same pixels with EXIF ignored
    others = encoder.embed_batch([photo(name) for name in NAMES[1:]])
    # An untrained network maps every photo close together, so compare distances: the
    # rotated copy must be nearer than any other photo, and nearer than ignoring EXIF is.
    distance = 1 - float(original @ rotated)
    assert distance < 1e-4
    assert distance < (1 - float(original @ unrotated)) / 5
    assert distance < (1 - (others @ original).max()) / 5


def test_a_local_state_dict_file_is_loaded(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(7)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    from_file = ImageEncoder(EmbeddingOptions(weights=str(path)))
    assert from_file.model_id.startswith("resnet50/file-")
    image = photo("rocket.jpg")
    assert np.allclose(
        from_file.embed_one(image),
        ImageEncoder(EmbeddingOptions(weights="random", seed=7)).embed_one(image),
        atol=1e-5,
    )


def test_a_missing_weights_file_names_the_options(tmp_path):
    with pytest.raises(EmbeddingWeightsUnavailable, match=r"IMAGENET1K_V1.*random"):
        ImageEncoder(EmbeddingOptions(weights=str(tmp_path / "nope.pth")))


def test_a_failed_download_names_the_alternatives(monkeypatch, tmp_path):
    import torchvision.models._api as weights_api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    with pytest.raises(EmbeddingWeightsUnavailable, match=r"state-dict file.*random"):
        ImageEncoder(EmbeddingOptions(weights="IMAGENET1K_V1"))


def test_model_ids_name_the_weights():
    assert model_id_for(EmbeddingOptions()) == "resnet50/IMAGENET1K_V1"
    assert model_id_for(EmbeddingOptions(weights="imagenet1k_v2")) == "resnet50/IMAGENET1K_V2"
    assert model_id_for(RANDOM) == "resnet50/random-seed0"

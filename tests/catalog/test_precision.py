"""int8: calibration on the catalog, the agreement report, and the switch between precisions."""

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.models import CatalogImage
from catalog.offline.precision import int8_calibrate, precision_agreement
from catalog.pipeline.indexing import images_index, original_bytes
from search.decoding import decode_upload
from search.embedding import EmbeddingOptions, ImageEncoder, model_id_for
from search.embedding.cpu_features import this_cpu_int8_scheme
from search.embedding.onnx_engine import cache_path
from tests.catalog.test_services import create

pytestmark = pytest.mark.django_db
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png", "camera.png"]


@pytest.fixture
def catalog():
    images = [create(name) for name in NAMES]
    images_index(image_ids=[image.pk for image in images])
    return images


def test_calibration_uses_the_catalog_once_it_is_big_enough(catalog, settings, tmp_path):
    settings.EMBEDDING_CACHE_DIR = tmp_path  # never replace the shared test model
    small = int8_calibrate(min_catalog=len(NAMES) + 1)
    assert (small.source, small.pictures > len(NAMES)) == ("demo", True)
    calibration = int8_calibrate(min_catalog=len(NAMES))
    assert (calibration.source, calibration.pictures) == ("catalog", len(NAMES))
    int8 = EmbeddingOptions.from_settings(precision="int8")
    assert calibration.path == cache_path(int8) and calibration.path.is_file()
    assert calibration.model_id == f"resnet50/random-seed0/int8-{this_cpu_int8_scheme()}"
    assert f"int8-{this_cpu_int8_scheme()}" in calibration.path.name
    vectors = ImageEncoder(int8).embed_batch([])
    assert vectors.shape == (0, 2048)


def test_the_agreement_report_compares_int8_with_fp32_on_the_catalog(catalog):
    report = precision_agreement(top_k=3)
    assert report.int8_model == model_id_for(EmbeddingOptions.from_settings(precision="int8"))
    assert report.pictures == len(NAMES) and report.top_k == 3
    assert 0.99 <= report.min_cosine <= report.mean_cosine <= 1.0
    assert 0.0 <= report.min_overlap <= report.mean_overlap <= 1.0


def test_the_agreement_command_prints_cosines_and_neighbour_overlap(catalog, capsys):
    call_command("compare_precision", "--top-k", "3")
    out = capsys.readouterr().out
    assert f"{len(NAMES)} catalog pictures, int8 against fp32" in out
    assert "cosine of the two vectors: mean 0.9" in out and "top-3 neighbours kept" in out


def test_the_agreement_command_needs_a_catalog():
    with pytest.raises(CommandError, match="at least 2"):
        call_command("compare_precision")


def test_switching_to_int8_makes_every_image_stale_and_reindexing_moves_it(catalog, settings):
    settings.EMBEDDING_PRECISION = "int8"
    int8_model = f"resnet50/random-seed0/int8-{this_cpu_int8_scheme()}"
    stale = CatalogImage.objects.exclude(embedding_model=int8_model)
    assert stale.count() == len(NAMES)
    images_index(image_ids=[image.pk for image in catalog])
    assert not stale.exists()
    row = CatalogImage.objects.get(pk=catalog[0].pk)
    fp32 = ImageEncoder(EmbeddingOptions.from_settings(precision="fp32"))
    picture = decode_upload(original_bytes(row)).image
    assert float(np.frombuffer(row.embedding, dtype=np.float32) @ fp32.embed_one(picture)) > 0.99

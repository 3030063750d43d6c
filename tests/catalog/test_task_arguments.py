"""Tasks take their arguments from the broker, and act only on what the catalog made: a
message naming something else (written by whoever reached the broker) changes nothing."""

import pytest

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from catalog.tasks import remove_from_index
from search.vectorstores import get_vector_store
from tests.conftest import photo_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def indexed() -> CatalogImage:
    image, _ = services.image_create(file=photo_file("coffee.png"))
    images_index(image_ids=[image.pk])
    return image


def test_removing_the_vector_of_a_live_image_is_refused(indexed, caplog):
    remove_from_index.apply(args=[[indexed.vector_id]], throw=True)
    assert get_vector_store().count() == 1
    assert any(record.levelname == "ERROR" for record in caplog.records)


@pytest.mark.parametrize("vector_id", ["../x", "abc", "", "1 OR 1=1", "²"])
def test_removing_an_id_the_catalog_never_makes_is_refused(indexed, vector_id, caplog):
    remove_from_index.apply(args=[[vector_id]], throw=True)
    assert get_vector_store().count() == 1
    assert any("not a catalog image's vector" in record.getMessage() for record in caplog.records)


def test_the_vector_of_a_deleted_image_is_removed(indexed):
    CatalogImage.objects.filter(pk=indexed.pk).delete()
    remove_from_index.apply(args=[[indexed.vector_id]], throw=True)
    assert get_vector_store().count() == 0

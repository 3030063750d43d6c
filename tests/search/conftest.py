"""Fixtures shared by the search tests."""

import pytest

from catalog import services
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_file

DEMO = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "brick.png"]


@pytest.fixture
def catalog():
    """Five real photos, indexed; by file name."""
    images = {}
    for name in DEMO:
        image, _ = services.image_create(file=photo_file(name), title=name.split(".")[0])
        images[name] = image
    images_index(image_ids=[i.pk for i in images.values()])
    return images

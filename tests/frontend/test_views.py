"""The search page rendered by the server: what people without JavaScript get."""

import pytest
from django.core.files.base import ContentFile

from catalog import services
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_bytes, photo_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog():
    images = [services.image_create(file=photo_file(n))[0] for n in ("coffee.png", "rocket.jpg")]
    images_index(image_ids=[image.pk for image in images])
    return images


def grid(page: str) -> str:
    """The server-rendered results, without the <template> the JavaScript clones."""
    return page.split('<ol id="results"')[1].split("</ol>")[0]


def test_the_page_says_when_the_catalog_is_empty_and_the_weights_are_random(client):
    page = client.get("/").content.decode()
    assert 'id="empty-catalog"' in page
    assert "random weights" in page
    assert 'id="dropzone" tabindex="0"' in page


def test_posting_a_file_renders_the_results_grid(client, catalog):
    upload = ContentFile(photo_bytes("coffee.png"), name="coffee.jpg")
    response = client.post("/", {"image": upload, "top_k": "6"})
    page = response.content.decode()
    assert response.status_code == 200
    assert grid(page).count('class="result"') == 2
    assert grid(page).index(">coffee<") < grid(page).index(">rocket<")
    assert "100.0%" in grid(page)
    assert 'id="empty-catalog"' not in page


def test_find_similar_without_javascript_searches_by_id(client, catalog):
    coffee, _ = catalog
    page = client.post("/", {"image_id": coffee.pk, "top_k": "6"}).content.decode()
    assert grid(page).count('class="result"') == 1
    assert ">rocket<" in grid(page)


def test_a_bad_file_gets_a_plain_error_and_the_form_again(client, catalog):
    response = client.post("/", {"image": ContentFile(b"hello", name="notes.txt")})
    page = response.content.decode()
    assert response.status_code == 400
    assert 'class="error"' in page and "not an image" in page
    assert 'id="search-form"' in page


def test_posting_nothing_asks_for_an_image(client):
    response = client.post("/", {})
    assert response.status_code == 400
    assert "Choose an image" in response.content.decode()

"""A similarity threshold: `min_similarity` (0-100, the scale of `similarity`) drops weaker
matches, through the API, the search page's form and its script."""

import re

import pytest

from tests.conftest import b64, photo_bytes, photo_file
from tests.search.test_api import SEARCH, error_of, search

pytestmark = pytest.mark.django_db


def similarities(client, **body) -> list[float]:
    answer = search(client, image=b64(photo_bytes("coffee.png")), **body)
    assert answer.status_code == 200, answer.content
    return [hit["similarity"] for hit in answer.json()["results"]]


def test_a_threshold_drops_the_weaker_matches_and_keeps_the_rest_in_order(client, catalog):
    everything = similarities(client)
    cuts = sorted(set(everything))
    assert len(cuts) >= 2  # else no threshold could drop anything here
    for cut in cuts:
        assert similarities(client, min_similarity=cut) == [s for s in everything if s >= cut]
    assert similarities(client, min_similarity=0) == everything


def test_the_threshold_applies_to_searches_by_catalog_image_too(client, catalog):
    image_id = catalog["coffee.png"].pk
    everything = search(client, image_id=image_id).json()["results"]
    cut = everything[0]["similarity"] + 0.05
    kept = search(client, image_id=image_id, min_similarity=cut).json()["results"]
    assert [hit["id"] for hit in kept] == [
        hit["id"] for hit in everything if hit["similarity"] >= cut
    ]


@pytest.mark.parametrize("value", [-1, 100.5, "high", [50], True])
def test_a_bad_threshold_is_a_400_with_its_own_code(client, catalog, value):
    answer = search(client, image=b64(photo_bytes("coffee.png")), min_similarity=value)
    assert error_of(answer) == "invalid_min_similarity"


def test_multipart_searches_take_the_threshold_as_a_field(client, catalog):
    answer = client.post(SEARCH, {"image": photo_file("coffee.png"), "min_similarity": "100"})
    assert answer.status_code == 200
    assert all(hit["similarity"] >= 100 for hit in answer.json()["results"])


def test_the_no_script_form_offers_and_applies_the_threshold(client, catalog):
    shown = re.compile(r'<input id="min-similarity"[^>]*value="([^"]*)"')
    assert shown.search(client.get("/").content.decode()).group(1) == "0"
    everything = client.post("/", {"image": photo_file("coffee.png")}).content.decode()
    strict = client.post("/", {"image": photo_file("coffee.png"), "min_similarity": "100"})
    assert strict.status_code == 200
    html = strict.content.decode()
    assert shown.search(html).group(1) == "100"
    exact = [s for s in similarities(client) if s >= 100]

    def results(page):  # less the script's one <template> copy
        return page.count('class="result"') - 1

    assert results(html) == len(exact) < results(everything)


def test_the_no_script_form_refuses_a_bad_threshold(client, catalog):
    answer = client.post("/", {"image": photo_file("coffee.png"), "min_similarity": "120"})
    assert answer.status_code == 400
    assert 'data-error-code="invalid_min_similarity"' in answer.content.decode()

"""Tag filters on POST /api/search/ and the tag list at GET /api/tags/."""

import pytest

from catalog import services
from tests.conftest import TAGGED, b64, photo_bytes, photo_file
from tests.search.test_api import SEARCH, error_of, search

pytestmark = pytest.mark.django_db


def titles(answer) -> set[str]:
    assert answer.status_code == 200, answer.content
    return {hit["title"] for hit in answer.json()["results"]}


def test_only_images_carrying_one_of_the_tags_come_back(client, tagged):
    query = b64(photo_bytes("coffee.png"))
    assert titles(search(client, image=query, tags=["space"])) == {"astronaut", "rocket"}
    assert titles(search(client, image=query, tags=["SPACE ", "food"])) == {
        "astronaut",
        "rocket",
        "coffee",
    }
    assert titles(search(client, image=query, tags=["no-such-tag"])) == set()
    assert len(titles(search(client, image=query, tags=[]))) == len(TAGGED)


def test_a_filtered_search_still_fills_top_k_from_the_matching_images(client, tagged):
    # The nearest image overall is coffee itself; filtered, the best "animal" still comes.
    query = b64(photo_bytes("coffee.png"))
    answer = search(client, image=query, tags=["animal"], top_k=1)
    assert titles(answer) == {"chelsea"}
    answer = search(client, image=query, tags=["space"], top_k=2)
    assert len(answer.json()["results"]) == 2


def test_searching_by_catalog_image_takes_tags_too(client, tagged):
    answer = search(client, image_id=tagged["coffee.png"].pk, tags=["space"])
    assert titles(answer) == {"astronaut", "rocket"}


def test_multipart_and_form_searches_take_comma_separated_tags(client, tagged):
    answer = client.post(SEARCH, {"image": photo_file("coffee.png"), "tags": "space, food"})
    assert titles(answer) == {"astronaut", "rocket", "coffee"}


@pytest.mark.parametrize(
    "tags", [12, [1, 2], {"a": 1}, ["x" * 101], [f"tag{i}" for i in range(51)]]
)
def test_bad_tags_are_a_400_with_their_own_code(client, tagged, tags):
    answer = search(client, image=b64(photo_bytes("coffee.png")), tags=tags)
    assert error_of(answer) == "invalid_tags"


def test_the_tag_list_counts_searchable_images(client, tagged):
    services.images_set_active(images=[tagged["rocket.jpg"]], is_active=False)
    answer = client.get("/api/tags/")
    assert answer.status_code == 200
    assert answer.json() == {
        "tags": [
            {"tag": "animal", "count": 1},
            {"tag": "food", "count": 1},
            {"tag": "person", "count": 1},
            {"tag": "space", "count": 1},
            {"tag": "texture", "count": 1},
        ]
    }

"""Search answers per item: the pictures of one outside item (one external id) make one
result, its best-matching picture, and `top_k` counts items; in both vector stores."""

import pytest

from catalog import items
from catalog.items import ItemFields, PictureSource
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from tests.conftest import b64, encode, photo, photo_bytes

pytestmark = pytest.mark.django_db
SEARCH = "/api/search/"
OTHERS = ["astronaut.png", "chelsea.png", "rocket.jpg", "brick.png"]
# Three pictures of one mug: the same photo saved three ways, so all three rank above
# anything else for a search with any of them, whatever the (random test) weights.
MUG_PICTURES = [encode(photo("coffee.png"), quality=quality) for quality in (95, 70, 40)]


@pytest.fixture(params=["local", "pinecone"])
def store(request, settings):
    if request.param == "pinecone":
        request.getfixturevalue("use_pinecone")
    return request.param


@pytest.fixture
def catalog(store):
    """A mug with three pictures, and four items of one picture each."""
    for external_id, pictures in [("mug", MUG_PICTURES)] + [
        (name.split(".")[0], [photo_bytes(name)]) for name in OTHERS
    ]:
        fields = ItemFields.cleaned(external_id=external_id, title=external_id)
        sources = [PictureSource(data=data) for data in pictures]
        items.item_upsert(fields=fields, pictures=sources)
    images_index(image_ids=list(CatalogImage.objects.values_list("pk", flat=True)))
    return {image.sha256: image for image in CatalogImage.objects.all()}


def search(client, **body):
    response = client.post(SEARCH, body, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()["results"]


@pytest.mark.parametrize("picture", range(3))
def test_an_item_with_three_pictures_appears_once_whichever_is_searched(client, catalog, picture):
    results = search(client, image=b64(MUG_PICTURES[picture]), top_k=5)
    assert [r["external_id"] for r in results].count("mug") == 1
    first = results[0]
    assert first["external_id"] == "mug"
    # The result is the picture that matched best: the one searched with.
    assert (
        CatalogImage.objects.get(pk=first["id"]).sha256
        == items.hashlib.sha256(MUG_PICTURES[picture]).hexdigest()
    )


def test_top_k_counts_items_when_several_pictures_of_one_item_rank_first(client, catalog):
    results = search(client, image=b64(MUG_PICTURES[0]), top_k=3)
    assert len(results) == 3
    assert len({r["external_id"] for r in results}) == 3


def test_every_item_comes_back_when_top_k_asks_for_all(client, catalog):
    results = search(client, image=b64(MUG_PICTURES[0]), top_k=10)
    assert sorted(r["external_id"] for r in results) == ["astronaut", "brick", "chelsea", "mug",
                                                         "rocket"]  # fmt: skip


def test_per_picture_answers_each_picture_on_its_own(client, catalog):
    results = search(client, image=b64(MUG_PICTURES[0]), top_k=3, per_picture=True)
    assert [r["external_id"] for r in results] == ["mug", "mug", "mug"]


def test_searching_by_a_catalog_picture_leaves_out_its_whole_item(client, catalog):
    mug = CatalogImage.objects.filter(external_id="mug").first()
    results = search(client, image_id=mug.pk, top_k=10)
    assert "mug" not in [r["external_id"] for r in results]
    assert len(results) == len(OTHERS)
    pictures = search(client, image_id=mug.pk, top_k=10, per_picture=True)
    assert [r["external_id"] for r in pictures].count("mug") == 2  # all but itself


def test_pictures_without_an_external_id_are_each_their_own_result(client, catalog):
    CatalogImage.objects.filter(external_id="mug").update(external_id="")
    results = search(client, image=b64(MUG_PICTURES[0]), top_k=3)
    assert [r["external_id"] for r in results] == ["", "", ""]
    assert len({r["id"] for r in results}) == 3


def test_a_bad_per_picture_is_refused(client, catalog):
    response = client.post(SEARCH, {"image": b64(MUG_PICTURES[0]), "per_picture": "sometimes"},
                           content_type="application/json")  # fmt: skip
    assert (response.status_code, response.json()["error"]) == (400, "invalid_per_picture")


def test_the_store_is_asked_again_while_pictures_of_one_item_fill_the_answer(
    client, catalog, monkeypatch
):
    from search import services

    # No spare matches: the first answer (2 matches) holds only the mug's pictures.
    monkeypatch.setattr(services, "SPARE_MATCHES", 0)
    results = search(client, image=b64(MUG_PICTURES[0]), top_k=2)
    assert len({r["external_id"] for r in results}) == 2

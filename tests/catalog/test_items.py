"""Items of an outside catalog kept by external id (catalog.items): heavy work only where
something changed, pictures dropped by the source deactivated and never deleted."""

import pytest

from catalog import items, services
from catalog.item_fields import InvalidItemField, clean_link_url, clean_metadata
from catalog.items import ItemFields, Outcome, PictureSource
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from search.imaging import ImageRejected
from search.vectorstores import get_vector_store
from tests.conftest import photo_bytes, photo_file

pytestmark = pytest.mark.django_db


def upsert(external_id="sku-1", pictures=("coffee.png",), **values):
    fields = ItemFields.cleaned(external_id=external_id, **values)
    sources = [PictureSource(data=photo_bytes(name), name=name) for name in pictures]
    return items.item_upsert(fields=fields, pictures=sources)


def test_a_new_item_is_created_with_its_fields_and_queued_for_indexing():
    result = upsert(
        title="Mug", tags="kitchen", link_url="https://shop.example/mug", metadata={"price": 12}
    )
    assert (result.outcome, result.created) == (Outcome.CREATED, 1)
    image = CatalogImage.objects.get()
    assert (image.external_id, image.title, image.tags) == ("sku-1", "Mug", ["kitchen"])
    assert (image.link_url, image.metadata) == ("https://shop.example/mug", {"price": 12})
    assert image.status == CatalogImage.Status.PENDING and image.staged_file


def test_the_same_item_again_is_unchanged_and_stores_nothing():
    upsert(title="Mug")
    before = CatalogImage.objects.get()
    result = upsert(title="Mug")
    assert (result.outcome, result.changed, result.created) == (Outcome.UNCHANGED, [], 0)
    after = CatalogImage.objects.get()
    assert (after.pk, after.updated_at, after.staged_file.name) == (
        before.pk,
        before.updated_at,
        before.staged_file.name,
    )


def test_a_new_title_updates_the_row_and_reindexes_from_the_cached_embedding():
    upsert(title="Mug")
    image = CatalogImage.objects.get()
    images_index(image_ids=[image.pk])
    result = upsert(title="Big mug", metadata={"colour": "blue"})
    assert (result.outcome, result.changed) == (Outcome.UPDATED, ["title", "metadata"])
    image.refresh_from_db()
    assert (image.title, image.metadata, image.status) == (
        "Big mug",
        {"colour": "blue"},
        CatalogImage.Status.INDEXED,
    )
    images_index(image_ids=[image.pk])  # what the queued task does: no model run needed
    [match] = get_vector_store().query(
        image.embedding_vector, top_k=1, where={"title": ["Big mug"]}
    )
    assert match.id == str(image.pk)


def test_the_vector_store_keeps_the_items_fields_beside_the_vector():
    upsert(title="Mug", link_url="https://shop.example/mug", metadata={"price": 12})
    image = CatalogImage.objects.get()
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    matches = get_vector_store().query(
        image.embedding_vector, top_k=1, where={"external_id": ["sku-1"]}
    )
    assert [match.id for match in matches] == [str(image.pk)]
    price = get_vector_store().query(
        image.embedding_vector, top_k=1, where={"metadata.price": [12]}
    )
    assert [match.id for match in price] == [str(image.pk)]


def test_a_changed_picture_is_a_new_image_and_the_old_one_is_deactivated_not_deleted():
    upsert(pictures=["coffee.png"])
    old = CatalogImage.objects.get()
    result = upsert(pictures=["chelsea.png"])
    assert (result.outcome, result.changed, result.created, result.deactivated) == (
        Outcome.UPDATED,
        ["pictures"],
        1,
        1,
    )
    old.refresh_from_db()
    assert (old.is_active, old.deactivated_by_source) == (False, True)
    assert CatalogImage.objects.filter(external_id="sku-1", is_active=True).count() == 1


def test_a_picture_listed_again_is_activated_again_without_being_stored_again():
    upsert(pictures=["coffee.png"])
    upsert(pictures=["chelsea.png"])
    result = upsert(pictures=["coffee.png"])
    assert (result.outcome, result.created, result.deactivated) == (Outcome.UPDATED, 0, 1)
    coffee = CatalogImage.objects.get(sha256=result.images[0].sha256)
    assert (coffee.is_active, coffee.deactivated_by_source) == (True, False)
    assert CatalogImage.objects.count() == 2


def test_a_picture_a_curator_deactivated_stays_inactive_when_the_source_lists_it():
    upsert()
    image = CatalogImage.objects.get()
    services.images_set_active(images=[image], is_active=False)  # a takedown
    assert upsert().outcome == Outcome.UNCHANGED
    image.refresh_from_db()
    assert image.is_active is False


def test_an_explicit_is_active_applies_to_every_picture_of_the_item():
    upsert(pictures=["coffee.png", "chelsea.png"])
    result = upsert(pictures=["coffee.png", "chelsea.png"], is_active=False)
    assert (result.outcome, result.changed) == (Outcome.UPDATED, ["is_active"])
    assert not CatalogImage.objects.filter(is_active=True).exists()


def test_two_items_may_share_a_picture_but_uploads_of_the_same_bytes_are_one_image():
    upsert(external_id="red-mug")
    upsert(external_id="blue-mug")
    assert CatalogImage.objects.count() == 2
    uploaded, created = services.image_create(file=photo_file("coffee.png"))
    assert created is False  # the bytes are already in the catalog: that image answers
    assert uploaded.external_id in {"red-mug", "blue-mug"}


def test_a_picture_that_is_not_an_image_is_refused_and_the_item_is_left_as_it_was():
    upsert(title="Mug")
    fields = ItemFields.cleaned(external_id="sku-1", title="Changed")
    with pytest.raises(ImageRejected):
        items.item_upsert(fields=fields, pictures=[PictureSource(data=b"not a picture")])
    assert CatalogImage.objects.get().title == "Mug"


def test_a_dry_run_says_what_would_change_and_writes_nothing():
    upsert(title="Mug")
    fields = ItemFields.cleaned(external_id="sku-1", title="Big mug")
    result = items.item_upsert(
        fields=fields, pictures=[PictureSource(data=photo_bytes("chelsea.png"))], dry_run=True
    )
    assert (result.outcome, result.created, result.deactivated) == (Outcome.UPDATED, 1, 1)
    image = CatalogImage.objects.get()
    assert (image.title, image.is_active) == ("Mug", True)


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "data:text/html,x", "ftp://x.example/a", "//x.example", "x"]
)
def test_only_http_and_https_links_are_kept(link):
    with pytest.raises(InvalidItemField) as refused:
        clean_link_url(link)
    assert refused.value.code == "invalid_link_url"


@pytest.mark.parametrize(
    "metadata",
    [[1], "text", {"nested": {"a": 1}}, {"none": None}, {"n": float("nan")}, {"": 1}, {"l": [1]}],
)
def test_metadata_is_a_flat_object_of_plain_values(metadata):
    with pytest.raises(InvalidItemField) as refused:
        clean_metadata(metadata)
    assert refused.value.code == "invalid_metadata"


def test_metadata_larger_than_the_setting_is_refused_with_its_size(settings):
    settings.CATALOG_METADATA_MAX_BYTES = 20
    with pytest.raises(InvalidItemField, match="at most 20"):
        clean_metadata({"description": "a long description"})


def test_an_item_without_an_external_id_is_refused():
    with pytest.raises(InvalidItemField) as refused:
        ItemFields.cleaned(external_id="  ")
    assert refused.value.code == "invalid_external_id"


def test_moving_a_picture_into_an_item_that_holds_it_is_refused():
    upsert(external_id="sku-1")
    uploaded, _ = services.image_create(file=photo_file("chelsea.png"))
    upsert(external_id="sku-2", pictures=["chelsea.png"])
    with pytest.raises(InvalidItemField, match="already in item 'sku-2'"):
        services.image_update(image=uploaded, external_id="sku-2")


@pytest.mark.parametrize(
    "metadata",
    [{"n": 10**400}, {"n": 2**53 + 1}, {"n": "\ud800"}, {"\ud800": 1}, {"l": ["ok", "\udfff"]}],
)
def test_metadata_a_store_could_not_keep_is_refused_not_a_server_error(metadata):
    with pytest.raises(InvalidItemField) as refused:
        clean_metadata(metadata)
    assert refused.value.code == "invalid_metadata"


@pytest.mark.parametrize("title", ["\ud800 mug", True, ["a"], {"a": 1}])
def test_a_title_that_is_not_storable_text_is_refused(title):
    with pytest.raises(InvalidItemField) as refused:
        ItemFields.cleaned(external_id="sku-1", title=title)
    assert refused.value.code == "invalid_title"


@pytest.mark.parametrize("tags", [[1], 5, {"a": 1}, ["ok", "\ud800"], [None]])
def test_tags_that_are_not_texts_are_refused(tags):
    from search.tags import InvalidTags

    with pytest.raises(InvalidTags):
        ItemFields.cleaned(external_id="sku-1", tags=tags)


def test_pinecone_keeps_the_items_fields_beside_the_vector_and_follows_a_change(use_pinecone):
    upsert(title="Mug", link_url="https://shop.example/mug", metadata={"price": 12})
    image = CatalogImage.objects.get()
    images_index(image_ids=[image.pk])
    kept = use_pinecone.vectors("catalog")[str(image.pk)]["metadata"]
    assert (kept["external_id"], kept["link_url"], kept["metadata.price"]) == (
        "sku-1",
        "https://shop.example/mug",
        12,
    )
    upsert(title="Mug", link_url="https://shop.example/mug", metadata={"price": 10})
    images_index(image_ids=[image.pk])  # the queued re-index: from the cached embedding
    assert use_pinecone.vectors("catalog")[str(image.pk)]["metadata"]["metadata.price"] == 10


def test_a_numeric_title_is_kept_as_its_text():
    assert ItemFields.cleaned(external_id="sku-1", title=42).title == "42"


def test_a_refused_picture_after_the_first_is_named_by_its_place():
    fields = ItemFields.cleaned(external_id="sku-1")
    sources = [PictureSource(data=photo_bytes("coffee.png")), PictureSource(data=b"nope")]
    with pytest.raises(ImageRejected, match=r"^Picture 2: ") as refused:
        items.item_upsert(fields=fields, pictures=sources)
    assert refused.value.code == "not_an_image"
    assert not CatalogImage.objects.exists()

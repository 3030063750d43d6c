"""Near-duplicates (issue #12): found at indexing, flagged against DUPLICATE_SIMILARITY, and
curated in the admin's pairs page; staff see the flag in the catalog API."""

import pytest
from django.core.files.base import ContentFile

from catalog import selectors, services
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index, vector_record
from search.vectorstores import VectorStoreError, get_vector_store
from tests.catalog.test_access import user_client
from tests.conftest import TAGGED, encode, photo, photo_file
from tests.project_process import project_env, run_python

pytestmark = pytest.mark.django_db
LIST = "/admin/catalog/catalogimage/"
PAIRS = f"{LIST}duplicates/"
# The tests' random weights squeeze every score towards 100: the sample photos score
# 99.45-99.94 with each other and 99.995-99.999 with a resized, recompressed copy, so the
# default (95, for ImageNet weights) would flag them all. Copies still score highest, so
# the tests flag at this threshold instead.
RANDOM_WEIGHTS_THRESHOLD = 99.98


@pytest.fixture(autouse=True)
def threshold_for_random_weights(settings):
    settings.DUPLICATE_SIMILARITY = RANDOM_WEIGHTS_THRESHOLD


@pytest.fixture(params=["local", "pinecone"])
def store(request):
    """Each test that takes it runs on the local store and on the fake Pinecone."""
    if request.param == "pinecone":
        request.getfixturevalue("use_pinecone")
    return request.param


def copy_of(name: str, *, scale: float = 0.5, quality: int = 70) -> ContentFile:
    """Another file of the same picture: resized and recompressed, as copies travel."""
    image = photo(name)
    smaller = image.resize((round(image.width * scale), round(image.height * scale)))
    return ContentFile(encode(smaller, "JPEG", quality=quality), name=f"copy of {name}.jpg")


def add_and_index(file: ContentFile) -> CatalogImage:
    image, created = services.image_create(file=file)
    assert created
    images_index(image_ids=[image.pk])
    image.refresh_from_db()
    return image


def flagged() -> set[str]:
    images = selectors.with_duplicate_flag(CatalogImage.objects.all())
    return {str(image) for image in images if image.possible_duplicate}


# --- Found at indexing ------------------------------------------------------------------


def test_a_resized_recompressed_copy_is_flagged_with_its_original_as_nearest(store, tagged):
    original = tagged["astronaut.png"]
    copy = add_and_index(copy_of("astronaut.png"))

    assert copy.nearest_image_id == original.pk
    assert copy.nearest_similarity >= RANDOM_WEIGHTS_THRESHOLD
    assert copy.duplicate_checked_at is not None
    # The original was indexed first; the copy came closer, so its record names the copy.
    original.refresh_from_db()
    assert original.nearest_image_id == copy.pk
    assert original.nearest_similarity == copy.nearest_similarity
    assert flagged() == {"astronaut", "copy of astronaut.png"}


def test_different_photos_are_not_flagged(store, tagged):
    rows = CatalogImage.objects.filter(pk__in=[image.pk for image in tagged.values()])
    for image in rows:
        assert image.nearest_image_id in {other.pk for other in tagged.values()} - {image.pk}
        assert image.nearest_similarity < RANDOM_WEIGHTS_THRESHOLD, image
    assert flagged() == set()


def test_a_deactivated_neighbour_is_not_chosen_even_while_its_vector_remains(store, tagged):
    # In a test the vector's removal, queued for after the commit, never runs: as if the
    # worker had not got to it yet.
    services.images_set_active(images=[tagged["astronaut.png"]], is_active=False)
    assert str(tagged["astronaut.png"].pk) in get_vector_store().ids()

    copy = add_and_index(copy_of("astronaut.png"))
    assert copy.nearest_image_id != tagged["astronaut.png"].pk
    assert copy.nearest_similarity < RANDOM_WEIGHTS_THRESHOLD
    assert flagged() == set()


def test_only_vectors_of_the_current_model_are_compared(tagged):
    # Mid-way through a reindex to other weights, the original still has the old vector.
    original = CatalogImage.objects.get(pk=tagged["astronaut.png"].pk)
    get_vector_store().upsert(
        [vector_record(original, original.embedding_vector, "resnet50:old-weights")]
    )
    copy = add_and_index(copy_of("astronaut.png"))
    assert copy.nearest_image_id != original.pk


def test_a_batch_is_checked_with_one_query_to_the_store_and_finds_pairs_within_it(
    store, monkeypatch
):
    # Two photos and a copy of one, indexed in one batch as a worker's task takes them.
    files = [photo_file("rocket.jpg"), photo_file("coffee.png"), copy_of("coffee.png")]
    images = [services.image_create(file=file)[0] for file in files]
    vector_store, asked = get_vector_store(), []
    query_many = vector_store.query_many

    def counted_query_many(vectors, **options):
        asked.append(len(vectors))
        return query_many(vectors, **options)

    monkeypatch.setattr(vector_store, "query_many", counted_query_many)

    images_index(image_ids=[image.pk for image in images])

    assert asked == [3]
    rocket, coffee, copy = (CatalogImage.objects.get(pk=image.pk) for image in images)
    assert (coffee.nearest_image_id, copy.nearest_image_id) == (copy.pk, coffee.pk)
    assert rocket.nearest_image_id in {coffee.pk, copy.pk}
    assert flagged() == {"coffee", "copy of coffee.png"}


def test_deactivating_either_image_of_a_pair_clears_both_flags(tagged):
    copy = add_and_index(copy_of("astronaut.png"))
    services.images_set_active(images=[copy], is_active=False)
    assert flagged() == set()
    services.images_set_active(images=[copy], is_active=True)
    assert flagged() == {"astronaut", "copy of astronaut.png"}
    services.images_set_active(images=[tagged["astronaut.png"]], is_active=False)
    assert flagged() == set()


def test_deleting_the_nearest_image_empties_the_record(tagged):
    copy = add_and_index(copy_of("astronaut.png"))
    services.image_delete(image=tagged["astronaut.png"])
    copy.refresh_from_db()
    assert copy.nearest_image_id is None and copy.nearest_similarity is None
    assert copy.duplicate_checked_at is None  # so that the next reindex finds its next nearest
    assert flagged() == set()


def test_a_changed_setting_applies_without_reindexing(settings, tagged):
    copy = add_and_index(copy_of("astronaut.png"))
    assert copy.nearest_similarity < 100.0
    settings.DUPLICATE_SIMILARITY = copy.nearest_similarity + 0.1
    assert flagged() == set()
    settings.DUPLICATE_SIMILARITY = copy.nearest_similarity
    assert flagged() == {"astronaut", "copy of astronaut.png"}


def test_a_reindex_checks_images_never_checked_and_leaves_the_others(tagged):
    # Images indexed before this feature existed: checked by their next indexing run,
    # from the cached embedding, without the model.
    coffee, rocket = tagged["coffee.png"], tagged["rocket.jpg"]
    CatalogImage.objects.filter(pk=coffee.pk).update(
        nearest_image=None, nearest_similarity=None, duplicate_checked_at=None
    )
    rocket.refresh_from_db()
    report = images_index(image_ids=[coffee.pk, rocket.pk])
    assert report.embedded == []
    coffee.refresh_from_db()
    assert coffee.duplicate_checked_at is not None and coffee.nearest_image_id is not None
    assert (
        CatalogImage.objects.get(pk=rocket.pk).duplicate_checked_at == rocket.duplicate_checked_at
    )


def test_a_store_that_cannot_answer_leaves_the_image_indexed_for_the_retry_to_check(
    use_pinecone, tagged
):
    use_pinecone.fail_next(10, status=503, path_contains="query")
    image, _ = services.image_create(file=copy_of("astronaut.png"))
    with pytest.raises(VectorStoreError):
        images_index(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.status == CatalogImage.Status.INDEXED  # search finds it meanwhile
    assert image.duplicate_checked_at is None

    use_pinecone.reset_faults()
    images_index(image_ids=[image.pk])  # the task's retry
    image.refresh_from_db()
    assert image.nearest_image_id == tagged["astronaut.png"].pk


def test_pairs_come_once_whether_recorded_from_one_side_or_both(tagged):
    a, b, c, d, e = (tagged[name] for name in TAGGED)
    records = [(a, b, 99.99), (b, c, 99.995), (c, b, 99.995), (d, e, 99.985), (e, None, None)]
    for image, nearest, similarity in records:
        CatalogImage.objects.filter(pk=image.pk).update(
            nearest_image=nearest, nearest_similarity=similarity
        )
    pairs = [(row.pk, row.nearest_image_id) for row in selectors.duplicate_pairs()]
    assert pairs == [(min(b.pk, c.pk), max(b.pk, c.pk)), (a.pk, b.pk), (d.pk, e.pk)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("120", "DUPLICATE_SIMILARITY is a percentage: from 0 to 100."),
        ("-1", "DUPLICATE_SIMILARITY must be at least 0.0, not -1.0."),
        ("high", "DUPLICATE_SIMILARITY must be a number, not 'high'."),
    ],
)
def test_a_bad_duplicate_similarity_stops_start_up_saying_why(tmp_path, value, message):
    result = run_python(
        "import django; django.setup()", project_env(tmp_path, DUPLICATE_SIMILARITY=value)
    )
    assert result.returncode != 0
    assert message in result.stderr


# --- In the admin ------------------------------------------------------------------------


@pytest.fixture
def pairs(tagged):
    """Two pairs: astronaut and a copy, coffee and a smaller, more compressed copy."""
    return {
        "astronaut": add_and_index(copy_of("astronaut.png")),
        "coffee": add_and_index(copy_of("coffee.png", scale=0.8, quality=40)),
    }


def test_the_list_filters_possible_duplicates_and_shows_the_nearest_similarity(admin_client, pairs):
    page = admin_client.get(LIST, {"duplicate": "yes"}).content.decode()
    assert page.count('class="status-badge"') == 4
    assert page.count('class="possible-duplicate"') == 4
    assert f"{pairs['astronaut'].nearest_similarity:.2f}% ⚠" in page
    page = admin_client.get(LIST, {"duplicate": "no"}).content.decode()
    assert page.count('class="status-badge"') == 3
    assert 'class="possible-duplicate"' not in page
    assert "Possible duplicates</a>" in admin_client.get(LIST).content.decode()


def test_the_pairs_page_shows_each_pair_once_most_similar_first(admin_client, pairs):
    page = admin_client.get(PAIRS).content.decode()
    assert page.count('class="duplicate-pair"') == 2
    first, second = sorted(pairs.values(), key=lambda image: -image.nearest_similarity)
    assert page.index(f"Deactivate “{first}”") < page.index(f"Deactivate “{second}”")
    assert page.count("Deactivate “") == 4
    for image in pairs.values():
        assert f'src="{image.thumbnail_url}"' in page


def test_the_pairs_page_is_paginated(admin_client, pairs, monkeypatch):
    monkeypatch.setattr("catalog.admin.images.DUPLICATE_PAIRS_PER_PAGE", 1)
    assert admin_client.get(PAIRS).content.decode().count('class="duplicate-pair"') == 1
    second = admin_client.get(PAIRS, {"page": 2}).content.decode()
    assert second.count('class="duplicate-pair"') == 1 and "Page 2 of 2" in second


def test_deactivating_one_side_takes_the_pair_off_the_page_and_its_vector_out(
    admin_client, pairs, eager_celery, django_capture_on_commit_callbacks
):
    copy = pairs["astronaut"]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"{PAIRS}{copy.pk}/deactivate/", {"page": "1"}, follow=True)
    assert response.redirect_chain[-1][0] == f"{PAIRS}?page=1"
    page = response.content.decode()
    assert "Deactivated “copy of astronaut.png”" in page
    assert page.count('class="duplicate-pair"') == 1
    assert not CatalogImage.objects.get(pk=copy.pk).is_active
    assert str(copy.pk) not in get_vector_store().ids()


def test_view_only_staff_see_the_pairs_but_cannot_deactivate(client, django_user_model, pairs):
    viewer = user_client(client, django_user_model, "view_catalogimage")
    page = viewer.get(PAIRS).content.decode()
    assert page.count('class="duplicate-pair"') == 2
    assert "Deactivate “" not in page
    copy = pairs["astronaut"]
    assert viewer.post(f"{PAIRS}{copy.pk}/deactivate/").status_code == 403
    assert CatalogImage.objects.get(pk=copy.pk).is_active


def test_deactivating_takes_a_post(admin_client, pairs):
    copy = pairs["astronaut"]
    assert admin_client.get(f"{PAIRS}{copy.pk}/deactivate/").status_code == 405
    assert CatalogImage.objects.get(pk=copy.pk).is_active


def test_the_pairs_page_sends_anonymous_users_to_the_login(client, pairs):
    response = client.get(PAIRS)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- In the catalog API ------------------------------------------------------------------

STAFF_ONLY = {"possible_duplicate", "nearest_image_id", "nearest_similarity"}


def test_staff_rows_show_the_flag_and_the_nearest_image(staff_client, pairs, tagged):
    rows = {row["id"]: row for row in staff_client.get("/api/images/").json()["results"]}
    copy = pairs["astronaut"]
    assert rows[copy.pk]["possible_duplicate"] is True
    assert rows[copy.pk]["nearest_image_id"] == tagged["astronaut.png"].pk
    assert rows[copy.pk]["nearest_similarity"] == copy.nearest_similarity
    assert rows[tagged["rocket.jpg"].pk]["possible_duplicate"] is False
    detail = staff_client.get(f"/api/images/{copy.pk}/").json()
    assert {key: detail[key] for key in STAFF_ONLY} == {
        key: rows[copy.pk][key] for key in STAFF_ONLY
    }


def test_anonymous_and_non_staff_rows_do_not_show_it(client, django_user_model, pairs):
    copy = pairs["astronaut"]
    for who in ("anonymous", "not staff"):
        if who == "not staff":
            client.force_login(django_user_model.objects.create_user("visitor", password="x"))
        rows = client.get("/api/images/").json()["results"]
        assert rows and all(not STAFF_ONLY & set(row) for row in rows), who
        assert not STAFF_ONLY & set(client.get(f"/api/images/{copy.pk}/").json()), who


def test_the_schema_documents_the_staff_fields(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    properties = schema["components"]["schemas"]["CatalogImage"]["properties"]
    assert set(properties) >= STAFF_ONLY
    assert properties["nearest_similarity"]["nullable"] is True
    public = schema["components"]["schemas"]["PublicImage"]["properties"]
    assert not STAFF_ONLY & set(public)

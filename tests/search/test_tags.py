"""One normal form for tags, and every door that takes tags refusing the same ones."""

import io

import pytest
from django.core.management import CommandError, call_command

from catalog.models import CatalogImage
from search.tags import MAX_FILTER_TAGS, MAX_TAG_LENGTH, InvalidTags, normalize_tags, tag_filter
from tests.conftest import photo_file

TOO_LONG = "x" * (MAX_TAG_LENGTH + 1)


def test_tags_are_trimmed_lower_cased_unique_and_sorted():
    assert normalize_tags(" Beach, summer ,BEACH,, ") == ["beach", "summer"]
    assert normalize_tags(["Summer", " ", "beach"]) == ["beach", "summer"]
    assert normalize_tags(None) == normalize_tags("") == []
    assert normalize_tags(["y" * MAX_TAG_LENGTH]) == ["y" * MAX_TAG_LENGTH]


def test_a_tag_no_search_could_ask_for_is_refused_everywhere():
    with pytest.raises(InvalidTags, match=f"at most {MAX_TAG_LENGTH} characters"):
        normalize_tags(["beach", TOO_LONG])
    with pytest.raises(InvalidTags):
        tag_filter([TOO_LONG])


def test_a_search_takes_a_list_or_a_comma_separated_string_of_up_to_the_limit():
    assert tag_filter(["Space", "food "]) == tag_filter("space, FOOD") == ["food", "space"]
    assert tag_filter(None) == tag_filter("") == tag_filter([]) == []
    assert len(tag_filter([f"t{i}" for i in range(MAX_FILTER_TAGS)])) == MAX_FILTER_TAGS
    for bad in (12, [1, 2], {"a": 1}, [f"t{i}" for i in range(MAX_FILTER_TAGS + 1)]):
        with pytest.raises(InvalidTags, match="list of up to"):
            tag_filter(bad)


@pytest.mark.django_db
def test_the_catalog_api_refuses_a_too_long_tag_and_saves_nothing(staff_client):
    answer = staff_client.post(
        "/api/images/", {"image": photo_file("coffee.png"), "tags": f"ok, {TOO_LONG}"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_tags"
    assert not CatalogImage.objects.exists()


@pytest.mark.django_db
def test_the_admin_forms_show_a_too_long_tag_as_a_field_error(admin_client):
    answer = admin_client.post(
        "/admin/catalog/catalogimage/add/",
        {"image": photo_file("coffee.png"), "title": "c", "tags": TOO_LONG, "is_active": "on"},
    )
    assert answer.status_code == 200
    assert answer.context["adminform"].form.errors["tags"][0].startswith("Each tag may be")
    answer = admin_client.post(
        "/admin/catalog/catalogimage/bulk-upload/",
        {"files": [photo_file("coffee.png")], "tags": TOO_LONG},
    )
    assert "Each tag may be" in answer.content.decode()
    assert not CatalogImage.objects.exists()


@pytest.mark.django_db
def test_the_import_command_refuses_a_too_long_tag_before_importing(tmp_path):
    (tmp_path / "coffee.png").write_bytes(photo_file("coffee.png").read())
    with pytest.raises(CommandError, match="at most"):
        call_command("import_images", str(tmp_path), tags=TOO_LONG, stdout=io.StringIO())
    assert not CatalogImage.objects.exists()


@pytest.mark.django_db
def test_the_search_page_refuses_too_many_tags_as_the_api_does(client, tagged):
    many = [f"t{i}" for i in range(MAX_FILTER_TAGS + 1)]
    answer = client.post("/", {"image": photo_file("coffee.png"), "tags": many})
    assert answer.status_code == 400
    assert 'data-error-code="invalid_tags"' in answer.content.decode()
    shared_link = client.get("/?tags=" + ",".join(many))
    assert shared_link.status_code == 400
    assert 'data-error-code="invalid_tags"' in shared_link.content.decode()

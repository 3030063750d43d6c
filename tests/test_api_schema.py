"""The OpenAPI schema at /api/schema/ is a valid contract that docs/api.md and the API agree
with.

The "Search API" and "Catalog API" sections of docs/api.md (the API reference the README
links) are parsed here, so an endpoint or an error code documented there and missing from
the schema fails this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.files.base import ContentFile
from django.core.management import call_command
from openapi_schema_validator import OAS30ReadValidator
from openapi_spec_validator import validate

from tests.conftest import photo_bytes, photo_file

pytestmark = pytest.mark.django_db

SCHEMA = "/api/schema/"
DOCS = "/api/docs/"


def readme_api_sections() -> str:
    text = (Path(settings.BASE_DIR) / "docs" / "api.md").read_text()
    start = text.index("## Search API")
    return text[start : text.index("\n## ", text.index("## Catalog API"))]


def readme_endpoints() -> set[tuple[str, str]]:
    """("get", "/api/images/{}/") for every `METHOD /api/...` the sections mention."""
    found = re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/api/[^`?\s]*)", readme_api_sections())
    return {(method.lower(), re.sub(r"\{[^}]*\}", "{}", path)) for method, path in found}


ERROR_ROW = re.compile(r"^\| (\d{3}) \| `([a-z0-9_]+)` \|", flags=re.MULTILINE)


def readme_error_codes() -> set[tuple[int, str]]:
    """(400, "missing_image") for each row of an error table (| 400 | `missing_image` | ...)
    and each refusal written in prose as `403 permission_denied`."""
    sections = readme_api_sections()
    prose = re.findall(r"`(\d{3}) ([a-z0-9_]+)`", sections)
    return {(int(status), code) for status, code in ERROR_ROW.findall(sections) + prose}


def search_table_codes() -> set[tuple[int, str]]:
    search = readme_api_sections().split("## Catalog API")[0]
    return {(int(status), code) for status, code in ERROR_ROW.findall(search)}


def codes_in(operation: dict) -> set[tuple[int, str]]:
    """Each (status, code) an operation's error responses list as examples."""
    codes = set()
    for status, response in operation["responses"].items():
        examples = response.get("content", {}).get("application/json", {}).get("examples", {})
        codes |= {(int(status), example["value"]["error"]) for example in examples.values()}
    return codes


@pytest.fixture
def schema(client) -> dict:
    response = client.get(SCHEMA, {"format": "json"})
    assert response.status_code == 200
    return response.json()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def assert_matches(schema: dict, component: str, body) -> None:
    validator = OAS30ReadValidator(
        {"$ref": f"#/components/schemas/{component}", "components": schema["components"]}
    )
    errors = [error.message for error in validator.iter_errors(body)]
    assert not errors, errors


def test_the_schema_is_a_valid_openapi_document(schema):
    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Visual Search API"


def test_the_schema_is_also_served_as_yaml(client):
    response = client.get(SCHEMA, HTTP_ACCEPT="application/vnd.oai.openapi")
    assert response.status_code == 200
    assert "/api/search/" in yaml.safe_load(response.content)["paths"]


def test_the_readme_sections_still_document_what_this_test_reads():
    # Guards the parsing below: were the README reworded, the checks must not pass vacuously.
    assert ("post", "/api/search/") in readme_endpoints()
    sections = readme_api_sections()
    error_rows = re.findall(r"^\| \d{3} \|", sections, flags=re.MULTILINE)
    assert len(ERROR_ROW.findall(sections)) == len(error_rows) >= len(search_table_codes()) > 0
    assert (403, "permission_denied") in readme_error_codes()


def test_every_endpoint_the_readme_documents_is_in_the_schema(schema):
    described = {
        (method, re.sub(r"\{[^}]*\}", "{}", path)) for method, path, _ in operations(schema)
    }
    assert readme_endpoints() - described == set()


def test_every_error_code_the_readme_documents_is_in_the_schema_with_its_status(schema):
    described = set().union(*(codes_in(operation) for _, _, operation in operations(schema)))
    assert readme_error_codes() - described == set()


def test_the_search_endpoint_lists_every_code_of_the_readmes_search_table(schema):
    search = codes_in(schema["paths"]["/api/search/"]["post"])
    assert search_table_codes() - search == set()


def test_search_takes_a_picture_as_json_multipart_or_form(schema):
    content = schema["paths"]["/api/search/"]["post"]["requestBody"]["content"]
    assert set(content) == {
        "application/json",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    }
    upload = schema["components"]["schemas"]["SearchUploadRequest"]["properties"]["image"]
    assert upload["format"] == "binary"


def test_a_refusal_matches_the_error_component(client, schema):
    body = client.post("/api/search/", {}, content_type="application/json").json()
    assert body["error"] == "missing_image"
    assert_matches(schema, "Error", body)
    invalid = client.get("/api/images/", {"status": "nope"}).json()
    assert invalid["error"] == "invalid_request"
    assert_matches(schema, "Error", invalid)


def test_health_answers_match_the_health_report(client, staff_client, schema):
    assert_matches(schema, "HealthReport", client.get("/api/health/").json())
    assert_matches(schema, "HealthDetails", staff_client.get("/api/health/").json())


def test_catalog_answers_match_their_components(client, staff_client, schema):
    upload = staff_client.post("/api/images/", {"image": photo_file("moon.png")})
    assert upload.status_code == 201
    assert_matches(schema, "ImageUploadResult", upload.json())
    assert_matches(schema, "ImagePage", staff_client.get("/api/images/").json())
    image_id = upload.json()["id"]
    assert_matches(schema, "CatalogImage", staff_client.get(f"/api/images/{image_id}/").json())
    assert_matches(schema, "ImagePage", client.get("/api/images/").json())


def test_the_docs_page_loads_swagger_ui_from_local_static_files_only(client):
    response = client.get(DOCS)
    assert response.status_code == 200
    html = response.content.decode()
    # The setup script is a file of its own (the Content-Security-Policy forbids inline ones).
    script = client.get(DOCS, {"script": ""}).content.decode()
    assert "swagger-ui" in html
    assert re.findall(r"https?://", html + script) == []
    # Otherwise the bundle's default sends the schema URL to validator.swagger.io.
    assert '"validatorUrl": null' in script
    static_urls = re.findall(rf"{re.escape(settings.STATIC_URL)}[^\"'\s]+", html)
    assert static_urls, html
    for url in static_urls:
        assert finders.find(url.removeprefix(settings.STATIC_URL)), url


def test_schema_generation_raises_no_warning(tmp_path):
    # --fail-on-warn turns every drf-spectacular warning (an unguessable field, a name
    # collision) into an error, so a new view without a schema fails here.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", tmp_path / "s.yaml")
    assert "/api/search/" in yaml.safe_load((tmp_path / "s.yaml").read_text())["paths"]


# --- Every answer under /api/ is in the contract ------------------------------------------


def json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json", response.content[:500]
    return response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/images/null,null/"),
        ("delete", "/api/images/null,null/"),
        ("get", "/api/images/1/extra/"),
        ("get", "/api/nothing-here/"),
        ("post", "/api/nothing-here/"),
        ("get", "/api/nothing-here"),
        ("get", "/api/"),
        ("post", "/api/images"),  # a redirect would drop the body: say where it goes instead
    ],
)
def test_an_unknown_api_path_is_a_404_in_the_error_shape(client, schema, method, path):
    body = json_error(getattr(client, method)(path), 404)
    assert body["error"] == "not_found"
    assert_matches(schema, "Error", body)


def test_a_post_to_an_endpoint_without_its_slash_says_where_to_send_it(client):
    assert "/api/images/" in json_error(client.post("/api/images"), 404)["detail"]


def test_a_read_of_an_endpoint_without_its_slash_still_leads_to_it(client):
    response = client.get("/api/docs")
    assert response.status_code == 301
    assert response["Location"] == "/api/docs/"


def test_a_post_to_an_unknown_api_path_needs_no_csrf_token():
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/api/nothing-here/")
    assert json_error(response, 404)["error"] == "not_found"


def test_the_rest_of_the_site_keeps_its_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path"),
    [("put", "/api/images/"), ("get", "/api/search/"), ("post", "/api/tags/")],
)
def test_a_method_an_endpoint_does_not_take_is_a_405_in_the_error_shape(
    staff_client, schema, method, path
):
    # As a curator: for anyone else a write method on the catalog is 403 before it is 405.
    body = json_error(getattr(staff_client, method)(path), 405)
    assert body["error"] == "method_not_allowed"
    assert_matches(schema, "Error", body)


def test_a_host_django_refuses_is_a_400_in_the_error_shape_under_api(client, schema):
    body = json_error(client.get("/api/images/", HTTP_HOST="evil.example"), 400)
    assert body["error"] == "bad_request"
    assert_matches(schema, "Error", body)
    page = client.get("/", HTTP_HOST="evil.example")
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")


def test_a_form_with_more_fields_than_django_reads_is_a_400_in_the_error_shape(client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    form = "&".join(f"f{i}=1" for i in range(20))
    response = client.post("/api/search/", form, content_type="application/x-www-form-urlencoded")
    body = json_error(response, 400)
    assert body == {
        "error": "bad_request",
        "detail": "The form has more fields than the server reads; send fewer.",
    }


def test_a_server_error_under_api_is_a_500_in_the_error_shape(client, schema):
    from django.db import connection

    # A real failure: the catalog's table is gone (renamed inside the test's transaction,
    # which rolls it back).
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE catalog_catalogimage RENAME TO catalog_catalogimage_away")
    client.raise_request_exception = False
    response = client.get("/api/images/")
    body = json_error(response, 500)
    assert body["error"] == "server_error"
    assert "catalog_catalogimage" not in body["detail"]  # no internals
    assert_matches(schema, "Error", body)


def test_an_empty_status_filter_is_refused_as_the_schema_says(client):
    # The schema's `status` is one of the image statuses, and "" is none of them.
    body = json_error(client.get("/api/images/?status="), 400)
    assert body["error"] == "invalid_request"
    assert "status" in body["fields"]


def test_an_empty_upload_is_refused_and_the_schema_says_files_are_not_empty(staff_client, schema):
    components = schema["components"]["schemas"]
    assert components["ImageUploadRequest"]["properties"]["image"]["minLength"] == 1
    assert components["SearchUploadRequest"]["properties"]["image"]["minLength"] == 1
    upload = staff_client.post("/api/images/", {"image": ContentFile(b"", name="a.jpg")})
    assert json_error(upload, 400)["error"] == "empty_image"
    query = staff_client.post("/api/search/", {"image": ContentFile(b"", name="a.jpg")})
    assert json_error(query, 400)["error"] == "empty_image"


def request_shape(schema: dict, media_type: str) -> dict:
    content = schema["paths"]["/api/search/"]["post"]["requestBody"]["content"]
    name = content[media_type]["schema"]["$ref"].rsplit("/", 1)[1]
    return schema["components"]["schemas"][name]["properties"]


def test_search_forms_are_described_as_forms_send_them(client, schema):
    # A form's tags are one comma-separated field (a repeated field would keep only its
    # last value); a JSON body's are a list. An empty url is refused whatever the body.
    form = "application/x-www-form-urlencoded"
    assert request_shape(schema, "application/json")["tags"]["type"] == "array"
    for media_type in ("multipart/form-data", form):
        assert request_shape(schema, media_type)["tags"]["type"] == "string", media_type
    for media_type in ("application/json", "multipart/form-data", form):
        assert request_shape(schema, media_type)["url"]["minLength"] == 1, media_type
    upload = {"image": ContentFile(photo_bytes(), name="a.jpg"), "url": ""}
    for response in (
        client.post("/api/search/", {"url": ""}, content_type="application/json"),
        client.post("/api/search/", "url=", content_type=form),
        client.post("/api/search/", upload),
    ):
        assert json_error(response, 400)["error"] == "url_not_allowed"


def test_an_unknown_format_is_a_404_not_found_in_the_error_shape(client, schema):
    body = json_error(client.get("/api/images/", {"format": "xml"}), 404)
    assert body["error"] == "not_found"
    assert_matches(schema, "Error", body)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("post", SCHEMA, {}, 405, "method_not_allowed"),
        ("post", DOCS, {}, 405, "method_not_allowed"),
        ("get", SCHEMA, {"Authorization": "Token unknown"}, 403, "authentication_failed"),
        ("get", f"{SCHEMA}?format=xml", {}, 404, "not_found"),
    ],
)
def test_the_schema_and_docs_pages_refuse_in_json_too(
    client, schema, method, path, headers, status, code
):
    # Their pages are YAML and HTML; a refusal is still the API's error shape.
    body = json_error(getattr(client, method)(path, headers=headers), status)
    assert body["error"] == code
    assert_matches(schema, "Error", body)


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_gets_json_not_an_html_page(client, schema):
    response = client.get("/api/images/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    only_html = client.get("/api/images/", headers={"Accept": "text/html"})
    assert json_error(only_html, 406)["error"] == "not_acceptable"


@pytest.mark.django_db
def test_the_catalog_list_takes_only_a_whole_page_number(client):
    # The schema says `page` is an integer; DRF's paginator also took the word "last".
    assert client.get("/api/images/?page=1").status_code == 200
    for page in ("last", "", "abc", "0", "1.5"):
        body = json_error(client.get(f"/api/images/?page={page}"), 404)
        assert body["error"] == "not_found", page

"""The OpenAPI schema at /api/schema/ is a valid contract that README.md and the API agree with.

The README's "Search API" and "Catalog API" sections are parsed here, so an endpoint or an
error code documented there and missing from the schema fails this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from openapi_schema_validator import OAS30ReadValidator
from openapi_spec_validator import validate

from tests.conftest import photo_file

pytestmark = pytest.mark.django_db

SCHEMA = "/api/schema/"
DOCS = "/api/docs/"


def readme_api_sections() -> str:
    text = (Path(settings.BASE_DIR) / "README.md").read_text()
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
    assert "swagger-ui" in html
    assert re.findall(r"https?://", html) == []
    # Otherwise the bundle's default sends the schema URL to validator.swagger.io.
    assert '"validatorUrl": null' in html
    static_urls = re.findall(rf"{re.escape(settings.STATIC_URL)}[^\"'\s]+", html)
    assert static_urls, html
    for url in static_urls:
        assert finders.find(url.removeprefix(settings.STATIC_URL)), url


def test_schema_generation_raises_no_warning(tmp_path):
    # --fail-on-warn turns every drf-spectacular warning (an unguessable field, a name
    # collision) into an error, so a new view without a schema fails here.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", tmp_path / "s.yaml")
    assert "/api/search/" in yaml.safe_load((tmp_path / "s.yaml").read_text())["paths"]

"""Every answer of the API is in its own contract.

Schemathesis reads the schema the app serves at /api/schema/ and, for every operation in
it, sends requests drawn from it (valid ones, invalid ones, boundary values, methods the
operation does not take) to a real server on 127.0.0.1, anonymously and as a curator
holding an API token. Each answer is checked against the same schema: no 5xx, a status
and a content type the operation documents, a body of the documented shape, and invalid
input refused. A disagreement between code and schema fails here, whichever one is wrong.

Bounded for CI: derandomized (the same requests every run, so a failure reproduces) and
MAX_EXAMPLES drawn requests per operation besides the boundary cases.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings

from catalog import services
from catalog.models import CatalogImage
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_bytes, photo_file

MAX_EXAMPLES = 25


def served_schema() -> dict:
    """The schema as /api/schema/ serves it, read through the app (no server, no database)
    when this module is collected, so that each operation becomes its own test."""
    response = Client().get("/api/schema/", {"format": "json"}, HTTP_HOST="localhost")
    assert response.status_code == 200, response.content[:500]
    return response.json()


schema = schemathesis.openapi.from_dict(served_schema())

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.unsupported_method,
]

# Every field of a form is text: an object drawn for `title` arrives as its JSON text, a
# valid title, so "invalid data accepted" cannot be judged on form bodies. JSON bodies, query
# strings and path parameters keep the check.
FORM_MEDIA_TYPES = {"multipart/form-data", "application/x-www-form-urlencoded"}


def checks_for(case) -> list:
    if case.media_type in FORM_MEDIA_TYPES:
        return [
            check for check in CHECKS if check is not schemathesis.checks.negative_data_rejection
        ]
    return CHECKS


FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # The fixtures are set up once per operation, not per drawn request, on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def small_catalog(transactional_db):
    """One image of each kind a client can meet: indexed, pending, failed, deactivated."""
    indexed, pending, failed, deactivated = (
        services.image_create(file=photo_file(f"{name}.png"), enqueue=False)[0]
        for name in ("coffee", "camera", "chelsea", "astronaut")
    )
    images_index(image_ids=[indexed.pk, deactivated.pk])
    CatalogImage.objects.filter(pk=failed.pk).update(status="failed", failure_reason="boom")
    CatalogImage.objects.filter(pk=deactivated.pk).update(is_active=False)
    return [indexed, pending, failed, deactivated]


@pytest.fixture
def curator_token(transactional_db, django_user_model) -> str:
    """The API token of a curator: staff with every permission on the catalog's models."""
    from django.contrib.auth.models import Permission
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("fuzz-curator", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))
    return Token.objects.create(user=user).key


@schema.parametrize()
@FUZZ
def test_anonymous_clients_get_answers_in_the_contract(case, live_server, small_catalog):
    case.call_and_validate(base_url=live_server.url, checks=checks_for(case))


@schema.parametrize()
@FUZZ
def test_curators_get_answers_in_the_contract(case, live_server, small_catalog, curator_token):
    case.call_and_validate(
        base_url=live_server.url,
        checks=checks_for(case),
        headers={"Authorization": f"Token {curator_token}"},
    )


@pytest.mark.parametrize("as_curator", [False, True], ids=["anonymous", "curator"])
def test_answers_about_each_kind_of_image_are_in_the_contract(
    live_server, small_catalog, curator_token, as_curator
):
    """Drawn ids seldom name a real image, so each image of the small catalog is asked
    about by its id too: read, searched by, uploaded again, deleted."""
    headers = {"Authorization": f"Token {curator_token}"} if as_curator else {}

    def check(path: str, method: str, **request) -> int:
        case = schema[path][method].Case(**request)
        response = case.call_and_validate(base_url=live_server.url, checks=CHECKS, headers=headers)
        return response.status_code

    statuses = []
    for image in small_catalog:
        statuses += [
            check("/api/images/{image_id}/", "GET", path_parameters={"image_id": image.pk}),
            check(
                "/api/search/", "POST", body={"image_id": image.pk}, media_type="application/json"
            ),
        ]
    again = {"image": photo_bytes("coffee.png"), "title": "again"}
    statuses.append(check("/api/images/", "POST", body=again, media_type="multipart/form-data"))
    for image in small_catalog:
        statuses.append(
            check("/api/images/{image_id}/", "DELETE", path_parameters={"image_id": image.pk})
        )
    # The successful answers were checked too, not only refusals.
    assert {200, 404} <= set(statuses)
    assert ({204} if as_curator else {403}) <= set(statuses)

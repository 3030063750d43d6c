"""The Content-Security-Policy header: scripts and styles only from the site's own files on
the search page; inline styles also in the admin and the API docs; no inline script
anywhere. tests/frontend/test_pages_under_the_content_security_policy.py proves the pages
work under it in a real browser."""

from __future__ import annotations

import re

import pytest

from visualsearch.middleware import with_inline_styles

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    parts = [part.split() for part in policy.split(";") if part.strip()]
    return {part[0]: part[1:] for part in parts}


def test_the_search_page_allows_scripts_and_styles_from_the_site_only(client):
    policy = directives(client.get("/"))
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    # Results come from the image host; a search by URL previews the typed address.
    assert {"'self'", "data:", "blob:", "https:"} <= set(policy["img-src"])


def test_the_search_page_has_no_inline_script_or_style(client):
    html = client.get("/").content.decode()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert "<style" not in html
    assert " style=" not in html
    assert re.findall(r"\son[a-z]+=", html) == []


def test_the_api_answers_carry_the_policy_too(client):
    assert "Content-Security-Policy" in client.get("/api/tags/")


def test_the_admin_allows_inline_styles_but_not_inline_scripts(staff_client):
    policy = directives(staff_client.get("/admin/catalog/catalogimage/"))
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["script-src"] == ["'self'"]
    login = directives(staff_client.get("/admin/login/"))
    assert "'unsafe-inline'" in login["style-src"]


def test_the_api_docs_load_their_setup_script_from_a_file(client):
    response = client.get("/api/docs/")
    policy = directives(response)
    assert policy["script-src"] == ["'self'"]
    assert "'unsafe-inline'" in policy["style-src"]  # Swagger UI's page has a <style> block
    html = response.content.decode()
    inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert inline == [], inline
    script = client.get("/api/docs/", {"script": ""})
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()


def test_an_empty_policy_sends_no_header(client, settings):
    settings.CONTENT_SECURITY_POLICY = ""
    assert "Content-Security-Policy" not in client.get("/")


def test_the_operators_policy_is_sent_as_written(client, settings):
    settings.CONTENT_SECURITY_POLICY = "default-src 'self'; img-src https://res.cloudinary.com"
    assert client.get("/")["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY


def test_debug_error_pages_keep_their_inline_scripts(client, settings):
    settings.DEBUG = True
    assert "Content-Security-Policy" not in client.get("/no-such-page/")
    settings.DEBUG = False
    assert "Content-Security-Policy" in client.get("/no-such-page/")


@pytest.mark.parametrize(
    ("policy", "relaxed"),
    [
        (
            "default-src 'self'; style-src 'self'",
            "default-src 'self'; style-src 'self' 'unsafe-inline'",
        ),
        (
            "default-src 'self' https:",
            "default-src 'self' https:; style-src 'self' https: 'unsafe-inline'",
        ),
        (
            "style-src-elem 'self'; style-src-attr 'none'",
            "style-src-elem 'self' 'unsafe-inline'; style-src-attr 'unsafe-inline'",
        ),
        ("img-src https:", "img-src https:"),  # styles are not restricted: nothing to add
        ("style-src 'self' 'unsafe-inline'", "style-src 'self' 'unsafe-inline'"),
    ],
)
def test_inline_styles_are_added_to_the_directives_that_govern_styles(policy, relaxed):
    assert with_inline_styles(policy) == relaxed

"""Search by URL on the search page: type or paste a picture's web address, and the server
fetches and searches it. The picture comes from a real server on 127.0.0.1, which only the
test-only URL_FETCH_ALLOW_LOOPBACK lets the server fetch from.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def opened(page, live_server):
    page.goto(live_server.url)
    return page


def search_with(page):
    """Press Search and return the request the page sent, once the page has answered."""
    with page.expect_response("**/api/search/") as response:
        page.click("#search-button")
    page.wait_for_selector("#search-button:enabled")
    return response.value.request


def test_a_typed_address_is_searched_and_its_picture_comes_first(
    opened, tagged, pictures, loopback_allowed
):
    page = opened
    url = pictures.url("/picture.jpg")
    page.fill("#image-url", url)
    page.click("#image-url-use")
    page.wait_for_selector("#preview:not([hidden])")
    assert page.get_attribute("#preview", "src") == url
    assert page.locator("#region-tools").is_hidden()  # no picture here to cut a region from
    sent = search_with(page)
    assert sent.post_data_json["url"] == url
    assert "image" not in sent.post_data_json
    assert page.locator("#results .result-title").first.inner_text() == "coffee"


def test_enter_in_the_address_field_picks_it_without_searching(
    opened, tagged, pictures, loopback_allowed
):
    page = opened
    page.fill("#image-url", pictures.url("/picture.jpg"))
    page.press("#image-url", "Enter")
    page.wait_for_selector("#search-button:enabled")
    assert "Press Search" in page.inner_text("#message")
    assert page.locator("#results .result").count() == 0


def paste(page, text: str) -> None:
    page.evaluate(
        """(text) => {
            const data = new DataTransfer();
            data.setData("text/plain", text);
            document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data }));
        }""",
        text,
    )


def test_an_address_pasted_on_the_page_fills_the_field_and_is_searched(
    opened, tagged, pictures, loopback_allowed
):
    page = opened
    url = pictures.url("/picture.jpg")
    paste(page, f"  {url}\n")
    page.wait_for_selector("#search-button:enabled")
    assert page.input_value("#image-url") == url
    assert search_with(page).post_data_json["url"] == url
    assert page.locator("#results .result-title").first.inner_text() == "coffee"


def test_an_address_pasted_in_another_text_field_stays_there(opened, tagged, pictures):
    page = opened
    page.focus("#min-similarity")
    paste(page, pictures.url("/picture.jpg"))
    assert page.input_value("#image-url") == ""
    assert page.locator("#search-button").is_disabled()


def test_pasted_text_that_is_not_a_web_address_is_ignored(opened, tagged):
    page = opened
    paste(page, "ftp://example.com/picture.jpg")
    assert page.input_value("#image-url") == ""
    assert page.locator("#search-button").is_disabled()


def test_a_typed_address_that_is_not_a_web_address_is_explained(opened, tagged):
    page = opened
    page.fill("#image-url", "picture.jpg")
    page.click("#image-url-use")
    assert "starting with http:// or https://" in page.inner_text("#message")
    assert page.locator("#search-button").is_disabled()


def test_a_refused_address_shows_the_apis_sentence(opened, tagged, settings):
    page = opened
    assert settings.URL_FETCH_ALLOW_LOOPBACK is False
    page.fill("#image-url", "http://127.0.0.1:1/x.jpg")
    page.click("#image-url-use")
    # The browser cannot load the preview either: the address is still searched.
    page.wait_for_selector("#region-frame[hidden]", state="attached")
    search_with(page)
    message = page.locator("#message")
    assert "error" in message.get_attribute("class")
    assert "not a public internet address" in message.inner_text()


def test_the_address_field_is_absent_when_search_by_url_is_off(page, live_server, settings):
    settings.SEARCH_BY_URL = False
    page.goto(live_server.url)
    assert page.locator("#image-url").count() == 0
    assert page.locator("#dropzone").is_visible()

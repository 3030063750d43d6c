"""The search page in a real headless Chromium (Debian's), driven by Playwright.

Each test leaves a screenshot under artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import base64

import pytest

from catalog import services
from catalog.pipeline.indexing import images_index
from tests.conftest import photo_bytes, photo_file
from tests.frontend.conftest import SCREENSHOTS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
NAMES = ["coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png", "brick.png"]


@pytest.fixture
def catalog():
    images = {name: services.image_create(file=photo_file(name))[0] for name in NAMES}
    images_index(image_ids=[image.pk for image in images.values()])
    return images


@pytest.fixture
def page(browser, live_server, catalog, request):
    """A desktop-sized page, opened once the catalog exists."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(live_server.url)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()


def first_title(page) -> str:
    return page.locator("#results .result-title").first.inner_text()


def test_choose_a_file_see_the_preview_search_and_find_it_first(page, catalog, photo_path):
    assert page.locator("#search-button").is_disabled()
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#preview:not([hidden])")
    assert page.locator("#search-button").is_enabled()
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    assert first_title(page) == "coffee"
    assert page.locator("#results .result-similarity").first.inner_text().endswith("%")
    assert page.locator("#results .result").count() == len(NAMES)
    assert page.locator("#results .result-image").first.get_attribute("alt") == "coffee"


def test_drag_and_drop_gives_the_same(page, catalog):
    data = base64.b64encode(photo_bytes("rocket.jpg")).decode()
    page.evaluate(
        """async (data) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "rocket.jpg", { type: "image/jpeg" }));
            const zone = document.getElementById("dropzone");
            const options = { dataTransfer: transfer, bubbles: true };
            zone.dispatchEvent(new DragEvent("dragover", options));
            zone.dispatchEvent(new DragEvent("drop", options));
        }""",
        data,
    )
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    assert first_title(page) == "rocket"


def test_a_non_image_shows_an_error_and_the_page_recovers(page, catalog, tmp_path, photo_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.set_input_files("#file", notes)
    page.wait_for_selector("#message.error")
    assert "not an image" in page.inner_text("#message")
    assert page.locator("#search-button").is_disabled()

    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    assert first_title(page) == "coffee"
    assert not page.locator("#message.error").count()


def test_an_image_the_server_refuses_is_explained(page, catalog, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8\xff not really a jpeg")
    page.set_input_files("#file", fake)  # the browser cannot decode it, so the server judges
    page.wait_for_selector("#search-button:not([disabled])")
    page.click("#search-button")
    page.wait_for_selector("#message.error")
    assert "not an image" in page.inner_text("#message")
    assert page.locator("#search-button").is_enabled()


def test_find_similar_replaces_the_grid(page, catalog, photo_path):
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    page.locator("#results .result").nth(1).locator(".similar-button").click()
    page.wait_for_function(
        f"() => document.querySelectorAll('#results .result').length === {len(NAMES) - 1}"
    )
    titles = page.locator("#results .result-title").all_inner_texts()
    assert "coffee" in titles  # the query image itself is left out, coffee is not it


def test_the_drop_zone_is_reached_and_used_with_the_keyboard(page, catalog):
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "dropzone"
    # Whether headless Chromium then shows its dialog is up to it (it does not always);
    # the page's part is to open the file input, which the picker comes from.
    page.evaluate(
        "document.getElementById('file').addEventListener('click', () => window.opened = true)"
    )
    page.keyboard.press("Enter")
    assert page.evaluate("window.opened === true")


def test_the_form_works_without_javascript(browser, live_server, catalog, photo_path):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server.url)
    page.set_input_files("#file", photo_path)
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    assert first_title(page) == "coffee"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "test_the_form_works_without_javascript.png", full_page=True)
    context.close()


def test_a_phone_sized_window_shows_results_without_sideways_scrolling(
    browser, live_server, catalog, photo_path
):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(live_server.url)
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "phone.png", full_page=True)
    context.close()


def test_the_minimum_similarity_drops_weaker_matches_and_a_bad_one_is_explained(
    page, catalog, photo_path
):
    answers = []
    page.on("response", lambda r: answers.append(r) if r.url.endswith("/api/search/") else None)
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    exact = [hit["similarity"] for hit in answers[-1].json()["results"]]
    assert len(exact) == len(NAMES)
    # The second-lowest score shown: the weakest match(es) must go, the rest stay.
    cut = sorted(set(exact))[1]
    kept = sum(score >= cut for score in exact)
    assert 0 < kept < len(exact)

    page.fill("#min-similarity", str(cut))
    page.click("#search-button")
    page.wait_for_function(f"() => document.querySelectorAll('#results .result').length === {kept}")
    assert answers[-1].request.post_data_json["min_similarity"] == cut
    assert f"{kept} result" in page.inner_text("#message")

    # Out of range: the browser's own check explains it, and nothing is sent.
    page.fill("#min-similarity", "150")
    page.click("#search-button")
    assert page.locator("#min-similarity:invalid").count() == 1
    assert "100" in page.eval_on_selector("#min-similarity", "input => input.validationMessage")
    assert page.locator("#results .result").count() == kept

"""The search page as people use it, in a real headless Chromium: after a search the results
are in view without scrolling, on a laptop's screen (the picture and its controls beside the
results) and a phone's (the page brings the results into view), with JavaScript and without;
the region instructions take one line, the rest behind a help toggle; a result whose item has
a web page offers "View item".
"""

from __future__ import annotations

import pytest

from catalog.models import CatalogImage
from tests.frontend.conftest import SCREENS, SCREENSHOTS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BOX = "e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; }"


def box(page, selector: str) -> tuple[float, float, float, float]:
    """Where the first element `selector` finds is, in the window: left, top, right, bottom."""
    return tuple(page.locator(selector).first.evaluate(BOX))


def in_view(page, selector: str) -> bool:
    """Whether all of the first element `selector` finds is inside the window."""
    left, top, right, bottom = box(page, selector)
    width, height = page.evaluate("() => [window.innerWidth, window.innerHeight]")
    return left >= 0 and top >= 0 and right <= width and bottom <= height


# Whether an element's text and controls sit on one line: every box of its content overlaps
# every other vertically.
ONE_LINE = """element => {
    const range = document.createRange();
    range.selectNodeContents(element);
    const boxes = [...range.getClientRects()].filter((box) => box.width > 0);
    return Math.max(...boxes.map((b) => b.top)) < Math.min(...boxes.map((b) => b.bottom));
}"""


def search_with(page, photo_path) -> None:
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#search-button")
    wait_for_results(page)


def wait_for_results(page) -> None:
    page.wait_for_function(
        "() => document.querySelector('#results').getAttribute('aria-busy') === 'false'"
        " && document.querySelector('#message').textContent.includes(' result')"
    )


def test_after_a_search_the_first_result_is_in_view(screen, live_server, photo_path):
    page = screen
    page.goto(live_server.url)
    search_with(page, photo_path)
    assert in_view(page, "#results .result")
    if page.viewport_size == SCREENS["desktop"]["viewport"]:
        # The picture and its controls beside the results, all of them in view: no scrolling.
        assert page.evaluate("() => window.scrollY") == 0
        assert in_view(page, "#preview") and in_view(page, "#search-button")
        assert box(page, "#search-form")[2] <= box(page, "#results .result")[0]


def test_find_similar_far_down_the_list_brings_the_new_first_result_into_view(
    screen, live_server, photo_path
):
    page = screen
    page.goto(live_server.url)
    search_with(page, photo_path)
    page.locator("#results .similar-button").last.click()  # scrolled to first
    page.wait_for_function("() => document.querySelectorAll('#results .result').length === 4")
    wait_for_results(page)
    assert in_view(page, "#results .result")


@pytest.mark.parametrize("size", SCREENS)
def test_without_javascript_the_results_are_in_view_after_a_search(
    browser, live_server, tagged, photo_path, size
):
    context = browser.new_context(java_script_enabled=False, **SCREENS[size])
    page = context.new_page()
    page.goto(live_server.url)
    page.set_input_files("#file", photo_path)
    page.click("#search-button")
    page.wait_for_selector("#results .result")
    assert page.locator("#results .result-title").first.inner_text() == "coffee"
    assert in_view(page, "#results .result")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"no-javascript-{size}.png", full_page=True)
    context.close()


def test_the_region_instructions_take_one_line_and_the_rest_is_behind_a_help_toggle(
    screen, live_server, photo_path
):
    page = screen
    page.goto(live_server.url)
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#region-tools:not([hidden])")
    line = page.locator(".region-line")
    assert line.inner_text().startswith("Drag on the picture to search part of it.")
    assert line.evaluate(ONE_LINE)
    page.locator("#file").evaluate(
        "input => input.addEventListener('click', () => { window.opened = true; })"
    )
    help_toggle = page.locator("#region-help")
    assert help_toggle.get_attribute("aria-expanded") == "false"
    assert page.locator("#region-hint").is_hidden()

    help_toggle.click()
    assert help_toggle.get_attribute("aria-expanded") == "true"
    assert page.locator("#region-hint").is_visible()
    assert "Shift+arrow keys resize" in page.inner_text("#region-hint")
    assert page.evaluate("() => window.opened !== true")  # the toggle is not the file picker

    help_toggle.click()
    assert page.locator("#region-hint").is_hidden()
    # Hidden or not, the keys stay the picture's description for screen readers.
    assert "region-hint" in page.get_attribute("#region-frame", "aria-describedby")


ITEM_PAGE = "https://shop.example/items/coffee?colour=brown"


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_a_result_whose_item_has_a_web_page_offers_view_item(
    browser, live_server, tagged, photo_path, javascript
):
    CatalogImage.objects.filter(pk=tagged["coffee.png"].pk).update(link_url=ITEM_PAGE)
    # Written past the model's validation, as a bad feed or an old row could hold it.
    CatalogImage.objects.filter(pk=tagged["rocket.jpg"].pk).update(link_url="javascript:alert(1)")
    context = browser.new_context(java_script_enabled=javascript, **SCREENS["desktop"])
    page = context.new_page()
    page.goto(live_server.url)
    page.set_input_files("#file", photo_path)
    page.click("#search-button")
    page.wait_for_selector("#results .result")

    cards = {
        card.locator(".result-title").inner_text(): card
        for card in page.locator("#results .result").all()
    }
    coffee = cards["coffee"]
    link = coffee.get_by_role("link", name="View item")
    assert link.inner_text() == "View item"
    assert link.get_attribute("href") == ITEM_PAGE
    assert link.get_attribute("target") == "_blank"
    assert "noopener" in link.get_attribute("rel").split()
    # The thumbnail still opens the picture.
    image_url = coffee.locator(".result-link").get_attribute("href")
    assert image_url.endswith(tagged["coffee.png"].image_url)
    for title in ("rocket", "astronaut", "chelsea", "brick"):
        assert cards[title].locator(".item-link").count() == 0, title
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"view-item-{'' if javascript else 'no-'}javascript.png")
    context.close()

"""Region search on the search page: drag a rectangle on the preview, or make and move it with
the keyboard, and only that part of the picture is searched. The crop is cut from the
original picture in the browser, before it is shrunk to 640 px; the API sees a plain image.

The query is a 2000 x 1000 picture of two catalog photos side by side: the brick wall on the
left half, the astronaut on the right. As a whole it looks most like neither of them (to the
test's random-weights model, whose centre crop sees half of each), so only a region that
reaches the server finds them.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.conftest import encode, photo

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
LEFT, RIGHT = "brick", "astronaut"
SIDE = 1000  # each half is SIDE x SIDE pixels; both photos are square


@pytest.fixture
def two_photos_path(tmp_path):
    composite = Image.new("RGB", (2 * SIDE, SIDE))
    composite.paste(photo(f"{LEFT}.png").resize((SIDE, SIDE)), (0, 0))
    composite.paste(photo(f"{RIGHT}.png").resize((SIDE, SIDE)), (SIDE, 0))
    path = tmp_path / "two-photos.jpg"
    path.write_bytes(encode(composite))
    return path


@pytest.fixture
def chosen(page, live_server, two_photos_path):
    """The page with the two photos chosen, ready to search."""
    page.goto(live_server.url)
    page.set_input_files("#file", two_photos_path)
    page.wait_for_selector("#region-tools:not([hidden])")
    return page


def search(page, action) -> tuple[list[str], tuple[int, int]]:
    """Run `action` (which starts a search) and return the result titles in order, with the
    size of the picture the page sent."""
    with page.expect_response("**/api/search/") as response:
        action()
    page.wait_for_function(
        "() => document.querySelector('#message').textContent.includes(' result')"
    )
    sent = response.value.request.post_data_json["image"]
    picture = Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1])))
    return page.locator("#results .result-title").all_inner_texts(), picture.size


def click_search(page):
    return search(page, lambda: page.click("#search-button"))


def press_enter(page):
    return search(page, lambda: page.keyboard.press("Enter"))


def drag_half(page, side: str) -> None:
    """Drag with the mouse from the bottom of the preview's middle line to past its top
    `side` corner (the region stops at the picture's edges)."""
    box = page.locator("#preview").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 1)
    page.mouse.down()
    beyond = box["x"] - 20 if side == "left" else box["x"] + box["width"] + 20
    page.mouse.move(beyond, box["y"] - 20, steps=5)
    page.mouse.up()


def region_status(page) -> str:
    return page.inner_text("#region-status")


def test_a_region_dragged_on_the_preview_searches_only_that_part(chosen):
    page = chosen
    whole, size = click_search(page)
    assert size == (640, 320)  # the whole picture, shrunk
    assert whole[0] not in (LEFT, RIGHT), "the whole picture must not find either photo first"

    drag_half(page, "right")
    assert "selected region" in page.inner_text("#message")
    titles, _ = click_search(page)
    assert titles[0] == RIGHT

    page.click("#region-clear")  # "Whole picture"
    assert page.locator("#region").is_hidden()
    assert region_status(page) == "Searching the whole picture."
    assert click_search(page) == (whole, (640, 320))

    drag_half(page, "left")
    titles, _ = click_search(page)
    assert titles[0] == LEFT


def test_the_region_is_made_moved_and_resized_with_the_keyboard(chosen):
    page = chosen
    page.focus("#region-frame")
    assert page.evaluate("document.activeElement.id") == "region-frame"
    assert page.get_attribute("#region-frame", "aria-label")
    assert "Shift+arrow keys resize" in page.inner_text("#region-hint")

    page.keyboard.press("ArrowRight")  # no region yet: one appears in the middle
    assert region_status(page) == (
        "Region: 50% wide, 50% high, 25% from the left, 25% from the top."
    )
    for key in ["ArrowUp"] * 5 + ["Shift+ArrowDown"] * 10 + ["ArrowRight"] * 5:
        page.keyboard.press(key)
    assert region_status(page) == (
        "Region: 50% wide, 100% high, 50% from the left, 0% from the top."
    )
    titles, _ = press_enter(page)
    assert titles[0] == RIGHT

    for _ in range(20):  # it stops at the picture's left edge
        page.keyboard.press("ArrowLeft")
    assert region_status(page).endswith("0% from the left, 0% from the top.")
    titles, _ = press_enter(page)
    assert titles[0] == LEFT

    page.keyboard.press("Escape")
    assert region_status(page) == "Searching the whole picture."
    assert page.locator("#region").is_hidden()


def test_the_region_is_cut_from_the_original_before_it_is_shrunk(chosen):
    page = chosen
    page.click("#region-select")  # 1000 x 500 px in the middle, and the focus on the picture
    for key in ["Shift+ArrowLeft"] * 5 + ["Shift+ArrowUp"] * 2:  # 100 and 50 px a step
        page.keyboard.press(key)
    assert "selected region (500 x 400 px)" in page.inner_text("#message")
    page.set_viewport_size({"width": 420, "height": 900})  # a smaller preview, the same region
    _, size = click_search(page)
    # Cut from a 640 px copy, the same part would have been 160 x 128 pixels.
    assert size == (500, 400)

    drag_half(page, "right")  # a right half of 1000 x ~1000 px
    _, size = click_search(page)
    assert max(size) == 640 and size[0] >= 638  # shrunk from the original's pixels: not 320


def test_a_click_is_not_a_region_and_find_similar_has_no_region_tool(chosen, two_photos_path):
    page = chosen
    page.evaluate(
        "document.getElementById('file').addEventListener('click', () => window.opened = true)"
    )
    box = page.locator("#preview").bounding_box()
    page.mouse.move(box["x"] + 50, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 54, box["y"] + 53)  # less than 8 px: a click
    page.mouse.up()
    assert page.locator("#region").is_hidden()
    assert page.evaluate("window.opened !== true")  # clicking the picture keeps it

    drag_half(page, "right")
    assert page.locator("#region").is_visible()
    page.set_input_files("#file", [])
    page.set_input_files("#file", two_photos_path)  # a new choice starts from the whole
    page.wait_for_function("() => document.querySelector('#message').textContent.includes('whole')")
    assert page.locator("#region").is_hidden()

    click_search(page)
    page.locator("#results .result").first.locator(".similar-button").click()
    page.wait_for_function("() => document.querySelectorAll('#results .result').length === 4")
    assert page.locator("#region-tools").is_hidden()
    assert page.get_attribute("#region-frame", "tabindex") is None

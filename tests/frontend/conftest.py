"""Fixtures shared by the search page's tests.

Predicates for `page.wait_for_function` are written as functions ("() => ..."): Playwright
evaluates a bare expression with eval, which the pages' Content-Security-Policy refuses.
"""

from pathlib import Path

import pytest

from tests.conftest import photo_bytes

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture
def photo_path(tmp_path):
    """A JPEG of the coffee photo, to choose in the page."""
    path = tmp_path / "query.jpg"
    path.write_bytes(photo_bytes("coffee.png"))
    return path


@pytest.fixture
def page(browser, live_server, tagged, request):
    """A desktop-sized browser page, not yet opened, once the tagged catalog exists. It
    leaves a screenshot of how the test ended under artifacts/screenshots/."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()


# The screens the layout is checked at: the laptop, and a phone (in portrait).
SCREENS = {
    "desktop": {"viewport": {"width": 1280, "height": 900}},
    "phone": {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True},
}


@pytest.fixture(params=SCREENS)
def screen(request, browser, live_server, tagged):
    """A browser page at each of SCREENS' sizes in turn (its name is `request.param`), not
    yet opened, once the tagged catalog exists; it leaves a screenshot like `page`."""
    context = browser.new_context(**SCREENS[request.param])
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()

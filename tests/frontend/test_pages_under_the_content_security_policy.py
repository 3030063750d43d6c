"""Every page works under the Content-Security-Policy, in a real headless Chromium: the
search page (a file, a region, a web address, "Find similar"), the admin's image list and
the API docs. The browser reports each thing the policy blocks as a
`securitypolicyviolation` event and a console message; none may appear.
"""

from __future__ import annotations

import pytest

from tests.frontend.conftest import SCREENSHOTS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Runs in every document before its own scripts, so violations during parsing count too.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"}` +
      ` at ${event.sourceFile}:${event.lineNumber}`
  );
});
"""


class Watched:
    """A browser page whose policy violations are recorded, event and console alike."""

    def __init__(self, page):
        self.page = page
        self.console: list[str] = []
        page.on("console", self._console)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.console.append(message.text)

    def violations(self) -> list[str]:
        return self.page.evaluate("window.cspViolations") + self.console

    def goto(self, url: str) -> dict[str, str]:
        """Open `url` and return the headers of its answer."""
        response = self.page.goto(url)
        assert response.ok, response.status
        return response.headers


@pytest.fixture
def watched(browser, request):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield Watched(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()


def loaded(page, selector: str) -> bool:
    """Whether the first image matching `selector` was fetched and decoded."""
    return page.eval_on_selector(selector, "image => image.complete && image.naturalWidth > 0")


def search_and_wait(page, action) -> None:
    with page.expect_response("**/api/search/"):
        action()
    page.wait_for_selector("#search-button:enabled")


def test_the_search_page_works_under_the_policy_with_no_violation(
    watched, live_server, tagged, photo_path, pictures, loopback_allowed
):
    page = watched.page
    headers = watched.goto(live_server.url)
    assert "script-src 'self'" in headers["content-security-policy"]

    # A file: preview, region tool, search, results with their thumbnails.
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#region-tools:not([hidden])")
    assert loaded(page, "#preview")
    search_and_wait(page, lambda: page.click("#search-button"))
    page.wait_for_selector("#results .result")
    assert page.locator("#results .result-title").first.inner_text() == "coffee"
    # Predicates as functions: Playwright evaluates a bare expression with eval, which the
    # policy refuses like any other.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .result-image')]"
        ".every((image) => image.complete && image.naturalWidth > 0)"
    )

    # A region, dragged on the preview: its box is placed through element.style.
    box = page.locator("#preview").bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert page.locator("#region").bounding_box()["width"] > 20

    # "Find similar" on a result.
    search_and_wait(page, lambda: page.locator("#results .similar-button").nth(1).click())
    page.wait_for_selector("#results .result")

    # A web address: its picture is previewed from the other server, then searched.
    url = pictures.url("/picture.jpg")
    page.fill("#image-url", url)
    page.click("#image-url-use")
    page.wait_for_function("() => document.querySelector('#preview').naturalWidth > 0")
    search_and_wait(page, lambda: page.click("#search-button"))
    assert page.locator("#results .result-title").first.inner_text() == "coffee"

    assert watched.violations() == []


def test_the_admin_image_list_works_under_its_policy_with_no_violation(
    watched, live_server, tagged, django_user_model
):
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-the-test")
    page = watched.page
    headers = watched.goto(f"{live_server.url}/admin/login/")
    assert "script-src 'self'" in headers["content-security-policy"]
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-for-the-test")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    page.goto(f"{live_server.url}/admin/catalog/catalogimage/")
    page.wait_for_selector("#result_list")
    # The thumbnails' size comes from a style attribute, which the admin's policy allows.
    thumbnail = page.locator("#result_list img").first
    assert thumbnail.evaluate("image => getComputedStyle(image).height") == "48px"
    # The admin's own scripts run: the select-all box ticks every row.
    page.click("#action-toggle")
    assert page.locator("#result_list input.action-select:checked").count() == len(tagged)
    assert watched.violations() == []


def test_the_api_docs_work_under_their_policy_with_no_violation(watched, live_server):
    page = watched.page
    headers = watched.goto(f"{live_server.url}/api/docs/")
    assert "script-src 'self'" in headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Visual Search API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag-section")
    assert watched.violations() == []

"""The search page passes an automated accessibility audit: axe-core, run in Chromium, finds
no serious or critical violation at a laptop's and a phone's size, before a search, with a
picture chosen and the keyboard help open, after a search, and on the page the server
renders for a search without JavaScript.

axe-core comes from the axe-playwright-python package (requirements/dev.txt), which ships
axe.min.js: nothing is downloaded when the tests run.
"""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SEVERE = {"serious", "critical"}
AUDIT_OPTIONS = {
    "resultTypes": ["violations"],
    # Off by default in axe-core (experimental), and the one that caught the "Find similar"
    # buttons, whose accessible names did not contain their visible words.
    "rules": {"label-content-name-mismatch": {"enabled": True}},
}


def severe_violations(page) -> list[str]:
    """The serious and critical violations axe-core finds on the page, one line each.

    axe is injected with page.evaluate, which runs through the browser's DevTools protocol:
    the page's Content-Security-Policy does not apply to it, so the audit's context needs
    no bypass_csp, and the page is audited under the policy it is served with.
    """
    results = Axe().run(page, options=AUDIT_OPTIONS)
    return [
        f"{violation['id']} ({violation['impact']}): "
        + ", ".join(" ".join(node["target"]) for node in violation["nodes"])
        for violation in results.response["violations"]
        if violation["impact"] in SEVERE
    ]


def test_the_page_has_no_serious_violations_before_and_after_a_search(
    screen, live_server, photo_path
):
    page = screen
    page.goto(live_server.url)
    assert severe_violations(page) == []

    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#region-tools:not([hidden])")
    page.click("#region-help")
    assert page.locator("#region-hint").is_visible()
    assert severe_violations(page) == []

    page.click("#search-button")
    page.wait_for_selector("#results .result")
    assert page.locator("#results .similar-button").count() == 5
    assert severe_violations(page) == []


def test_the_page_rendered_for_a_search_without_javascript_has_no_serious_violations(
    screen, live_server, photo_path
):
    page = screen
    page.goto(live_server.url)
    page.set_input_files("#file", photo_path)
    # form.submit() posts the form as a browser without JavaScript does (it fires no submit
    # event for search.js to take), and the server renders the results.
    with page.expect_navigation():
        page.locator("#search-form").evaluate("form => form.submit()")
    assert page.locator("#results .result").count() == 5
    assert severe_violations(page) == []

"""The search page's tag toggles: shown with their counts, applied to the search, kept in
the page's URL so that a filtered search can be shared; with and without JavaScript."""

from __future__ import annotations

import pytest

from tests.conftest import photo_file

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def result_titles(page) -> set[str]:
    return set(page.locator("#results .result-title").all_inner_texts())


def search_with(page, photo_path) -> None:
    page.set_input_files("#file", photo_path)
    page.wait_for_selector("#preview:not([hidden])")
    page.click("#search-button")
    page.wait_for_function(
        "() => document.querySelector('#message').textContent.includes('result')"
    )


def test_toggles_filter_the_search_and_live_in_the_url(page, live_server, photo_path):
    page.goto(f"{live_server.url}/?tags=space")
    toggles = page.locator("#tags input[name=tags]")
    assert toggles.evaluate_all("boxes => boxes.map(b => b.value)") == [
        "animal",
        "food",
        "person",
        "space",
        "texture",
    ]
    assert "space (2)" in page.locator("#tags").inner_text()
    assert page.locator("#tags input[value=space]").is_checked()
    search_with(page, photo_path)
    assert result_titles(page) == {"rocket", "astronaut"}

    page.check("#tags input[value=food]")
    assert page.url.endswith("/?tags=food%2Cspace") or page.url.endswith("/?tags=food,space")
    # A toggle searches again with the picture already chosen.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .result-title')]"
        ".some(title => title.textContent === 'coffee')"
    )
    assert result_titles(page) == {"rocket", "astronaut", "coffee"}

    page.uncheck("#tags input[value=food]")
    page.uncheck("#tags input[value=space]")
    assert page.url == f"{live_server.url}/"
    page.wait_for_function("() => document.querySelectorAll('#results .result').length === 5")


def test_without_javascript_the_form_sends_the_checked_tags(client, tagged):
    page = client.get("/?tags=animal")
    assert 'value="animal" checked' in page.content.decode()
    answer = client.post("/", {"image": photo_file("coffee.png"), "tags": ["animal", "FOOD"]})
    html = answer.content.decode()
    assert answer.status_code == 200
    titles = {title for title in ("coffee", "chelsea", "rocket") if f">{title}<" in html}
    assert titles == {"coffee", "chelsea"}
    assert 'value="animal" checked' in html and 'value="food" checked' in html

"""README.md and docs/*.md link to each other by relative path and heading anchor; every such
link must lead somewhere, and every docs page must be reachable from the README.

Anchors follow GitHub's rules: the heading's text (inline code, emphasis and link markup
dropped) in lowercase, punctuation other than hyphens and underscores removed, each space
turned into a hyphen; a repeated heading gets -1, -2, ... Links to http(s) and mailto
addresses are not followed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", flags=re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the text may run over a line break.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]*)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", flags=re.MULTILINE)
EXTERNAL = ("http://", "https://", "mailto:")


def without_code(text: str) -> str:
    """The text with fenced blocks blanked (line count kept) and inline code removed."""
    text = FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)
    return INLINE_CODE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor the headings of a page give, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[str]:
    return [target for target in LINK.findall(without_code(text)) if target]


def broken_links(page: Path) -> list[str]:
    """The targets of `page` that lead to no file, or to no heading of the file they name."""
    broken = []
    for target in links(page.read_text()):
        if target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists() or (anchor and anchor not in anchors_of(destination)):
            broken.append(target)
    return broken


def anchors_of(destination: Path) -> set[str]:
    return anchors(destination.read_text()) if destination.suffix == ".md" else set()


def test_the_pages_this_test_reads_exist():
    # Guards against a glob that finds nothing and a test that passes vacuously.
    assert README.exists()
    assert len(DOCS) >= 5
    assert len(links(README.read_text())) >= len(DOCS)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    targets = {target.partition("#")[0] for target in links(README.read_text())}
    assert {str(page.relative_to(ROOT)) for page in DOCS} - targets == set()


def test_anchors_follow_githubs_rules():
    assert slug("Answers in the API's contract") == "answers-in-the-apis-contract"
    assert slug("Engine, threads and precision") == "engine-threads-and-precision"
    assert slug("Quality: `evaluate_search`") == "quality-evaluate_search"
    assert slug("[Pinecone](https://pinecone.io) *hosting*") == "pinecone-hosting"
    assert anchors("# Notes\n\n## Notes\n\n### Notes\n") == {"notes", "notes-1", "notes-2"}


def test_a_link_to_a_missing_heading_or_file_is_reported(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## Some part\n")
    page.write_text(
        "# Page\n\n"
        "[fine](#page), [fine too](other.md#some-part), [web](https://example.com/#nothing)\n"
        "[no heading](#nowhere), [no part](other.md#no-part), [no file](missing.md)\n"
        "```\n[inside a code block](#ignored)\n```\n"
        "`[inline code](#ignored-too)`\n"
        "[over a line\nbreak](other.md#nope)\n"
    )
    assert broken_links(page) == ["#nowhere", "other.md#no-part", "missing.md", "other.md#nope"]

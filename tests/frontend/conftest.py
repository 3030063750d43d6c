"""Fixtures shared by the search page's tests."""

import pytest

from tests.conftest import photo_bytes


@pytest.fixture
def photo_path(tmp_path):
    """A JPEG of the coffee photo, to choose in the page."""
    path = tmp_path / "query.jpg"
    path.write_bytes(photo_bytes("coffee.png"))
    return path

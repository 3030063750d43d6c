"""visualsearch.env: a variable with a bad value stops the start with its name, never a
value the settings would quietly misread."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from visualsearch.env import env_float, env_int, env_json, env_ports


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"])
def test_a_number_that_is_not_finite_is_refused(monkeypatch, raw):
    monkeypatch.setenv("URL_FETCH_DEADLINE_SECONDS", raw)
    with pytest.raises(ImproperlyConfigured, match="URL_FETCH_DEADLINE_SECONDS"):
        env_float("URL_FETCH_DEADLINE_SECONDS", 15.0, minimum=0.1)


def test_a_finite_number_is_read(monkeypatch):
    monkeypatch.setenv("URL_FETCH_DEADLINE_SECONDS", " 2.5 ")
    assert env_float("URL_FETCH_DEADLINE_SECONDS", 15.0, minimum=0.1) == 2.5


@pytest.mark.parametrize("raw", ["nan", "inf", "1.5", "1e3", "ten"])
def test_a_whole_number_must_be_one(monkeypatch, raw):
    monkeypatch.setenv("IMAGE_MAX_BYTES", raw)
    with pytest.raises(ImproperlyConfigured, match="IMAGE_MAX_BYTES"):
        env_int("IMAGE_MAX_BYTES", 10, minimum=1)


def test_a_whole_number_above_its_maximum_is_refused(monkeypatch):
    monkeypatch.setenv("URL_FETCH_MAX_IN_FLIGHT", "100")
    with pytest.raises(ImproperlyConfigured, match="URL_FETCH_MAX_IN_FLIGHT"):
        env_int("URL_FETCH_MAX_IN_FLIGHT", 2, minimum=1, maximum=64)


@pytest.mark.parametrize("raw", ['{"timeout": NaN}', '{"timeout": Infinity}', "-Infinity"])
def test_json_with_numbers_that_are_not_finite_is_refused(monkeypatch, raw):
    monkeypatch.setenv("IMAGE_STORAGE_OPTIONS", raw)
    with pytest.raises(ImproperlyConfigured, match="IMAGE_STORAGE_OPTIONS"):
        env_json("IMAGE_STORAGE_OPTIONS", {})


@pytest.mark.parametrize(
    ("raw", "ports"), [("80,443", (80, 443)), (" 8080 , 443,", (8080, 443)), ("", (80, 443))]
)
def test_ports_are_read_as_a_list(monkeypatch, raw, ports):
    monkeypatch.setenv("URL_FETCH_PORTS", raw)
    assert env_ports("URL_FETCH_PORTS", (80, 443)) == ports


@pytest.mark.parametrize("raw", ["http", "0", "65536", "80;443", "-1", "8.0"])
def test_a_port_that_is_not_one_is_refused(monkeypatch, raw):
    monkeypatch.setenv("URL_FETCH_PORTS", raw)
    with pytest.raises(ImproperlyConfigured, match="URL_FETCH_PORTS"):
        env_ports("URL_FETCH_PORTS", (80, 443))

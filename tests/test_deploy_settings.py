"""HTTPS=true behind a TLS proxy: a clean `check --deploy`, and https:// URLs in answers."""

from __future__ import annotations

import json
import secrets

import pytest

from catalog import services
from tests.conftest import b64, photo_bytes, photo_file
from tests.project_process import project_env, run_manage, run_python

SEARCH = "/api/search/"
HEALTH = "/api/health/"


def production_env(tmp_path, **variables: str) -> dict[str, str]:
    """The variables the README's deployment sections set, with `variables` on top."""
    production = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "search.example.com",
        "TRUSTED_PROXIES": "1",
        "HTTPS": "true",
    }
    return project_env(tmp_path, **(production | variables))


def settings_in(env: dict[str, str], *names: str) -> dict:
    """The values of settings `names` as a process started with `env` reads them."""
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name, None) for name in {names!r}}}))"
    )
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def check_deploy(env: dict[str, str]):
    return run_manage("check", "--deploy", "--fail-level", "WARNING", env=env)


def test_check_deploy_passes_with_the_production_variables(tmp_path):
    result = check_deploy(production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_without_https(tmp_path):
    result = check_deploy(production_env(tmp_path, HTTPS="false"))
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_https_turns_on_secure_cookies_redirects_and_a_year_of_hsts(tmp_path):
    values = settings_in(
        production_env(tmp_path),
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
    )
    assert values == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": False,
    }


def test_without_https_nothing_is_forced(tmp_path):
    values = settings_in(
        project_env(tmp_path), "SESSION_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"
    )
    assert values == {
        "SESSION_COOKIE_SECURE": False,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
    }


def test_hsts_can_start_low(tmp_path):
    env = production_env(tmp_path, HSTS_SECONDS="300")
    assert settings_in(env, "SECURE_HSTS_SECONDS") == {"SECURE_HSTS_SECONDS": 300}
    assert check_deploy(env).returncode == 0


def test_preload_is_refused_with_a_short_hsts(tmp_path):
    env = production_env(tmp_path, HSTS_SECONDS="300", HSTS_PRELOAD="true")
    result = run_python("from django.conf import settings; settings.SECRET_KEY", env)
    assert result.returncode != 0
    assert "HSTS_PRELOAD=true needs HSTS_SECONDS of at least 31536000" in result.stderr


def test_csrf_trusted_origins_follow_the_allowed_hosts_under_https(tmp_path):
    env = production_env(tmp_path, ALLOWED_HOSTS="search.example.com,.example.org,*")
    assert settings_in(env, "CSRF_TRUSTED_ORIGINS") == {
        "CSRF_TRUSTED_ORIGINS": ["https://search.example.com", "https://*.example.org"]
    }
    env["CSRF_TRUSTED_ORIGINS"] = "https://admin.example.com"
    assert settings_in(env, "CSRF_TRUSTED_ORIGINS") == {
        "CSRF_TRUSTED_ORIGINS": ["https://admin.example.com"]
    }


def test_the_forwarded_protocol_is_believed_only_behind_trusted_proxies(tmp_path):
    behind_proxy = settings_in(production_env(tmp_path), "SECURE_PROXY_SSL_HEADER")
    assert behind_proxy == {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}
    no_proxy = settings_in(production_env(tmp_path, TRUSTED_PROXIES="0"), "SECURE_PROXY_SSL_HEADER")
    assert no_proxy == {"SECURE_PROXY_SSL_HEADER": None}


# The same settings, applied to this process's requests: what a client sees.
TRUSTED_PROXY_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A TLS proxy passes on the client's Host and says the client spoke HTTPS.
BEHIND_THE_PROXY = {"Host": "testserver", "X-Forwarded-Proto": "https"}


@pytest.fixture
def catalog(db):
    image, _ = services.image_create(file=photo_file("coffee.png"), title="coffee")
    services.images_index(image_ids=[image.pk])
    return image


def search_urls(client, headers: dict[str, str]) -> list[str]:
    response = client.post(
        SEARCH,
        {"image": b64(photo_bytes("coffee.png")), "top_k": 1},
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 200, response.content
    result = response.json()["results"][0]
    return [result["image_url"], result["thumbnail_url"]]


def test_behind_a_trusted_proxy_search_answers_with_https_urls(client, settings, catalog):
    settings.SECURE_PROXY_SSL_HEADER = TRUSTED_PROXY_HEADER
    urls = search_urls(client, BEHIND_THE_PROXY)
    assert all(url.startswith("https://testserver/media/") for url in urls), urls


def test_without_trusted_proxies_the_forwarded_protocol_is_ignored(client, settings, catalog):
    settings.SECURE_PROXY_SSL_HEADER = None
    urls = search_urls(client, BEHIND_THE_PROXY)
    assert all(url.startswith("http://testserver/media/") for url in urls), urls


@pytest.mark.django_db
def test_plain_http_is_redirected_except_the_health_check(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = TRUSTED_PROXY_HEADER
    redirected = client.get("/")
    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/"
    assert client.get("/", headers=BEHIND_THE_PROXY).status_code == 200
    # A container health check calls the app over plain HTTP, past the proxy.
    assert client.get(HEALTH).status_code == 200


def test_reading_the_settings_imports_no_model_or_image_library(tmp_path):
    # Every manage.py command, gunicorn's master and Celery's beat read the settings.
    code = (
        "import sys, visualsearch.settings;"
        "print(sorted(m for m in ('numpy', 'PIL', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    done = run_python(code, project_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

"""HTTPS=true behind a TLS proxy: a clean `check --deploy`, https:// URLs in answers, and
forwarded headers believed only from the proxy's own networks."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import subprocess
import sys
import time

import pytest

from catalog import services
from catalog.pipeline.indexing import images_index
from tests.conftest import b64, photo_bytes, photo_file
from tests.project_process import ROOT, project_env, run_manage, run_python

SEARCH = "/api/search/"
# The container HEALTHCHECK and Railway call liveness; load balancers may call readiness.
HEALTH_PATHS = ("/api/health/live/", "/api/health/ready/", "/api/health/")


def production_env(tmp_path, **variables: str) -> dict[str, str]:
    """The variables docs/deploy.md's sections set, with `variables` on top."""
    production = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "search.example.com",
        "TRUSTED_PROXY_NETWORKS": "10.0.0.0/8",
        "HTTPS": "true",
        # Rate limits shared by every web process and replica.
        "CACHE_URL": "redis://127.0.0.1:6379/1",
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


def test_https_turns_on_secure_cookies_redirects_and_five_minutes_of_hsts(tmp_path):
    # Browsers remember HSTS for its whole max-age: a first deployment starts short and
    # leaves sibling hosts alone until the operator raises it (HSTS_SECONDS) or opts in.
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
        "SECURE_HSTS_SECONDS": 300,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
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


def test_hsts_is_raised_to_a_year_with_subdomains_by_the_operator(tmp_path):
    env = production_env(tmp_path, HSTS_SECONDS="31536000", HSTS_INCLUDE_SUBDOMAINS="true")
    assert settings_in(env, "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS") == {
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    }
    result = check_deploy(env)
    assert result.returncode == 0, result.stdout + result.stderr


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


def test_the_forwarded_protocol_is_read_only_with_proxy_networks(tmp_path):
    behind_proxy = settings_in(production_env(tmp_path), "SECURE_PROXY_SSL_HEADER")
    assert behind_proxy == {"SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}
    no_proxy = settings_in(
        production_env(tmp_path, TRUSTED_PROXY_NETWORKS=""), "SECURE_PROXY_SSL_HEADER"
    )
    assert no_proxy == {"SECURE_PROXY_SSL_HEADER": None}


def test_check_deploy_fails_without_a_shared_cache_for_the_rate_limit(tmp_path):
    # Each process (and replica) would count its own share of a client's searches, and
    # forget them past its own memory's bound.
    result = check_deploy(production_env(tmp_path, CACHE_URL=""))
    assert result.returncode != 0
    assert "visualsearch.E001" in result.stderr
    assert "CACHE_URL" in result.stderr
    # Without the --fail-level option too: an error, not a warning.
    plain = run_manage("check", "--deploy", env=production_env(tmp_path, CACHE_URL=""))
    assert plain.returncode != 0


def test_check_deploy_needs_no_shared_cache_when_the_rate_limit_is_off(tmp_path):
    result = check_deploy(production_env(tmp_path, CACHE_URL="", SEARCH_RATE_LIMIT=""))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_warns_when_https_has_no_proxy_to_say_so(tmp_path):
    # Behind a TLS proxy whose headers are not believed, every request looks like plain
    # HTTP and is redirected to itself.
    result = check_deploy(production_env(tmp_path, TRUSTED_PROXY_NETWORKS=""))
    assert result.returncode != 0
    assert "visualsearch.W001" in result.stderr
    assert "TRUSTED_PROXY_NETWORKS" in result.stderr


def test_a_proxy_count_without_proxy_networks_refuses_to_start(tmp_path):
    # The count alone believed the header from any peer, a client at the published port too.
    env = production_env(tmp_path, TRUSTED_PROXY_NETWORKS="", TRUSTED_PROXIES="1")
    result = run_python("from django.conf import settings; settings.SECRET_KEY", env)
    assert result.returncode != 0
    assert "TRUSTED_PROXIES=1 needs TRUSTED_PROXY_NETWORKS" in result.stderr


def test_a_proxy_count_with_networks_still_starts(tmp_path):
    env = production_env(tmp_path, TRUSTED_PROXY_NETWORKS="0.0.0.0/0,::/0", TRUSTED_PROXIES="1")
    assert settings_in(env, "TRUSTED_PROXIES", "TRUSTED_PROXY_NETWORKS") == {
        "TRUSTED_PROXIES": 1,
        "TRUSTED_PROXY_NETWORKS": ["0.0.0.0/0", "::/0"],
    }


@pytest.mark.parametrize("networks", ["10.0.0.0/33", "proxy.internal", "10.0.0.0/8,,nope"])
def test_a_proxy_network_that_is_not_one_refuses_to_start(tmp_path, networks):
    env = production_env(tmp_path, TRUSTED_PROXY_NETWORKS=networks)
    result = run_python("from django.conf import settings; settings.SECRET_KEY", env)
    assert result.returncode != 0
    assert "TRUSTED_PROXY_NETWORKS" in result.stderr


def test_proxy_networks_that_cover_everyone_need_a_proxy_count(tmp_path):
    # Every hop would then count as a proxy, down to the client's own left-hand entries.
    everyone = production_env(tmp_path, TRUSTED_PROXY_NETWORKS="0.0.0.0/0,::/0")
    result = check_deploy(everyone)
    assert result.returncode != 0
    assert "visualsearch.W002" in result.stderr
    counted = check_deploy(everyone | {"TRUSTED_PROXIES": "1"})
    assert counted.returncode == 0, counted.stdout + counted.stderr


@pytest.mark.parametrize(
    ("backend", "refused"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", True),
        ("django.core.cache.backends.dummy.DummyCache", True),
        ("django.core.cache.backends.redis.RedisCache", False),
        ("django.core.cache.backends.db.DatabaseCache", False),
    ],
)
def test_the_rate_limit_needs_a_cache_every_process_shares(settings, backend, refused):
    from visualsearch.checks import rate_limit_has_a_shared_cache

    settings.SEARCH_RATE_LIMIT = "120/min"
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": "redis://127.0.0.1:6379/1"}}
    errors = rate_limit_has_a_shared_cache(None)
    assert [error.id for error in errors] == (["visualsearch.E001"] if refused else [])


def test_a_single_process_cache_keeps_many_clients_histories(tmp_path):
    values = settings_in(project_env(tmp_path), "CACHES")
    assert values["CACHES"]["default"]["OPTIONS"]["MAX_ENTRIES"] >= 100_000


# The same settings, applied to this process's requests: what a client sees.
TRUSTED_PROXY_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A TLS proxy passes on the client's Host and says the client spoke HTTPS.
BEHIND_THE_PROXY = {"Host": "testserver", "X-Forwarded-Proto": "https"}


@pytest.fixture
def catalog(db):
    image, _ = services.image_create(file=photo_file("coffee.png"), title="coffee")
    images_index(image_ids=[image.pk])
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


@pytest.fixture
def behind_a_trusted_proxy(settings):
    """This process's requests come from 127.0.0.1: the proxy's network here."""
    settings.SECURE_PROXY_SSL_HEADER = TRUSTED_PROXY_HEADER
    settings.TRUSTED_PROXY_NETWORKS = ["127.0.0.0/8"]


def test_behind_a_trusted_proxy_search_answers_with_https_urls(
    client, behind_a_trusted_proxy, catalog
):
    urls = search_urls(client, BEHIND_THE_PROXY)
    assert all(url.startswith("https://testserver/media/") for url in urls), urls


def test_without_trusted_proxies_the_forwarded_protocol_is_ignored(client, settings, catalog):
    settings.SECURE_PROXY_SSL_HEADER = None
    urls = search_urls(client, BEHIND_THE_PROXY)
    assert all(url.startswith("http://testserver/media/") for url in urls), urls


@pytest.mark.django_db
def test_plain_http_is_redirected_except_the_health_check(client, settings, behind_a_trusted_proxy):
    settings.SECURE_SSL_REDIRECT = True
    redirected = client.get("/")
    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/"
    assert client.get("/", headers=BEHIND_THE_PROXY).status_code == 200
    # A container health check calls the app over plain HTTP, past the proxy.
    for path in HEALTH_PATHS:
        assert client.get(path).status_code == 200, path


@pytest.mark.django_db
def test_a_forwarded_protocol_from_outside_the_proxy_networks_is_not_believed(
    client, settings, behind_a_trusted_proxy
):
    # A client at the published port, past the proxy, cannot say it used HTTPS.
    settings.SECURE_SSL_REDIRECT = True
    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]
    direct = client.get("/", headers=BEHIND_THE_PROXY, REMOTE_ADDR="203.0.113.9")
    assert direct.status_code == 301
    proxied = client.get("/", headers=BEHIND_THE_PROXY, REMOTE_ADDR="10.1.2.3")
    assert proxied.status_code == 200


@pytest.mark.django_db
def test_a_forwarded_protocol_from_outside_the_proxy_networks_is_logged_once(
    client, settings, behind_a_trusted_proxy, caplog
):
    # The redirect loop of a proxy left out of TRUSTED_PROXY_NETWORKS says why in the log.
    from visualsearch import middleware

    middleware.ProxyHeadersMiddleware.warned_peers.clear()
    settings.SECURE_SSL_REDIRECT = True
    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]
    for _ in range(3):
        client.get("/", headers=BEHIND_THE_PROXY, REMOTE_ADDR="172.17.0.1")
    warnings = [r for r in caplog.records if "TRUSTED_PROXY_NETWORKS" in r.getMessage()]
    assert len(warnings) == 1
    assert "172.17.0.1" in warnings[0].getMessage()


def status_from_gunicorn(env: dict[str, str], path: str, headers: dict[str, str]) -> int:
    """The status gunicorn, started as the container starts it, answers to one request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = env | {"HOST": "127.0.0.1", "PORT": str(port), "WEB_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "visualsearch.wsgi",
        "-c",
        "docker/gunicorn.conf.py",
    ]
    web = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", path, headers=headers)
                return connection.getresponse().status
            except ConnectionRefusedError:
                assert web.poll() is None and time.monotonic() < deadline, web.stderr.read()
                time.sleep(0.2)
    finally:
        web.terminate()
        web.communicate(timeout=30)


@pytest.mark.slow
def test_gunicorn_leaves_the_protocol_to_the_proxy_networks(tmp_path):
    # Django falls back to gunicorn's idea of the scheme once the middleware has dropped
    # the header; gunicorn believes X-Forwarded-Proto from FORWARDED_ALLOW_IPS (loopback by
    # default, "*" in many container guides), which would let any client say "https".
    env = production_env(tmp_path, TRUSTED_PROXY_NETWORKS="", FORWARDED_ALLOW_IPS="*")
    headers = {"Host": "search.example.com", "X-Forwarded-Proto": "https"}
    assert status_from_gunicorn(env, "/api/docs/", headers) == 301
    # From the proxy's network, the same request is HTTPS.
    env["TRUSTED_PROXY_NETWORKS"] = "127.0.0.0/8"
    assert status_from_gunicorn(env, "/api/docs/", headers) == 200


def test_reading_the_settings_imports_no_model_or_image_library(tmp_path):
    # Every manage.py command, gunicorn's master and Celery's beat read the settings.
    code = (
        "import sys, visualsearch.settings;"
        "print(sorted(m for m in ('numpy', 'PIL', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    done = run_python(code, project_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

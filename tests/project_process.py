"""Run the project in a fresh Python process with a chosen environment.

Settings are read once per process, from the environment: a setting derived from another
(SECURE_PROXY_SSL_HEADER from TRUSTED_PROXY_NETWORKS, for one) can only be seen in a new process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Variables this test run sets, or that a developer's shell may hold, that would change
# what the child process sees; each test states the ones it means.
_NOT_INHERITED = {
    "DJANGO_SETTINGS_MODULE",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "HTTPS",
    "HSTS_SECONDS",
    "HSTS_INCLUDE_SUBDOMAINS",
    "HSTS_PRELOAD",
    "TRUSTED_PROXIES",
    "TRUSTED_PROXY_NETWORKS",
    "CONTENT_SECURITY_POLICY",
    "CACHE_URL",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "SENTRY_TRACES_SAMPLE_RATE",
    "DATABASE_URL",
    # The browser tests set it in this process (tests/conftest.py); a deployment must not.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
}


def project_env(var_dir: Path, **variables: str) -> dict[str, str]:
    """The current environment without the project's variables, plus `variables`."""
    env = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE="visualsearch.settings",
        VAR_DIR=str(var_dir),
        CELERY_BROKER_URL="memory://",
        EMBEDDING_WEIGHTS="random",
    )
    env.update(variables)
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

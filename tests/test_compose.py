"""docker/compose.yaml's Redis asks for a password, and every service that uses it gives it.

Whoever reaches a password-less broker can queue any task: the removal of hosted images
names the files to delete (catalog.tasks.remove_hosted_image)."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "docker" / "compose.yaml"
REQUIRED = "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def redis_urls(node) -> list[str]:
    if isinstance(node, dict):
        return [url for value in node.values() for url in redis_urls(value)]
    if isinstance(node, list):
        return [url for value in node for url in redis_urls(value)]
    return [node] if isinstance(node, str) and node.startswith("redis://") else []


def test_redis_requires_a_password_that_compose_refuses_to_start_without():
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == REQUIRED
    assert redis["environment"]["REDISCLI_AUTH"] == REQUIRED  # its healthcheck logs in


def test_every_redis_url_carries_the_password():
    urls = redis_urls(compose())
    assert len(urls) >= 3  # the broker and the cache of the app, Flower's broker
    assert all(url.startswith(f"redis://:{REQUIRED}@redis:6379/") for url in urls), urls


def test_the_example_environment_names_the_password():
    example = (COMPOSE.parent.parent / ".env.example").read_text()
    assert "REDIS_PASSWORD=" in example

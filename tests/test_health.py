"""GET /api/health/: a shallow status for anyone, details for staff or the health token."""

import pytest

pytestmark = pytest.mark.django_db
HEALTH = "/api/health/"


@pytest.fixture
def broker_down():
    from visualsearch.celery import app

    previous = app.conf.broker_write_url
    app.conf.broker_write_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    yield
    app.conf.broker_write_url = previous


def test_anyone_gets_a_shallow_status(client):
    response = client.get(HEALTH)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body) == {"status", "checks"}
    assert body["checks"] == {"database": True, "broker": True, "vector_store": True, "model": True}


def test_anonymous_users_never_see_internal_error_text(client, broker_down):
    response = client.get(HEALTH)
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "checks": {"database": True, "broker": False, "vector_store": True, "model": True},
    }
    assert "127.0.0.1" not in response.content.decode()


def test_staff_see_the_details(staff_client, broker_down):
    body = staff_client.get(HEALTH).json()
    assert body["broker"]["ok"] is False
    assert body["broker"]["error"]
    assert body["vector_store"]["backend"] == "local"
    assert body["model"]["id"] == "resnet50/random-seed0"


def test_the_health_token_unlocks_the_details(client, settings):
    settings.HEALTH_TOKEN = "s3cret-token"
    assert "database" not in client.get(HEALTH, headers={"X-Health-Token": "wrong"}).json()
    body = client.get(HEALTH, headers={"X-Health-Token": "s3cret-token"}).json()
    assert body["database"]["ok"] is True
    assert body["vector_store"]["count"] == 0


def test_an_empty_health_token_setting_unlocks_nothing(client, settings):
    settings.HEALTH_TOKEN = ""
    assert "database" not in client.get(HEALTH, headers={"X-Health-Token": ""}).json()

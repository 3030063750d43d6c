"""Machines that share no disk: two web processes (gunicorn, as in the container) and one
Celery worker, each with its own empty VAR_DIR, sharing only what separate machines share:
PostgreSQL, Redis, S3 (moto's server: published images and staged uploads) and the vector
store (the fake Pinecone). An image uploaded through web A is staged in S3, indexed by the
worker and found first by a search sent to web B.

The cluster always runs on PostgreSQL, in a database of its own, whatever database the rest
of the test run uses. EMBEDDING_CACHE_DIR is the one folder the processes share, because it
is a cache: each machine of a deployment exports (or bakes in its image) the same ONNX model,
and sharing it here spares each process an export of the model.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import (
    S3_KEY,
    S3_REGION,
    S3_SECRET,
    b64,
    photo_bytes,
    s3_client,
    s3_empty_and_delete,
)
from tests.integration.conftest import ROOT, stop_worker
from tests.project_process import project_env, run_python

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

POSTGRES = os.environ.get("CLUSTER_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
BUCKET = "cluster-images"
NAMES = ["coffee.png", "chelsea.png", "rocket.jpg"]
SETUP = """
import django

django.setup()
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from rest_framework.authtoken.models import Token

call_command("migrate", verbosity=0)
call_command("vectorstore_init", verbosity=0)
curator = User.objects.create_user("curator", is_staff=True)
curator.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))
print(Token.objects.create(user=curator).key)
"""


@pytest.fixture
def cluster_database():
    """A PostgreSQL database of the test's own, dropped afterwards."""
    import psycopg

    name = f"visualsearch_cluster_{uuid.uuid4().hex[:8]}"
    try:
        server = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"The cluster test needs PostgreSQL at {POSTGRES} (CLUSTER_POSTGRES_URL): {exc}"
        )
    with server:
        server.execute(f'CREATE DATABASE "{name}"')
        yield f"{POSTGRES}/{name}"
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cluster_bucket(s3_server):
    """The bucket of the image host and the staging storage, its objects public as the
    docs/backends.md's S3 set-up makes them."""
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_policy(Bucket=BUCKET, Policy=public_read_policy(BUCKET))
    yield s3
    s3_empty_and_delete(s3, BUCKET)


def public_read_policy(bucket: str) -> str:
    return (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",'
        f' "Action": "s3:GetObject", "Resource": "arn:aws:s3:::{bucket}/*"}}]}}'
    )


class Cluster:
    """What the machines share (every variable but VAR_DIR), and the machines started."""

    def __init__(self, tmp_path: Path, shared: dict[str, str]):
        self.tmp_path = tmp_path
        self.shared = shared
        self.var_dirs: list[Path] = []
        self.webs: list[subprocess.Popen] = []

    def var_dir(self, machine: str) -> Path:
        var_dir = self.tmp_path / machine / "var"
        var_dir.mkdir(parents=True)
        self.var_dirs.append(var_dir)
        return var_dir

    def env(self, machine: str, **variables: str) -> dict[str, str]:
        return project_env(self.var_dir(machine), **self.shared, **variables)

    def start_web(self, machine: str) -> str:
        """gunicorn as the container runs it, on a free port; returns its base URL."""
        port = free_port()
        env = self.env(machine, HOST="127.0.0.1", PORT=str(port), WEB_THREADS="2")
        log = open(self.tmp_path / machine / "web.log", "wb")  # noqa: SIM115 - closed in stop
        command = [sys.executable, "-m", "gunicorn", "visualsearch.wsgi",
                   "-c", "docker/gunicorn.conf.py"]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        process.log_file, process.log_path = log, log.name
        self.webs.append(process)
        return f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        paths = sorted(self.tmp_path.glob("*/*.log"))
        return "\n".join(
            f"--- {path}\n{path.read_text(errors='replace')[-3000:]}" for path in paths
        )

    def stop(self) -> None:
        for process in self.webs:
            stop_worker(process)  # terminate, wait, kill if it hangs, close its log


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cluster(
    tmp_path, cluster_database, cluster_bucket, s3_server, pinecone, redis_url, start_worker
):
    from visualsearch.celery import app

    queue = app.conf.task_default_queue  # start_worker's own, set on the app for this test
    assert queue.startswith("test-")
    shared = {
        "DATABASE_URL": cluster_database,
        "SECRET_KEY": secrets.token_urlsafe(50),  # one key for every machine
        "CELERY_BROKER_URL": redis_url,
        "CELERY_QUEUE": queue,
        "CACHE_URL": redis_url,  # the web replicas share the search rate limits
        "IMAGE_HOST": "storages",  # staging follows it into the same bucket, under staging/
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_ENDPOINT_URL": s3_server,
        "AWS_S3_REGION_NAME": S3_REGION,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "VECTOR_STORE": "pinecone",
        "PINECONE_API_KEY": pinecone.api_key,
        "PINECONE_HOST": pinecone.url,
        "PINECONE_INDEX": "cluster",
        "EMBEDDING_CACHE_DIR": os.environ["EMBEDDING_CACHE_DIR"],
    }
    machines = Cluster(tmp_path, shared)
    yield machines
    machines.stop()


def wait_for(condition, cluster: Cluster, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"Timed out waiting for {what}.\n{cluster.logs()}"
        time.sleep(0.25)
    return result


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/health/live/", timeout=5).status_code == 200
    except requests.RequestException:  # not listening yet, or too busy starting to answer
        return False


def keys(s3, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_an_image_uploaded_through_one_web_machine_is_found_through_another(
    cluster, cluster_bucket, start_worker
):
    s3 = cluster_bucket
    # The deploy's one-off release step, on a machine of its own.
    setup = run_python(SETUP, cluster.env("release"), timeout=120)
    assert setup.returncode == 0, setup.stderr
    staff = {"Authorization": f"Token {setup.stdout.strip().splitlines()[-1]}"}
    web_a, web_b = cluster.start_web("web-a"), cluster.start_web("web-b")
    for web in (web_a, web_b):
        wait_for(lambda web=web: answers(web), cluster, f"{web} to answer", timeout=60)

    uploaded = {}
    for name in NAMES:
        data = photo_bytes(name)
        response = requests.post(
            f"{web_a}/api/images/",
            files={"image": (name.replace(".png", ".jpg"), data, "image/jpeg")},
            headers=staff,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        uploaded[name] = (response.json()["id"], hashlib.sha256(data).hexdigest())
    # No worker runs yet: each upload waits in S3, where any worker machine can read it.
    staged = keys(s3, "staging/")
    assert len(staged) == 3
    assert {key.rsplit("-", 1)[-1] for key in staged} == {
        f"{sha}.jpg" for _, sha in uploaded.values()
    }

    worker = start_worker(
        **cluster.env("worker"),
        # start_worker points its workers at the test's own folders; this one gets none.
        MEDIA_ROOT="",
        STAGING_ROOT="",
        VECTOR_STORE_PATH="",
    )

    def all_indexed() -> bool:
        for image_id, _ in uploaded.values():
            image = requests.get(f"{web_b}/api/images/{image_id}/", headers=staff, timeout=10)
            assert image.json()["status"] != "failed", image.text
            if image.json()["status"] != "indexed":
                return False
        return True

    wait_for(all_indexed, cluster, "the worker to index the uploads")
    assert keys(s3, "staging/") == []  # unstaged once published
    assert len(keys(s3, "catalog/")) == 6  # originals and thumbnails

    coffee_id, _ = uploaded["coffee.png"]
    response = requests.post(
        f"{web_b}/api/search/", json={"image": b64(photo_bytes("coffee.png"))}, timeout=60
    )
    assert response.status_code == 200, response.text
    best = response.json()["results"][0]
    assert best["id"] == coffee_id and best["similarity"] > 99.9
    assert requests.get(best["image_url"], timeout=10).content == photo_bytes("coffee.png")

    # Nothing went through a disk: four machines, four folders, no picture in any of them.
    stop_worker(worker)
    assert len(set(cluster.var_dirs)) == 4  # release, web-a, web-b, worker
    pictures = [
        path
        for var_dir in cluster.var_dirs
        for path in var_dir.rglob("*")
        if any(sha in path.name for _, sha in uploaded.values())
    ]
    assert pictures == []

"""What the project writes under VAR_DIR (the database with its API tokens, the secret key,
the vectors, queued tasks, staged uploads) no other user of the machine can read; only the
media and static files a web server may serve stay reachable.

Each test starts the project in a fresh process on a fresh VAR_DIR: settings create it.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from tests.project_process import ROOT, project_env, run_manage, run_python

# Stores a vector in the local store, queues a task on the default (filesystem) broker,
# stages an upload and publishes a media file, as a running project does.
WRITE_EVERYTHING = """
import django; django.setup()
import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from search.vectorstores import VectorRecord, get_vector_store
from visualsearch.celery import app
get_vector_store().upsert([VectorRecord(id="1", vector=np.ones(2048, np.float32), metadata={})])
app.send_task("catalog.tasks.send_unqueued")
storages["staging"].save("ab/upload.jpg", ContentFile(b"staged"))
storages["default"].save("catalog/ab/published.jpg", ContentFile(b"published"))
"""


def start(var_dir: Path, **variables: str) -> dict[str, str]:
    """Migrate a fresh database and write everything, as `make run` would."""
    env = project_env(var_dir, CELERY_BROKER_URL="", VECTOR_STORE="local", **variables)
    migrated = run_manage("migrate", "--noinput", "--skip-checks", env=env, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    wrote = run_python(WRITE_EVERYTHING, env, timeout=120)
    assert wrote.returncode == 0, wrote.stderr
    return env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def others_can_read(path: Path, var_dir: Path) -> bool:
    """Whether a user who is neither the owner nor in its group can open `path`: it must be
    readable by others, and every folder from VAR_DIR down to it searchable by them."""
    if not mode(path) & stat.S_IROTH:
        return False
    folder = path.parent
    while True:
        if not mode(folder) & stat.S_IXOTH:
            return False
        if folder == var_dir:
            return True
        folder = folder.parent


def readable_by_others(var_dir: Path) -> list[str]:
    return sorted(
        str(path.relative_to(var_dir))
        for path in var_dir.rglob("*")
        if path.is_file() and others_can_read(path, var_dir)
    )


def test_a_fresh_var_dir_is_private_and_so_are_its_files(tmp_path):
    var_dir = tmp_path / "var"
    start(var_dir, MEDIA_ROOT=str(tmp_path / "media"), STATIC_ROOT=str(tmp_path / "static"))
    assert mode(var_dir) == 0o700
    assert mode(var_dir / "secret_key") == 0o600
    # Private in themselves, too: a copy or a backup keeps the mode.
    database = [var_dir / "db.sqlite3", *var_dir.glob("db.sqlite3-*")]
    assert all(mode(path) & 0o077 == 0 for path in database), [oct(mode(p)) for p in database]
    for folder in ("vectors", "broker", "staging"):
        assert mode(var_dir / folder) == 0o700, folder
    assert list((var_dir / "vectors").iterdir())  # the store did write its files there


def test_with_media_and_static_inside_var_only_they_are_reachable(tmp_path):
    """The default layout (var/media, var/static): a web server running as another user
    may serve them, so VAR_DIR lets others pass through it, never list it."""
    var_dir = tmp_path / "var"
    start(var_dir)
    assert mode(var_dir) == 0o711
    assert readable_by_others(var_dir) == ["media/catalog/ab/published.jpg"]
    assert mode(var_dir / "secret_key") == 0o600
    assert mode(var_dir / "db.sqlite3") & 0o077 == 0


def test_an_older_world_readable_var_dir_is_made_private_at_start(tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o755)
    var_dir.chmod(0o755)
    (var_dir / "secret_key").write_text("an older key")
    (var_dir / "db.sqlite3").write_bytes(b"")
    (var_dir / "vectors").mkdir()
    for path in (var_dir, var_dir / "secret_key", var_dir / "db.sqlite3", var_dir / "vectors"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = project_env(var_dir, MEDIA_ROOT=str(tmp_path / "media"), VECTOR_STORE="local")
    result = run_python("from django.conf import settings; print(settings.SECRET_KEY)", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "an older key"
    assert mode(var_dir) == 0o711  # static files stay reachable, inside var/
    assert mode(var_dir / "secret_key") == 0o600
    assert mode(var_dir / "db.sqlite3") == 0o600
    assert mode(var_dir / "vectors") == 0o700


def test_processes_starting_together_on_a_fresh_var_dir_share_one_secret_key(tmp_path):
    env = project_env(tmp_path / "var")
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(keys) == 1 and len(keys.pop()) >= 50
    assert mode(tmp_path / "var" / "secret_key") == 0o600


def test_a_secret_key_left_empty_by_a_crash_is_named_with_what_to_do(tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / "secret_key").write_text("")
    result = run_python("import django.conf; django.conf.settings.SECRET_KEY", project_env(var_dir))
    assert result.returncode != 0
    assert "secret_key is empty" in result.stderr and "delete it" in result.stderr


def test_a_secret_key_from_the_environment_writes_no_file(tmp_path):
    env = project_env(tmp_path / "var", SECRET_KEY="from-the-environment")
    assert run_python("import django.conf; django.conf.settings.SECRET_KEY", env).returncode == 0
    assert not (tmp_path / "var" / "secret_key").exists()

"""Files and folders under VAR_DIR that no other user of the machine may read.

VAR_DIR holds the database (API tokens, sessions), the secret key, the vectors, queued tasks
and staged uploads. They are created private, and tightened when an older version left them
open. Not with a process-wide umask: media and static files, which a web server running as
another user may serve, must stay readable, and Django's storages, collectstatic and
whitenoise create those (and their folders) with the process's umask.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# How long a process that lost the race to create the secret key waits for the winner's write
# (one write of 67 bytes, right after creating the file).
_KEY_WAIT_SECONDS = 5.0


def private_dir(path: Path) -> Path:
    """`path` as a folder that only its owner may list or enter; created if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_access(path, 0o077)
    return path


def private_file(path: Path) -> None:
    """Create `path` empty, readable by its owner only, unless it exists; tighten it if it
    does. An empty file is an empty SQLite database, and SQLite creates its journals (-wal,
    -shm) with the database file's mode."""
    if not path.parent.is_dir():
        return  # nothing can be created there; whoever opens it will say so
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for candidate in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm"))):
        _remove_access(candidate, 0o077)


def let_others_through(folder: Path) -> None:
    """Others may pass through `folder` to a path they know (media a web server serves),
    never list it; each private thing inside keeps its own mode."""
    _remove_access(folder, 0o066)
    try:
        current = stat.S_IMODE(folder.stat().st_mode)
        os.chmod(folder, current | 0o011)
    except PermissionError:
        pass  # not ours: its owner chose its mode


def secret_key_from(path: Path, make_key) -> str:
    """The key kept in `path`, written there first by `make_key()` if the file is missing.

    Created and given its private mode in one call (O_CREAT | O_EXCL, 0600): no moment in
    which another user could read it, and of processes starting together exactly one writes
    it; the others read that one's key.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        _remove_access(path, 0o077)  # an older version wrote it, then chmodded it
        return _read_key(path)
    key = make_key()
    with os.fdopen(fd, "w") as file:
        file.write(key)
    return key


def _read_key(path: Path) -> str:
    deadline = time.monotonic() + _KEY_WAIT_SECONDS
    while not (key := path.read_text().strip()):
        if time.monotonic() > deadline:
            raise ImproperlyConfigured(
                f"{path} is empty: a process stopped before writing the key into it. If no "
                "process is starting right now, delete it (the next start makes a new key, "
                "and signed-in sessions end), or set SECRET_KEY."
            )
        time.sleep(0.05)  # another process created it a moment ago and is writing it
    return key


def _remove_access(path: Path, bits: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & bits:
            os.chmod(path, current & ~bits)
    except (FileNotFoundError, PermissionError):
        pass  # gone, or not ours: its owner chose its mode

"""A pool process killed while idle must not stop the Celery worker for good.

With a broker that has no event loop (kombu's filesystem transport: `make run`'s default),
Celery's prefork pool hands tasks to its processes through one shared pipe guarded by one
lock (billiard.queues.SimpleQueue). billiard's idle pool process takes that lock and then
blocks reading the pipe until a task comes, so at almost any moment one idle process holds
it. Killed there (the kernel's out-of-memory killer picks a pool process: each holds the
model), it leaves the lock held for ever: every other pool process, and its replacement,
waits on it, and the worker runs no task again while looking alive.

The reader below waits for data WITHOUT the lock and holds it only to read a message that
is already there (a few microseconds), so a process killed while idle holds nothing. Two
processes woken by the same message both take the lock in turn; the second finds the pipe
empty again and goes back to waiting. With Redis (an event loop) each pool process has a
pipe of its own and this queue is not used.
"""

from __future__ import annotations

from billiard.queues import SimpleQueue


def _get_payload_holding_the_lock_only_to_read(self) -> bytes:
    while True:
        self._reader.poll(None)  # wait for a message, holding nothing
        with self._rlock:
            if self._reader.poll(0):
                return self._reader.recv_bytes()


def make_pool_queue_kill_safe() -> None:
    """Replace billiard's SimpleQueue reader (idempotent). Called when the Celery app loads,
    before the worker forks its pool, so every pool process inherits it."""
    SimpleQueue.get_payload = _get_payload_holding_the_lock_only_to_read

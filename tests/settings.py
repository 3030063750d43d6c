"""The project's settings, read with the environment a test run needs.

pytest-django imports settings before any conftest runs, so the environment is set here.
"""

import os
import tempfile

os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix="visualsearch-tests-")
# This machine (and CI) cannot download ImageNet weights; tests use the seeded random model.
os.environ["EMBEDDING_WEIGHTS"] = "random"
# Exported ONNX models are kept between runs (they are keyed by model id and versions), so
# only the first run on a machine pays for the export; worker processes the tests start
# inherit it.
os.environ.setdefault(
    "EMBEDDING_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "test-models"),
)
# Unit tests never reach a real broker; the worker integration test brings its own Redis.
os.environ["CELERY_BROKER_URL"] = "memory://"
# The API tests search far more often than a person; one test checks the limit itself.
os.environ["SEARCH_RATE_LIMIT"] = "100000/min"
for name in ("VECTOR_STORE", "VECTOR_STORE_PATH", "MEDIA_ROOT", "CELERY_TASK_ALWAYS_EAGER"):
    os.environ.pop(name, None)

from visualsearch.settings import *  # noqa: E402, F403

# Search by URL fetches from the tests' own servers, which listen on ports the system picks;
# the tests of the port rule set URL_FETCH_PORTS back. Loopback stays refused unless a test
# asks for it (the `loopback_allowed` fixture): production settings never read it.
URL_FETCH_PORTS = None

"""Loaded by pytest before Django settings: give the test run its own var/ and offline model."""

import os
import tempfile

os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix="visualsearch-tests-")
# This machine (and CI) cannot download ImageNet weights; tests use the seeded random model.
os.environ["EMBEDDING_WEIGHTS"] = "random"
# Unit tests never reach a real broker; the worker integration test brings its own Redis.
os.environ["CELERY_BROKER_URL"] = "memory://"
for name in ("VECTOR_STORE", "VECTOR_STORE_PATH", "MEDIA_ROOT", "CELERY_TASK_ALWAYS_EAGER"):
    os.environ.pop(name, None)

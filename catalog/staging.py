"""Where uploads wait until the worker has published them: Django's `staging` storage.

settings.STAGING_STORAGE picks it: "local" is the STAGING_ROOT folder, which only processes
sharing that disk can read; "storages" is the django-storages backend of the image settings
(S3 by default, under `staging/`), which every web and worker machine reaches.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import IO, Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.deconstruct import deconstructible


@deconstructible
class StagingFolder(FileSystemStorage):
    """The local staging folder; follows settings.STAGING_ROOT (each test has its own)."""

    def __init__(self, **options: Any):
        super().__init__(base_url=None, **options)

    @property
    def base_location(self):
        return settings.STAGING_ROOT

    @property
    def location(self):
        return os.path.abspath(self.base_location)


@deconstructible
class StagingStorage(Storage):
    """CatalogImage.staged_file's storage: `storages["staging"]`, looked up on every use.

    A storage given to a FileField (an instance, or a callable's result) is fixed when the
    model class is built. Looking the alias up on use follows STORAGES wherever it is set,
    as the image hosts do, and keeps migrations free of deployment settings.
    """

    @property
    def target(self) -> Storage:
        return storages["staging"]

    def open(self, name: str, mode: str = "rb") -> Any:
        return self.target.open(name, mode)

    def save(self, name: str | None, content: IO[Any], max_length: int | None = None) -> str:
        return self.target.save(name, content, max_length=max_length)

    def delete(self, name: str) -> None:
        self.target.delete(name)

    def exists(self, name: str) -> bool:
        return self.target.exists(name)

    def size(self, name: str) -> int:
        return self.target.size(name)

    def path(self, name: str) -> str:
        return self.target.path(name)  # only a local folder has paths

    def url(self, name: str | None) -> str:
        return self.target.url(name)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        return self.target.listdir(path)

    def generate_filename(self, filename: str) -> str:
        return self.target.generate_filename(filename)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return self.target.get_available_name(name, max_length=max_length)

    def get_modified_time(self, name: str) -> datetime:
        return self.target.get_modified_time(name)

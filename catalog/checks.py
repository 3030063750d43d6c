"""Start-up checks (`manage.py check`, and every `migrate`) for the catalog's settings."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.compatibility)
def staging_reachable_by_every_machine(app_configs, **kwargs) -> list[Warning]:
    """A remote image host suggests several machines; a defaulted local staging folder would
    then hold uploads the worker machines cannot read. Choosing STAGING_STORAGE, either way,
    says which deployment this is."""
    if (
        settings.IMAGE_HOST != "local"
        and settings.STAGING_STORAGE == "local"
        and not settings.STAGING_STORAGE_CHOSEN
    ):
        return [
            Warning(
                f"Uploads are staged in STAGING_ROOT ({settings.STAGING_ROOT}) on this "
                f"machine's disk, while IMAGE_HOST={settings.IMAGE_HOST}: a worker on "
                "another machine cannot read them.",
                hint="With web and worker on different machines, set STAGING_STORAGE=storages "
                "(S3 through the AWS_* variables). If they share this disk (one machine, or a "
                "shared volume), set STAGING_STORAGE=local.",
                id="catalog.W001",
            )
        ]
    return []

"""Curation in Django admin. Every write goes through catalog.services or catalog.pipeline
(jobs, bulk_uploads, feed_syncs).

Django's autodiscover imports this package; importing the modules below registers every
ModelAdmin. What lives where:

- `forms`: the forms curators fill in (editing, adding, bulk upload), checked by the same
  decoder and tag rules as every other door.
- `filters`: the catalog list's sidebar filters.
- `images`: the catalog itself (`CatalogImageAdmin`), with its health panel, bulk upload,
  reindex buttons and possible-duplicates pages.
- `jobs`: the pages of background work (reindex jobs, bulk upload jobs).
- `syncs`: catalog sync runs, and "Sync now" for the configured feeds.

Constants a test may patch live in the module that reads them, not here.
"""

from catalog.admin import images, jobs, syncs  # noqa: F401 - importing registers the ModelAdmins

"""Catalog API: the public catalog for everyone; the whole catalog, uploads, edits, deletes
and the upsert of an outside catalog's items for staff with Django's model permissions on
CatalogImage (view, add, change, delete).

`permissions` says who may do what, `images` serves the catalog's images (list, upload,
detail, edit, delete), `items` the upsert by external id, `bodies` reads the bodies of the
writes, and `tags` the search page's tag filters. Each view is described by
`catalog.schemas`.
"""

from catalog.apis.images import ImageDetailApi, ImageListApi
from catalog.apis.items import ItemApi
from catalog.apis.tags import TagListApi

__all__ = ["ImageDetailApi", "ImageListApi", "ItemApi", "TagListApi"]

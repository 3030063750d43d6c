"""The OpenAPI description of the catalog API: what anyone and what staff see, and refusals.

`shared` holds what the shapes share (the item's editable fields), `images` the images'
shapes (public or staff, pages, uploads, PATCH), `items` the upsert by external id, `tags`
the tag list, and `errors` every endpoint's refusals. The views' serializers are passed in
rather than imported, so catalog.apis can use these helpers in its decorators without an
import cycle.
"""

"""GET /api/tags/: the tags of searchable images, for the search page's filters."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors
from catalog.schemas.tags import TAG_LIST


class TagListApi(APIView):
    """The tags of searchable images with their counts, for the search page's filters."""

    permission_classes: list = []

    @extend_schema(
        summary="Tags of searchable images, with how many images carry each",
        responses={200: TAG_LIST},
    )
    def get(self, request):
        counts = selectors.searchable_tag_counts()
        return Response({"tags": [{"tag": tag, "count": count} for tag, count in counts]})

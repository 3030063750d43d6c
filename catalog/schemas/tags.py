"""The shape of GET /api/tags/."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

TAG_LIST = inline_serializer(
    name="TagList",
    fields={
        "tags": inline_serializer(
            name="TagCount",
            fields={"tag": serializers.CharField(), "count": serializers.IntegerField()},
            many=True,
        )
    },
)

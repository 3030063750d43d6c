from django.conf import settings
from django.shortcuts import render
from django.urls import reverse


def search_page(request):
    return render(
        request,
        "search/index.html",
        {
            "search_url": reverse("api:search"),
            "max_bytes": settings.IMAGE_MAX_BYTES,
            "top_k": settings.SEARCH_DEFAULT_TOP_K,
        },
    )

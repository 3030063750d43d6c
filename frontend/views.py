"""The search page. With JavaScript it talks to the API; without, this view does the work."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.shortcuts import render
from django.urls import reverse

from catalog.selectors import searchable_image_count
from search import services
from search.embedding import EmbeddingOptions, EmbeddingWeightsUnavailable
from search.imaging import ImageRejected
from search.vectorstores import VectorStoreError

TOP_K_CHOICES = (6, 12, 24, 48)


class SearchForm(forms.Form):
    image = forms.FileField(required=False)
    image_id = forms.IntegerField(required=False, min_value=1)
    top_k = forms.TypedChoiceField(
        choices=[(k, k) for k in TOP_K_CHOICES], coerce=int, required=False
    )

    def clean(self):
        data = super().clean()
        if not data.get("image") and not data.get("image_id"):
            raise forms.ValidationError("Choose an image to search with.")
        return data


def search_page(request):
    top_k = settings.SEARCH_DEFAULT_TOP_K
    context = {
        "search_url": reverse("api:search"),
        "max_bytes": settings.IMAGE_MAX_BYTES,
        "catalog_size": searchable_image_count(),
        "random_weights": EmbeddingOptions.from_settings().is_random,
        "top_k_choices": TOP_K_CHOICES,
    }
    if request.method == "POST":
        form = SearchForm(request.POST, request.FILES)
        if form.is_valid():
            top_k = form.cleaned_data["top_k"] or top_k
            context.update(_search(form.cleaned_data, top_k))
        else:
            context["error"] = (
                form.non_field_errors()[0]
                if form.non_field_errors()
                else ("Check the form and try again.")
            )
    context["top_k"] = top_k
    return render(request, "search/index.html", context, status=400 if "error" in context else 200)


def _search(data: dict, top_k: int) -> dict:
    """Run the search the form asks for; the outcome, or an error sentence for the page."""
    try:
        if data.get("image_id"):
            outcome = services.search_similar_to_catalog_image(
                image_id=data["image_id"], top_k=top_k
            )
        else:
            upload = data["image"]
            if upload.size > settings.IMAGE_MAX_BYTES:
                return {
                    "error": f"The image is larger than {settings.IMAGE_MAX_BYTES // 1048576} MB."
                }
            outcome = services.search_similar(image_bytes=upload.read(), top_k=top_k)
    except (ImageRejected, services.QueryImageUnavailable) as exc:
        return {"error": exc.detail}
    except (EmbeddingWeightsUnavailable, VectorStoreError):
        return {"error": "The search service is unavailable right now. Try again in a moment."}
    return {"outcome": outcome}

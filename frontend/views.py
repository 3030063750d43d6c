"""The search page. With JavaScript it talks to the API; without, this view does the work.

The no-JS form is a second door to the same search: it applies the API's rate limit and
size cap (search.limits) before the body is read, and shows the API's error codes and
sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from catalog.selectors import searchable_image_count, searchable_tag_counts
from search import services
from search.embedding import EmbeddingOptions, EmbeddingWeightsUnavailable
from search.imaging import ImageRejected
from search.limits import check_request_size, rate_limited, read_upload, throttled_detail
from search.tags import InvalidTags, tag_filter
from search.vectorstores import VectorStoreError

TOP_K_CHOICES = (6, 12, 24, 48)
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class PageError:
    code: str  # the API's stable code for the same refusal
    detail: str
    status: int = 400


class SearchForm(forms.Form):
    image = forms.FileField(required=False, allow_empty_file=True)
    image_id = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    top_k = forms.TypedChoiceField(
        choices=[(k, k) for k in TOP_K_CHOICES], coerce=int, required=False
    )
    min_similarity = forms.FloatField(required=False, min_value=0, max_value=100)


# Searching changes nothing, so there is nothing for a forged request to do: like the API,
# the form needs no CSRF token. Exempt, the body is not parsed (for a token) before the
# size and rate checks below have run.
@csrf_exempt
def search_page(request):
    top_k = settings.SEARCH_DEFAULT_TOP_K
    context = {
        "search_url": reverse("api:search"),
        "max_bytes": settings.IMAGE_MAX_BYTES,
        "catalog_size": searchable_image_count(),
        "random_weights": EmbeddingOptions.from_settings().is_random,
        "top_k_choices": TOP_K_CHOICES,
        "min_similarity": "0",
        "tag_choices": searchable_tag_counts(),
        # Search by a picture's web address is a JavaScript-only part of the page.
        "url_search": settings.SEARCH_BY_URL,
    }
    status = 200
    try:
        # A shared link carries the chosen tags in the URL (?tags=a,b).
        context["chosen_tags"] = tag_filter(request.GET.get("tags", ""))
    except InvalidTags as exc:
        context.update(chosen_tags=[], error=exc.detail, error_code=exc.code)
        status = 400
    if request.method == "POST":
        result = _search(request)
        if isinstance(result, PageError):
            context.update(error=result.detail, error_code=result.code)
            status = result.status
        else:
            context["outcome"], top_k, threshold, context["chosen_tags"] = result
            context["min_similarity"] = f"{threshold:g}"
    context["top_k"] = top_k
    return render(request, "search/index.html", context, status=status)


def _search(request) -> tuple[services.SearchOutcome, int, float, list[str]] | PageError:
    """Run the search the form asks for: (outcome, top_k, min_similarity, tags), or the
    error to show."""
    if (wait := rate_limited(request)) is not None:
        return PageError("throttled", throttled_detail(wait), 429)
    try:
        check_request_size(request)
    except ImageRejected as exc:
        return PageError(exc.code, exc.detail)
    form = SearchForm(request.POST, request.FILES)
    if not form.is_valid():
        if "image_id" in form.errors:
            return PageError("invalid_image_id", "image_id must be a catalog image's id.")
        if "min_similarity" in form.errors:
            return PageError(
                "invalid_min_similarity", "The minimum similarity must be from 0 to 100."
            )
        return PageError("invalid_request", "Check the form and try again.")
    data = form.cleaned_data
    top_k = data["top_k"] or settings.SEARCH_DEFAULT_TOP_K
    threshold = data.get("min_similarity") or 0.0
    try:
        tags = tag_filter(request.POST.getlist("tags"))  # the checked boxes
    except InvalidTags as exc:
        return PageError(exc.code, exc.detail)
    where = {"tags": tags} if tags else None
    try:
        if data.get("image_id"):
            outcome = services.search_similar_to_catalog_image(
                image_id=data["image_id"], top_k=top_k, where=where, min_similarity=threshold
            )
        elif data.get("image") is not None:
            outcome = services.search_similar(
                image_bytes=read_upload(data["image"]),
                top_k=top_k,
                where=where,
                min_similarity=threshold,
            )
        else:
            return PageError("missing_image", "Choose an image to search with.")
    except ImageRejected as exc:
        return PageError(exc.code, exc.detail)
    except services.QueryImageUnavailable as exc:
        return PageError(exc.code, exc.detail, 404 if exc.code == "image_not_found" else 409)
    except EmbeddingWeightsUnavailable:
        return PageError(
            "model_unavailable", "The model is not available right now; try again later.", 503
        )
    except VectorStoreError:
        return PageError(
            "vector_store_unavailable",
            "The search service is unavailable right now. Try again in a moment.",
            503,
        )
    return outcome, top_k, threshold, tags

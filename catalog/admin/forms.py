"""The forms curators fill in admin. They check with the product's own decoder and tag
rules, so admin refuses the same inputs with the same codes and sentences as the API."""

from __future__ import annotations

from django import forms
from django.conf import settings

from catalog import services
from catalog.item_fields import (
    InvalidItemField,
    clean_external_id,
    clean_link_url,
    clean_metadata,
)
from catalog.models import CatalogImage
from search.decoding import decode_upload
from search.imaging import ImageRejected, read_limited
from search.tags import InvalidTags, normalize_tags

# What deactivating does, said wherever a curator can do it (takedown requests use it).
INACTIVE_HELP = (
    "An inactive image leaves search results at once, and its original and thumbnail are "
    "kept off the image host (their public addresses stop working; the original is kept "
    "privately, and activating publishes it again). To remove a picture for good, delete it."
)


def normalized_tags(raw: str) -> list[str]:
    """`raw` as the catalog stores tags, or the tag rules' refusal as a form error."""
    try:
        return normalize_tags(raw)
    except InvalidTags as exc:
        raise forms.ValidationError(exc.detail, code=exc.code) from exc


class CatalogImageForm(forms.ModelForm):
    """Editing: what curators control. A different picture is a new catalog entry."""

    tags = forms.CharField(required=False, help_text="Comma-separated, e.g. beach, sunset.")
    external_id = forms.CharField(
        required=False,
        help_text="The item this picture shows in the catalog it comes from (a product id, "
        "an inventory number); catalog sync and the API's upsert find it by this.",
    )
    link_url = forms.CharField(
        required=False,
        label="Link URL",
        help_text="Where a search result leads: the item's page, http:// or https://.",
    )
    metadata = forms.JSONField(
        required=False,
        help_text='A JSON object shown with search results (public), e.g. {"price": 12}.',
    )

    class Meta:
        model = CatalogImage
        fields = ["title", "tags", "external_id", "link_url", "metadata", "is_active"]
        help_texts = {"is_active": INACTIVE_HELP}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags)

    def clean_tags(self):
        return normalized_tags(self.cleaned_data["tags"])

    def clean_external_id(self):
        return _item_field(clean_external_id, self.cleaned_data["external_id"])

    def clean_link_url(self):
        return _item_field(clean_link_url, self.cleaned_data["link_url"])

    def clean_metadata(self):
        return _item_field(clean_metadata, self.cleaned_data["metadata"])

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk and "external_id" in cleaned:
            try:
                services.image_move_check(image=self.instance, external_id=cleaned["external_id"])
            except InvalidItemField as exc:
                self.add_error("external_id", forms.ValidationError(exc.detail, code=exc.code))
        return cleaned


def _item_field(clean, value):
    try:
        return clean(value)
    except InvalidItemField as exc:
        raise forms.ValidationError(exc.detail, code=exc.code) from exc


class CatalogImageAddForm(CatalogImageForm):
    # A plain file field: the product's own decoder (the one every door uses) decides what
    # is an image, with the same codes and sentences as the API.
    image = forms.FileField(
        allow_empty_file=True, help_text="JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC."
    )

    class Meta(CatalogImageForm.Meta):
        fields = ["image", "title", "tags", "external_id", "link_url", "metadata", "is_active"]

    def clean_image(self):
        upload = self.cleaned_data["image"]
        try:
            decode_upload(read_limited(upload, max_bytes=settings.IMAGE_MAX_BYTES))
        except ImageRejected as exc:
            raise forms.ValidationError(exc.detail, code=exc.code) from exc
        upload.seek(0)
        return upload


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Many files from one input (the pattern Django's documentation gives)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*,.zip"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data]
        return [super(MultipleFileField, self).clean(item, initial) for item in files]


class BulkUploadForm(forms.Form):
    files = MultipleFileField(help_text="Pictures and zip files of pictures; choose many at once.")
    tags = forms.CharField(required=False, help_text="Comma-separated tags for every image.")

    def clean_tags(self):
        return normalized_tags(self.cleaned_data["tags"])

"""A basic curation admin; uploads, edits and deletions go through catalog.services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from catalog import selectors, services
from catalog.models import CatalogImage
from search.imaging import ImageRejected


class CatalogImageForm(forms.ModelForm):
    image = forms.ImageField(help_text="JPEG, PNG, WebP, GIF, BMP or TIFF.")
    tags = forms.CharField(required=False, help_text="Comma-separated, e.g. beach, sunset.")

    class Meta:
        model = CatalogImage
        fields = ["title", "tags", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags)
            del self.fields["image"]  # a different picture is a new catalog entry

    def clean_image(self):
        upload = self.cleaned_data["image"]
        if upload:
            upload.seek(0)
            try:
                services.decode_upload(upload.read())
            except ImageRejected as exc:
                raise forms.ValidationError(exc.detail, code=exc.code) from exc
            upload.seek(0)
        return upload

    def clean_tags(self):
        return services.normalize_tags(self.cleaned_data["tags"])


@admin.register(CatalogImage)
class CatalogImageAdmin(admin.ModelAdmin):
    form = CatalogImageForm
    list_display = ["thumbnail", "__str__", "status", "is_active", "tag_list", "created_at"]
    list_display_links = ["thumbnail", "__str__"]
    list_filter = ["status", "is_active", "embedding_model"]
    search_fields = ["title", "sha256"]
    readonly_fields = [
        "preview", "status", "failure_reason", "sha256", "width", "height",
        "embedding_model", "indexed_at", "image_host", "image_url", "published_at",
        "created_at", "updated_at",
    ]  # fmt: skip
    actions = ["retry_indexing"]

    @admin.display(description="")
    def thumbnail(self, image: CatalogImage) -> str:
        if not image.thumbnail_url:
            return "not published yet"
        return format_html('<img src="{}" alt="" style="height:48px">', image.thumbnail_url)

    def preview(self, image: CatalogImage) -> str:
        if not image.image_url:
            return "Not published yet: the worker publishes it to the image host."
        return format_html(
            '<a href="{}"><img src="{}" alt="" style="max-height:240px"></a>',
            image.image_url,
            image.thumbnail_url,
        )

    @admin.display(description="tags")
    def tag_list(self, image: CatalogImage) -> str:
        return ", ".join(image.tags)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "index_counts": selectors.index_counts()}
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            services.image_update(
                image=obj, title=data["title"], tags=data["tags"], is_active=data["is_active"]
            )
            return
        image, created = services.image_create(
            file=data["image"], title=data["title"], tags=data["tags"]
        )
        if not created:
            messages.info(request, f"These exact bytes are already in the catalog as “{image}”.")
        # The admin goes on with `obj` (log entry, redirect): make it the saved row.
        obj.pk = image.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        services.image_delete(image=obj)

    def delete_queryset(self, request, queryset):
        for image in queryset:
            services.image_delete(image=image)

    @admin.action(description="Retry indexing of the selected images")
    def retry_indexing(self, request, queryset):
        count = services.images_retry(images=queryset)
        self.message_user(request, f"Queued {count} image(s) for indexing.")

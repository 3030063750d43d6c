"""The catalog in admin: the list with its health panel, editing and adding one image,
the actions, and the pages the list links to (bulk upload, reindex buttons, possible
duplicates side by side). Saving, deleting and every action go through catalog.services,
catalog.pipeline.jobs or catalog.pipeline.bulk_uploads."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from catalog import selectors, services
from catalog.admin.filters import PossibleDuplicateFilter, TagFilter
from catalog.admin.forms import BulkUploadForm, CatalogImageAddForm, CatalogImageForm
from catalog.models import CatalogImage, ReindexJob
from catalog.pipeline import bulk_uploads, jobs

DUPLICATE_PAIRS_PER_PAGE = 25
STATUS_COLOURS = {"pending": "#8a6d00", "processing": "#2456d6", "indexed": "#1e7b34",
                  "failed": "#b00020"}  # fmt: skip


@admin.register(CatalogImage)
class CatalogImageAdmin(admin.ModelAdmin):
    form = CatalogImageForm
    add_form = CatalogImageAddForm
    list_display = ["thumbnail", "title_or_id", "external_id", "status_badge", "tag_list",
                    "is_active", "nearest", "created_at"]  # fmt: skip
    list_display_links = ["thumbnail", "title_or_id"]
    list_filter = ["status", "is_active", PossibleDuplicateFilter, TagFilter, "embedding_model"]
    search_fields = ["title", "=external_id"]
    ordering = ["-created_at", "-id"]
    list_per_page = 50
    show_full_result_count = False  # one COUNT(*) fewer per page on a large catalog
    readonly_fields = [
        "preview", "status_badge", "failure_reason", "embedding_model", "indexed_at",
        "neighbours", "sha256", "width", "height", "image_host", "image_url", "published_at",
        "source_url", "created_at", "updated_at",
    ]  # fmt: skip
    actions = ["reindex_selected", "retry_failed", "activate", "deactivate", "delete_selected"]
    change_list_template = "admin/catalog/catalogimage/change_list.html"

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = self.add_form if obj is None else self.form
        return super().get_form(request, obj, **kwargs)

    def get_queryset(self, request):
        # The embedding is 8 KB a row and no list needs it.
        return selectors.with_duplicate_flag(super().get_queryset(request).defer("embedding"))

    # Columns and fields

    @admin.display(description="")
    def thumbnail(self, image: CatalogImage) -> str:
        if not image.thumbnail_url:
            return "-"
        return format_html(
            '<img src="{}" alt="{}" loading="lazy" style="height:48px">', image.thumbnail_url,
            image.title,
        )  # fmt: skip

    @admin.display(description="title", ordering="title")
    def title_or_id(self, image: CatalogImage) -> str:
        return str(image)

    @admin.display(description="status", ordering="status")
    def status_badge(self, image: CatalogImage) -> str:
        return format_html(
            '<span class="status-badge" style="color:#fff;background:{};padding:2px 8px;'
            'border-radius:9px">{}</span>',
            STATUS_COLOURS.get(image.status, "#555"),
            image.get_status_display(),
        )

    @admin.display(description="tags")
    def tag_list(self, image: CatalogImage) -> str:
        return ", ".join(image.tags)

    @admin.display(description="nearest", ordering="nearest_similarity")
    def nearest(self, image: CatalogImage) -> str:
        """Its nearest other image's similarity, linked; flagged at DUPLICATE_SIMILARITY."""
        if image.nearest_image_id is None or image.nearest_similarity is None:
            return "-"
        url = reverse("admin:catalog_catalogimage_change", args=[image.nearest_image_id])
        if getattr(image, "possible_duplicate", False):
            return format_html(
                '<a href="{}" class="possible-duplicate" title="Possible duplicate" '
                'style="color:#b00020;font-weight:bold">{}% ⚠</a>', url,
                f"{image.nearest_similarity:.2f}",
            )  # fmt: skip
        return format_html('<a href="{}">{}%</a>', url, f"{image.nearest_similarity:.2f}")

    def preview(self, image: CatalogImage) -> str:
        if not image.image_url and not image.is_active:
            return "Inactive: its files are kept off the image host until it is activated."
        if not image.image_url:
            return "Not published yet: the worker publishes it to the image host."
        return format_html(
            '<a href="{}"><img src="{}" alt="{}" style="max-height:320px"></a>',
            image.image_url, image.thumbnail_url, image.title,
        )  # fmt: skip

    @admin.display(description="nearest neighbours")
    def neighbours(self, image: CatalogImage) -> str:
        found = selectors.image_neighbours(image, top_k=6)
        if found is None:
            return "Available once the image is indexed."
        if not found:
            return "No other indexed images."
        items = format_html_join(
            "",
            '<a href="{}" title="{}" style="display:inline-block;margin-right:8px;'
            'text-align:center"><img src="{}" alt="{}" style="height:64px;display:block">{}%</a>',
            (
                (reverse("admin:catalog_catalogimage_change", args=[other.pk]), str(other),
                 other.thumbnail_url, str(other), f"{score * 100:.1f}")
                for other, score in found
            ),
        )  # fmt: skip
        return format_html("{}<p class='help'>A near-100% neighbour may be a duplicate.</p>", items)

    # Saving and deleting go through the services

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except services.StagingUnavailable as exc:
            # Raised inside the admin's transaction, which rolled back: nothing was saved.
            messages.error(request, exc.detail)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            services.image_update(
                image=obj,
                title=data["title"],
                tags=data["tags"],
                is_active=data["is_active"],
                external_id=data["external_id"],
                link_url=data["link_url"],
                metadata=data["metadata"] or {},
            )
            return
        image, created = services.image_create(
            file=data["image"],
            title=data["title"],
            tags=data["tags"],
            is_active=data["is_active"],
            item={name: data[name] for name in ("external_id", "link_url", "metadata")},
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

    # Actions

    @admin.action(description="Reindex selected images (background job)", permissions=["change"])
    def reindex_selected(self, request, queryset):
        job = jobs.reindex_job_start(
            scope=ReindexJob.Scope.SELECTED,
            image_ids=queryset.values_list("pk", flat=True),
            created_by=request.user.get_username(),
        )
        self._job_started(request, job)

    @admin.action(description="Retry selected failed images", permissions=["change"])
    def retry_failed(self, request, queryset):
        count = services.images_retry(images=queryset.filter(status=CatalogImage.Status.FAILED))
        self.message_user(request, f"Queued {count} failed image(s) for indexing.")

    @admin.action(description="Activate selected images", permissions=["change"])
    def activate(self, request, queryset):
        count = services.images_set_active(images=queryset, is_active=True)
        self.message_user(
            request, f"Activated {count} image(s); they are being published and indexed again."
        )

    @admin.action(
        description="Deactivate selected images (off results and the image host)",
        permissions=["change"],
    )
    def deactivate(self, request, queryset):
        count = services.images_set_active(images=queryset, is_active=False)
        self.message_user(
            request,
            f"Deactivated {count} image(s): they left search results, and their originals and "
            "thumbnails are being taken off the image host (kept privately, to publish again "
            "if activated). To remove a picture for good, delete it.",
        )

    def _job_started(self, request, job: ReindexJob) -> None:
        url = reverse("admin:catalog_reindexjob_change", args=[job.pk])
        self.message_user(
            request,
            format_html('Started <a href="{}">{}</a> over {} image(s).', url, job, job.total),
        )

    # The health panel, the bulk upload page and the reindex buttons

    def changelist_view(self, request, extra_context=None):
        # ?watch=1 reloads the list every few seconds while images or a job are in flight.
        watch = request.GET.get("watch") == "1"
        if "watch" in request.GET:
            request.GET = request.GET.copy()
            del request.GET["watch"]  # not a filter: the admin would refuse it
        health = self._health()
        in_flight = health["statuses"]["pending"] + health["statuses"]["processing"]
        extra_context = {
            **(extra_context or {}),
            "health": health,
            "auto_refresh": watch and bool(in_flight or health["job"]),
        }
        return super().changelist_view(request, extra_context)

    def _health(self) -> dict:
        running = ReindexJob.objects.filter(
            state__in=[ReindexJob.State.QUEUED, ReindexJob.State.RUNNING]
        ).first()
        return {
            "statuses": selectors.catalog_status_counts(),
            "index": selectors.index_counts(),
            "last_reconcile": selectors.last_reconcile(),
            "job": running,
            "progress": jobs.reindex_job_progress(running) if running else None,
        }

    def get_urls(self):
        own = [
            path("bulk-upload/", self.admin_site.admin_view(self.bulk_upload_view),
                 name="catalog_catalogimage_bulk_upload"),
            path("reindex/<str:scope>/", self.admin_site.admin_view(self.start_reindex_view),
                 name="catalog_catalogimage_start_reindex"),
            path("duplicates/", self.admin_site.admin_view(self.duplicates_view),
                 name="catalog_catalogimage_duplicates"),
            path("duplicates/<int:image_id>/deactivate/",
                 self.admin_site.admin_view(self.deactivate_duplicate_view),
                 name="catalog_catalogimage_deactivate_duplicate"),
        ]  # fmt: skip
        return own + super().get_urls()

    def bulk_upload_view(self, request):
        """Stages the files and answers with the job's page at once: a worker reads them."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BulkUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = bulk_uploads.bulk_upload_start(
                    files=form.cleaned_data["files"],
                    tags=form.cleaned_data["tags"],
                    created_by=request.user.get_username(),
                )
            except services.StagingUnavailable as exc:
                messages.error(request, exc.detail)
            else:
                self.message_user(
                    request, f"Uploaded; a worker is adding the pictures. {job} shows how it goes."
                )
                return HttpResponseRedirect(
                    reverse("admin:catalog_bulkuploadjob_change", args=[job.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Bulk upload",
            "form": form,
        }
        return render(request, "admin/catalog/catalogimage/bulk_upload.html", context)

    def duplicates_view(self, request):
        """Possible duplicates side by side, most similar first, to deactivate either one."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        pairs = Paginator(selectors.duplicate_pairs(), DUPLICATE_PAIRS_PER_PAGE)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Possible duplicates",
            "page": pairs.get_page(request.GET.get("page")),
            "threshold": settings.DUPLICATE_SIMILARITY,
            "can_change": self.has_change_permission(request),
        }
        return render(request, "admin/catalog/catalogimage/duplicates.html", context)

    def deactivate_duplicate_view(self, request, image_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        image = get_object_or_404(CatalogImage, pk=image_id)
        services.images_set_active(images=[image], is_active=False)
        self.message_user(
            request,
            f"Deactivated “{image}”: it left search results, and its files are being taken off "
            "the image host.",
        )
        url = reverse("admin:catalog_catalogimage_duplicates")
        page = request.POST.get("page", "")
        return HttpResponseRedirect(f"{url}?page={page}" if page.isdigit() else url)

    def start_reindex_view(self, request, scope: str):
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        if scope not in (ReindexJob.Scope.ALL, ReindexJob.Scope.STALE, ReindexJob.Scope.FAILED):
            raise Http404(f"No reindex scope {scope!r}.")
        job = jobs.reindex_job_start(scope=scope, created_by=request.user.get_username())
        self._job_started(request, job)
        return HttpResponseRedirect(reverse("admin:catalog_reindexjob_change", args=[job.pk]))

"""Curation in Django admin. Every write goes through catalog.services or catalog.pipeline.jobs."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from catalog import selectors, services
from catalog.models import BulkUploadJob, CatalogImage, ReindexJob
from catalog.pipeline import bulk_uploads, jobs
from search.decoding import decode_upload
from search.imaging import ImageRejected, read_limited
from search.tags import InvalidTags, normalize_tags

DUPLICATE_PAIRS_PER_PAGE = 25
# What deactivating does, said wherever a curator can do it (takedown requests use it).
INACTIVE_HELP = (
    "An inactive image leaves search results at once, and its original and thumbnail are "
    "kept off the image host (their public addresses stop working; the original is kept "
    "privately, and activating publishes it again). To remove a picture for good, delete it."
)
FAILURE_LINES_SHOWN = 500  # of a bulk upload's refusals, on its page
STATUS_COLOURS = {"pending": "#8a6d00", "processing": "#2456d6", "indexed": "#1e7b34",
                  "failed": "#b00020"}  # fmt: skip


class CatalogImageForm(forms.ModelForm):
    """Editing: what curators control. A different picture is a new catalog entry."""

    tags = forms.CharField(required=False, help_text="Comma-separated, e.g. beach, sunset.")

    class Meta:
        model = CatalogImage
        fields = ["title", "tags", "is_active"]
        help_texts = {"is_active": INACTIVE_HELP}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags)

    def clean_tags(self):
        return _normalized_tags(self.cleaned_data["tags"])


class CatalogImageAddForm(CatalogImageForm):
    # A plain file field: the product's own decoder (the one every door uses) decides what
    # is an image, with the same codes and sentences as the API.
    image = forms.FileField(
        allow_empty_file=True, help_text="JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC."
    )

    class Meta(CatalogImageForm.Meta):
        fields = ["image", "title", "tags", "is_active"]

    def clean_image(self):
        upload = self.cleaned_data["image"]
        try:
            decode_upload(read_limited(upload, max_bytes=settings.IMAGE_MAX_BYTES))
        except ImageRejected as exc:
            raise forms.ValidationError(exc.detail, code=exc.code) from exc
        upload.seek(0)
        return upload


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        return [(tag, tag) for tag in selectors.all_tags()]

    def queryset(self, request, queryset):
        return selectors.with_tag(queryset, self.value()) if self.value() else queryset


class PossibleDuplicateFilter(admin.SimpleListFilter):
    title = "possible duplicates"
    parameter_name = "duplicate"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":  # few rows, found through the similarity's index
            return queryset.filter(selectors.duplicate_flag())
        if self.value() == "no":  # the flag CatalogImageAdmin.get_queryset annotates
            return queryset.filter(possible_duplicate=False)
        return queryset


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
        return _normalized_tags(self.cleaned_data["tags"])


def _normalized_tags(raw) -> list[str]:
    try:
        return normalize_tags(raw)
    except InvalidTags as exc:
        raise forms.ValidationError(exc.detail, code=exc.code) from exc


@admin.register(CatalogImage)
class CatalogImageAdmin(admin.ModelAdmin):
    form = CatalogImageForm
    add_form = CatalogImageAddForm
    list_display = ["thumbnail", "title_or_id", "status_badge", "tag_list", "is_active",
                    "nearest", "created_at"]  # fmt: skip
    list_display_links = ["thumbnail", "title_or_id"]
    list_filter = ["status", "is_active", PossibleDuplicateFilter, TagFilter, "embedding_model"]
    search_fields = ["title"]
    ordering = ["-created_at", "-id"]
    list_per_page = 50
    show_full_result_count = False  # one COUNT(*) fewer per page on a large catalog
    readonly_fields = [
        "preview", "status_badge", "failure_reason", "embedding_model", "indexed_at",
        "neighbours", "sha256", "width", "height", "image_host", "image_url", "published_at",
        "created_at", "updated_at",
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
                image=obj, title=data["title"], tags=data["tags"], is_active=data["is_active"]
            )
            return
        image, created = services.image_create(
            file=data["image"], title=data["title"], tags=data["tags"], is_active=data["is_active"]
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


@admin.register(ReindexJob)
class ReindexJobAdmin(admin.ModelAdmin):
    list_display = ["__str__", "state", "progress_bar", "done", "failed", "total", "model_id",
                    "created_at"]  # fmt: skip
    list_filter = ["state", "scope"]
    readonly_fields = ["scope", "state", "progress_bar", "rate", "time_left", "total", "done",
                       "failed", "model_id", "cursor", "cancel_requested", "created_by",
                       "created_at", "started_at", "finished_at"]  # fmt: skip
    fields = readonly_fields
    actions = ["cancel"]
    change_form_template = "admin/catalog/reindexjob/change_form.html"

    def has_add_permission(self, request):
        return False  # started from the catalog list's buttons and actions, or the command

    @admin.display(description="progress")
    def progress_bar(self, job: ReindexJob) -> str:
        progress = jobs.reindex_job_progress(job)
        return format_html(
            '<progress max="100" value="{}" aria-label="{}% done"></progress> {}% ({} of {})',
            progress.percent, progress.percent, progress.percent, progress.processed, job.total,
        )  # fmt: skip

    @admin.display(description="rate")
    def rate(self, job: ReindexJob) -> str:
        rate = jobs.reindex_job_progress(job).rate
        return "-" if rate is None else f"{rate:.1f} images/s"

    @admin.display(description="time left")
    def time_left(self, job: ReindexJob) -> str:
        seconds = jobs.reindex_job_progress(job).seconds_left
        if seconds is None:
            return "-"
        minutes, seconds = divmod(round(seconds), 60)
        return f"about {minutes} min {seconds} s" if minutes else f"about {seconds} s"

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel(self, request, queryset):
        for job in queryset:
            jobs.reindex_job_cancel(job=job)
        self.message_user(request, "Cancelling; a running job stops after its current batch.")

    def get_urls(self):
        own = [
            path("<int:job_id>/cancel/", self.admin_site.admin_view(self.cancel_view),
                 name="catalog_reindexjob_cancel"),
        ]  # fmt: skip
        return own + super().get_urls()

    def cancel_view(self, request, job_id: int):
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        jobs.reindex_job_cancel(job=get_object_or_404(ReindexJob, pk=job_id))
        self.message_user(request, "Cancelling; the job stops after its current batch.")
        return HttpResponseRedirect(reverse("admin:catalog_reindexjob_change", args=[job_id]))


@admin.register(BulkUploadJob)
class BulkUploadJobAdmin(admin.ModelAdmin):
    """A bulk upload's progress and refusals; started from the catalog's Bulk upload page."""

    list_display = ["__str__", "state", "progress_bar", "created", "duplicates", "failed",
                    "created_by", "created_at"]  # fmt: skip
    list_filter = ["state"]
    readonly_fields = ["state", "progress_bar", "file_names", "tags", "total", "read", "created",
                       "duplicates", "failed", "refusals", "created_by", "created_at",
                       "started_at", "finished_at", "files_removed_at"]  # fmt: skip
    fields = readonly_fields
    change_form_template = "admin/catalog/bulkuploadjob/change_form.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # nothing on it is edited: a read-only page

    def has_delete_permission(self, request, obj=None):
        # Only once its staged files are gone: nothing else would remove them.
        done = obj is not None and obj.files_removed_at is not None
        return done and super().has_delete_permission(request, obj)

    def has_view_permission(self, request, obj=None):
        # Whoever may upload follows the upload to its page.
        return super().has_view_permission(request, obj) or request.user.has_perm(
            "catalog.add_catalogimage"
        )

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    @admin.display(description="progress")
    def progress_bar(self, job: BulkUploadJob) -> str:
        if job.state == BulkUploadJob.State.QUEUED:
            return "Waiting for a worker."
        percent = 100.0 if job.total == 0 else round(100.0 * job.read / job.total, 1)
        return format_html(
            '<progress max="100" value="{}" aria-label="{}% read"></progress> {}% ({} of {} read)',
            percent, percent, percent, job.read, job.total,
        )  # fmt: skip

    @admin.display(description="files")
    def file_names(self, job: BulkUploadJob) -> str:
        return ", ".join(item["name"] for item in job.files)

    @admin.display(description="refused")
    def refusals(self, job: BulkUploadJob) -> str:
        if not job.failed:
            return "-"
        shown = job.failures.all()[:FAILURE_LINES_SHOWN]
        lines = format_html_join(
            "", "<li><strong>{}</strong>: {}</li>", ((f.name, f.reason) for f in shown)
        )
        more = job.failed - len(shown)
        tail = format_html("<p>… and {} more.</p>", more) if more > 0 else ""
        return format_html('<ul id="bulk-refused">{}</ul>{}', lines, tail)

"""The pages of background work: one ModelAdmin per kind of job, each read-only except for
what a curator may do to a running job (cancel a reindex). Jobs are started elsewhere (the
catalog list's buttons and actions, its Bulk upload page, the commands); these pages follow
them. Every write goes through catalog.pipeline."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from catalog.models import BulkUploadJob, ReindexJob
from catalog.pipeline import jobs

FAILURE_LINES_SHOWN = 500  # of a bulk upload's refusals, on its page


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

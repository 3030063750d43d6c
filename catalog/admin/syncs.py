"""Catalog sync runs in admin: the list and each run's page (read-only, refreshing while it
runs), and "Sync now" for the sources of SYNC_SOURCES. Runs are requested and executed by
catalog.pipeline.feed_syncs; nothing here writes otherwise."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from catalog.models import CatalogSyncRun
from catalog.pipeline import feed_syncs


@admin.register(CatalogSyncRun)
class CatalogSyncRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "state", "trigger", "created", "updated", "unchanged",
                    "deactivated", "failed", "started_at", "finished_at"]  # fmt: skip
    list_filter = ["state", "trigger", "source"]
    readonly_fields = ["source", "state", "trigger", "prune", "rows", "created", "updated",
                       "unchanged", "deactivated", "failed", "downloaded_bytes", "error",
                       "error_lines", "attempts", "created_by", "created_at", "started_at",
                       "heartbeat_at", "finished_at"]  # fmt: skip
    fields = readonly_fields
    change_form_template = "admin/catalog/catalogsyncrun/change_form.html"
    change_list_template = "admin/catalog/catalogsyncrun/change_list.html"

    def has_add_permission(self, request):
        return False  # started by beat, or by "Sync now"

    def has_change_permission(self, request, obj=None):
        return False  # a record: nothing on it is edited

    @admin.display(description="row failures")
    def error_lines(self, run: CatalogSyncRun) -> str:
        if not run.errors:
            return "-"
        lines = format_html_join("", "<li>{}</li>", ((line,) for line in run.errors))
        more = run.failed - len(run.errors)
        tail = format_html("<p>… and {} more.</p>", more) if more > 0 else ""
        return format_html('<ul id="sync-failures">{}</ul>{}', lines, tail)

    def get_urls(self):
        own = [
            path("sync-now/", self.admin_site.admin_view(self.sync_now_view),
                 name="catalog_catalogsyncrun_sync_now"),
        ]  # fmt: skip
        return own + super().get_urls()

    def sync_now_view(self, request):
        """GET: the configured sources, each with its run under way; POST: start one."""
        # Starting a sync writes the catalog: the curator's permission to change it.
        if not request.user.has_perm("catalog.change_catalogimage"):
            raise PermissionDenied
        if request.method == "POST":
            source = request.POST.get("source", "")
            try:
                run, created = feed_syncs.sync_run_request(
                    source=source, trigger="manual", created_by=request.user.get_username()
                )
            except feed_syncs.UnknownSource as exc:
                self.message_user(request, exc.detail, level="error")
                return HttpResponseRedirect(request.path)
            if not created:
                self.message_user(request, f"{source} is already being synced: this is its run.")
            return HttpResponseRedirect(
                reverse("admin:catalog_catalogsyncrun_change", args=[run.pk])
            )
        sources = [
            (source, feed_syncs.sync_run_under_way(source)) for source in settings.SYNC_SOURCES
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Sync now",
            "sources": sources,
            "every_minutes": settings.SYNC_EVERY_MINUTES,
            "prune": settings.SYNC_PRUNE,
        }
        return TemplateResponse(request, "admin/catalog/catalogsyncrun/sync_now.html", context)

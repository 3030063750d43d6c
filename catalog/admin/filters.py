"""The catalog list's sidebar filters; each one is a query from catalog.selectors."""

from __future__ import annotations

from django.contrib import admin

from catalog import selectors


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

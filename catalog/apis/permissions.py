"""Who may do what through the catalog API: reads for everyone, writes for staff holding
Django's model permission the method needs, as in Django admin."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

WRITE_PERMISSIONS = {
    "POST": "catalog.add_catalogimage",
    "PUT": "catalog.change_catalogimage",
    "PATCH": "catalog.change_catalogimage",
    "DELETE": "catalog.delete_catalogimage",
}


def sees_whole_catalog(user) -> bool:
    """Staff with the view permission (or change, which lets them view in Django admin too)
    see every image and every field; others, the public catalog (active, indexed images and
    their public fields). An upload's answer follows the same rule."""
    return bool(
        user
        and user.is_active
        and user.is_staff
        and (
            user.has_perm("catalog.view_catalogimage")
            or user.has_perm("catalog.change_catalogimage")
        )
    )


class ReadOnlyOrModelPermission(BasePermission):
    """Reads for everyone (what they see is narrowed by `sees_whole_catalog`); writes for
    staff holding the model permission the method needs, as in Django admin."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        user = request.user
        needed = WRITE_PERMISSIONS.get(request.method)
        return bool(user and user.is_active and user.is_staff and needed and user.has_perm(needed))


class UpsertPermission(ReadOnlyOrModelPermission):
    """An upsert may add an image or change one, depending on what the catalog holds: it
    needs both permissions, so whether it is allowed never depends on that."""

    def has_permission(self, request, view) -> bool:
        if request.method != "PUT":
            return super().has_permission(request, view)
        user = request.user
        return bool(
            user
            and user.is_active
            and user.is_staff
            and user.has_perms(["catalog.add_catalogimage", "catalog.change_catalogimage"])
        )

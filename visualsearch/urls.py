from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from catalog.apis import ImageDetailApi, ImageListApi, ItemApi, TagListApi
from search.apis import SearchApi
from visualsearch import errors
from visualsearch.health import HealthApi, LivenessApi, ReadinessApi

api_patterns = [
    path("search/", SearchApi.as_view(), name="search"),
    path("images/", ImageListApi.as_view(), name="image-list"),
    path("images/<int:image_id>/", ImageDetailApi.as_view(), name="image-detail"),
    # The rest of the path up to its last slash, whatever it holds (slashes, and line breaks
    # that `path:` would not match): the view says what an external id may be.
    re_path(
        r"^images/by-external-id/(?P<external_id>(?s:.+))/$",
        ItemApi.as_view(),
        name="image-by-external-id",
    ),
    path("tags/", TagListApi.as_view(), name="tag-list"),
    path("health/", HealthApi.as_view(), name="health"),
    path("health/live/", LivenessApi.as_view(), name="health-live"),
    path("health/ready/", ReadinessApi.as_view(), name="health-ready"),
    # JSON or YAML by Accept header or ?format=json|yaml; docs load Swagger UI from /static/.
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Its setup script comes from docs/?script, not inline: the Content-Security-Policy
    # allows scripts from this site's files only.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]

# Django's own error answers: the API's JSON shape under /api/, the usual pages elsewhere.
handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.page_not_found
handler500 = errors.server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
    # Last of the API: any other path under /api/ is a 404 in the API's error shape.
    re_path(r"^api/", errors.api_not_found),
    path("", include("frontend.urls")),
]


def serve_media(request, path):
    # MEDIA_ROOT read per request, not frozen when the URLs are loaded.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.SERVE_MEDIA:
    # Published images on the local disk; behind a web server, let it serve MEDIA_ROOT.
    prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{prefix}(?P<path>.*)$", serve_media)]

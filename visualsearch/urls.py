from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog.apis import ImageDetailApi, ImageListApi, TagListApi
from search.apis import SearchApi
from visualsearch.health import HealthApi

api_patterns = [
    path("search/", SearchApi.as_view(), name="search"),
    path("images/", ImageListApi.as_view(), name="image-list"),
    path("images/<int:image_id>/", ImageDetailApi.as_view(), name="image-detail"),
    path("tags/", TagListApi.as_view(), name="tag-list"),
    path("health/", HealthApi.as_view(), name="health"),
    # JSON or YAML by Accept header or ?format=json|yaml; docs load Swagger UI from /static/.
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
    path("", include("frontend.urls")),
]


def serve_media(request, path):
    # MEDIA_ROOT read per request, not frozen when the URLs are loaded.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.SERVE_MEDIA:
    # Published images on the local disk; behind a web server, let it serve MEDIA_ROOT.
    prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{prefix}(?P<path>.*)$", serve_media)]

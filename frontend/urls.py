from django.urls import path

from frontend.views import search_page

urlpatterns = [path("", search_page, name="search-page")]

"""The page envelope of the API's lists."""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination


class WholePageNumberPagination(PageNumberPagination):
    """DRF's page numbers, as the schema (and every client generated from it) says they
    are: a whole number. DRF also takes the word `last`, and reads an empty `?page=` as
    page 1; both are refused here as any other page that is not a page."""

    last_page_strings = ()

    def get_page_number(self, request, paginator):
        if request.query_params.get(self.page_query_param, None) == "":
            raise NotFound(self.invalid_page_message.format(page_number="", message="empty"))
        return super().get_page_number(request, paginator)

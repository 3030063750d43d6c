from django.apps import AppConfig


class VisualSearchConfig(AppConfig):
    """The project itself, installed for its system checks (visualsearch.checks)."""

    name = "visualsearch"
    verbose_name = "Visual Search"

    def ready(self) -> None:
        from visualsearch import checks  # noqa: F401 - registers the system checks

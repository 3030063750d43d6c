"""The project's settings, plus the one allowance a URL-search test needs: fetching from
127.0.0.1, where the test's own servers listen.

For web processes the integration tests start (DJANGO_SETTINGS_MODULE); the allowance is
deliberately not an environment variable, so no deployment can turn it on by mistake.
"""

from visualsearch.settings import *  # noqa: F403

URL_FETCH_ALLOW_LOOPBACK = True

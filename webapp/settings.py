"""Django settings, read from the environment only (see README, "Configuration").

Development (``DJANGO_DEBUG=1``) runs with no services: an SQLite file and a
filesystem Celery broker. Production (the default, debug off) refuses to start
without its secrets and says which one is missing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from webapp import env
from webapp.lib.health import Thresholds

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env.boolean("DJANGO_DEBUG", False)

if DEBUG:
    SECRET_KEY = env.string("DJANGO_SECRET_KEY") or "dev-only-insecure-key-" + "x" * 40
else:
    SECRET_KEY = env.required(
        "DJANGO_SECRET_KEY",
        "production (DJANGO_DEBUG off) needs a long random secret, e.g. "
        '`python -c "import secrets; print(secrets.token_urlsafe(50))"`',
    )

# Teacher API keys are encrypted with this Fernet key. In development it is
# derived from SECRET_KEY so that nothing needs configuring; in production it must
# be set on its own, so that rotating one secret does not lose the other.
_field_key = env.string("GAD_FIELD_KEY")
if _field_key:
    GAD_FIELD_KEY = env.fernet_key("GAD_FIELD_KEY", _field_key)
elif DEBUG:
    GAD_FIELD_KEY = base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()
else:
    GAD_FIELD_KEY = env.fernet_key(
        "GAD_FIELD_KEY",
        env.required("GAD_FIELD_KEY", "production needs the key that encrypts teacher API keys"),
    )

# During a rotation: the keys the stored API keys may still be encrypted with (comma-
# separated). They decrypt, never encrypt; `manage.py rotate_field_key` re-encrypts
# every stored key with GAD_FIELD_KEY, after which they can be removed.
GAD_FIELD_KEY_PREVIOUS = [
    env.fernet_key("GAD_FIELD_KEY_PREVIOUS", key)
    for key in env.str_list("GAD_FIELD_KEY_PREVIOUS", [])
]

ALLOWED_HOSTS = env.str_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS is not set; production needs the site's host names, comma-separated"
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "ninja",
    "axes",
    "csp",
    "webapp.teams",
    "webapp.promptsets",
    "webapp.teachers",
    "webapp.jobs",
    "webapp.evaluation",
    "webapp.annotation",
    "webapp.judging",
    "webapp.nodes",
    "webapp.catalog",
    "webapp.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.observability.RequestTiming",
    "webapp.middleware.UploadLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it answers a locked-out login with the lockout page.
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy (django-csp): scripts only from the site itself, never inline
# (the pages' behaviour is in static/js); styles may be inline (plotly sets them on the
# charts it draws). The API's interactive docs page is Swagger UI, with inline script.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/v1/docs"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Login attempts (django-axes): GAD_LOGIN_FAILURE_LIMIT failures from one address (for
# one username there, or for any) lock that address out for GAD_LOGIN_LOCKOUT_MINUTES;
# every attempt is logged (the axes tables in the admin, and the "axes" logger). The
# API's invalid bearer tokens are limited per address too (webapp/api/api.py).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
GAD_LOGIN_FAILURE_LIMIT = env.integer("GAD_LOGIN_FAILURE_LIMIT", 10, minimum=1)
GAD_LOGIN_LOCKOUT_MINUTES = env.integer("GAD_LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
AXES_FAILURE_LIMIT = GAD_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = GAD_LOGIN_LOCKOUT_MINUTES / 60  # hours
# The (username, address) pair and the address: failures for one username from many
# addresses lock none of them out for the real person at hers (a username alone would).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_CLIENT_IP_CALLABLE = "webapp.lib.http.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # every failed attempt, kept for the admin
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"

if not DEBUG:
    # Serves collected static files in production without a separate web server
    # (development uses runserver's own static handler).
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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
                "webapp.teams.context_processors.teams",
            ],
        },
    },
]

GAD_DATA_DIR = Path(env.string("GAD_DATA_DIR") or BASE_DIR / "var" / "data").resolve()

_database_url = env.string("DATABASE_URL")
if not _database_url and not DEBUG:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set; production needs PostgreSQL, e.g. "
        "postgres://USER:PASSWORD@HOST:5432/NAME"
    )
try:
    DATABASES = {
        "default": dj_database_url.parse(
            _database_url or f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=60
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"  # filled by collectstatic (docker image build)

# Uploads larger than this are refused with 413 before they reach the parser.
GAD_MAX_UPLOAD_MB = env.integer("GAD_MAX_UPLOAD_MB", 200, minimum=1)
# How long POST /api/v1/prompt-sets waits for the worker's import before answering 202.
GAD_UPLOAD_WAIT_S = env.integer("GAD_UPLOAD_WAIT_S", 30, minimum=0)
# A web process lets only a few requests hold a thread for long: uploads waiting for their
# import (past these, the API answers 202 at once) and streamed downloads (past these,
# 429), per person and in all (a small share of GAD_WEB_THREADS).
# An upload's checker (`python -m trainer check-prompts`, run by the importing worker)
# may use this much address space: a file that expands past it fails, not the worker.
GAD_IMPORT_MEMORY_MB = env.integer("GAD_IMPORT_MEMORY_MB", 1024, minimum=256)
_web_threads = env.integer("GAD_WEB_THREADS", 8, minimum=1)  # webapp/gunicorn.py's too
GAD_UPLOAD_WAITERS_PER_USER = env.integer("GAD_UPLOAD_WAITERS_PER_USER", 1, minimum=0)
GAD_UPLOAD_WAITERS = env.integer("GAD_UPLOAD_WAITERS", max(1, _web_threads // 4), minimum=0)
GAD_DOWNLOADS_PER_USER = env.integer("GAD_DOWNLOADS_PER_USER", 2, minimum=1)
GAD_DOWNLOADS = env.integer("GAD_DOWNLOADS", max(1, _web_threads // 2), minimum=1)
# Checkpoint files (GET /api/v1/checkpoints/{id}/files/{path}) can be sent by the reverse
# proxy instead of a web thread: "x-accel-redirect" (nginx: an `internal` location named by
# GAD_DOWNLOAD_OFFLOAD_PREFIX whose alias is GAD_DATA_DIR) or "x-sendfile" (Apache's
# mod_xsendfile, lighttpd: the file's absolute path). Empty: Django streams the bytes.
GAD_DOWNLOAD_OFFLOAD = (env.string("GAD_DOWNLOAD_OFFLOAD") or "").strip().lower()
if GAD_DOWNLOAD_OFFLOAD not in ("", "x-accel-redirect", "x-sendfile"):
    raise ImproperlyConfigured(
        f"GAD_DOWNLOAD_OFFLOAD={GAD_DOWNLOAD_OFFLOAD!r}: use x-accel-redirect (nginx), "
        "x-sendfile (Apache, lighttpd) or leave it empty (Django streams the files)."
    )
GAD_DOWNLOAD_OFFLOAD_PREFIX = env.string("GAD_DOWNLOAD_OFFLOAD_PREFIX") or "/protected-data/"
# Reverse proxies in front of the site, each appending to X-Forwarded-For: the client's
# address is the one the outermost saw (webapp.lib.http.client_ip). 0: no proxy, the
# header is ignored.
GAD_TRUSTED_PROXIES = env.integer("GAD_TRUSTED_PROXIES", 0, minimum=0)
# Uploads stream to disk above 2.5 MB instead of sitting in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Teacher base URLs must resolve to public addresses unless their host is listed.
GAD_ALLOWED_TEACHER_HOSTS = env.str_list(
    "GAD_ALLOWED_TEACHER_HOSTS", ["127.0.0.1", "localhost", "::1"] if DEBUG else []
)
# Directories under which an administrator may register models for teams to start from
# (webapp.catalog); a job's student is a hub id, a team checkpoint or such a model.
GAD_MODEL_ROOTS = env.str_list("GAD_MODEL_ROOTS", [])
# Hub models (a job's student or an evaluation's model named org/name): looked up at
# GAD_HUB_ENDPOINT for their size (refused past the team's cap, charged to its storage)
# before a job may start from one. GAD_HUB_MODELS=0: none at all, only registered
# models and the team's checkpoints (a site that does not reach the Hub).
GAD_HUB_MODELS = env.boolean("GAD_HUB_MODELS", True)
GAD_HUB_ENDPOINT = (
    env.string("GAD_HUB_ENDPOINT") or env.string("HF_ENDPOINT") or "https://huggingface.co"
).rstrip("/")
# The trainer's sandbox (worker/sandbox.py, docs/security.md): "bwrap" runs every
# trainer process under bubblewrap (its own mount, pid and, on one node, network
# namespace) and fails a job on a node that cannot; "auto" (development's default) uses
# it where it works; "off" never.
GAD_SANDBOX = env.string("GAD_SANDBOX") or ("auto" if DEBUG else "bwrap")
if GAD_SANDBOX not in ("bwrap", "auto", "off"):
    raise ImproperlyConfigured(f"GAD_SANDBOX must be bwrap, auto or off, not {GAD_SANDBOX!r}.")
# Memory of one GPU of the site's nodes: the launch form's memory plan (trainer.plan)
# refuses a job whose per-GPU peak exceeds it.
GAD_GPU_MEMORY_GB = env.number("GAD_GPU_MEMORY_GB") if env.raw("GAD_GPU_MEMORY_GB") else 80.0
# This node's name (GPU leases, the node's own queue) and the address other nodes reach
# it at (a multi-node job's rendezvous); default: the address of the interface
# NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME name, else the one the broker is reached from.
GAD_NODE_NAME = env.string("GAD_NODE_NAME") or ""
GAD_NODE_ADDR = env.string("GAD_NODE_ADDR") or ""
# A multi-node job's rendezvous store listens on node 0 at this port + the index of the
# job's first GPU there (worker/gang.py): open base..base+7 between the GPU nodes only.
GAD_GANG_PORT_BASE = env.integer("GAD_GANG_PORT_BASE", 29600, minimum=1024)
# GPU indices this worker process may lease; empty means a CPU-only node.
GAD_WORKER_GPUS = env.int_list("GAD_WORKER_GPUS", [])
# The queue evaluations' answer generation goes to: "gpu" on a site whose GPU nodes
# should generate every model's answers (on a leased GPU), "cpu" to let any node take it.
GAD_EVAL_QUEUE = env.string("GAD_EVAL_QUEUE") or "cpu"
if GAD_EVAL_QUEUE not in ("cpu", "gpu"):
    raise ImproperlyConfigured(f"GAD_EVAL_QUEUE must be cpu or gpu, not {GAD_EVAL_QUEUE!r}")

# Worker knobs (docs/deployment.md), read here with every other setting.
# A job whose heartbeat is older than this is dead (its worker crashed or was lost).
GAD_HEARTBEAT_STALE_S = float(env.integer("GAD_HEARTBEAT_STALE_S", 45, minimum=10))
# A job, evaluation or judge run waiting unclaimed this long, its task in no queue and
# with no worker, lost its message (a broker restart without AOF): the sweep resends it.
# /metrics (Prometheus): with a token, only "Authorization: Bearer <token>"; without,
# only from the loopback address.
if DEBUG:
    GAD_METRICS_TOKEN = env.string("GAD_METRICS_TOKEN") or ""
else:
    GAD_METRICS_TOKEN = env.required(
        "GAD_METRICS_TOKEN",
        "production needs the bearer token /metrics asks of Prometheus, e.g. "
        '`python -c "import secrets; print(secrets.token_urlsafe(32))"`',
    )
GAD_REQUEUE_AFTER_S = float(env.integer("GAD_REQUEUE_AFTER_S", 600, minimum=1))
# A task that found no free GPU is retried after this long.
GAD_GPU_RETRY_S = env.integer("GAD_GPU_RETRY_S", 15, minimum=1)
# Time limits: a backstop for a hung worker, not a budget (quotas are). A GAD run at
# the paper's scale takes ~30 h.
GAD_JOB_TIME_LIMIT_S = env.integer("GAD_JOB_TIME_LIMIT_S", 7 * 24 * 3600, minimum=60)
GAD_EVAL_TIME_LIMIT_S = env.integer("GAD_EVAL_TIME_LIMIT_S", 24 * 3600, minimum=60)
GAD_JUDGE_TIME_LIMIT_S = env.integer("GAD_JUDGE_TIME_LIMIT_S", 12 * 3600, minimum=60)
# A job whose worker died this many times fails instead of being re-queued again.
GAD_JOB_MAX_ATTEMPTS = env.integer("GAD_JOB_MAX_ATTEMPTS", 3, minimum=1)
# GPUs set aside for evaluation generation, outside the leased pool. Blank: a model's
# answers are generated on one GPU leased from the node's pool (GAD_WORKER_GPUS) like a
# job's, or on the CPU on a node without GPUs.
GAD_EVAL_GPUS = env.string("GAD_EVAL_GPUS", "") or ""

# Health of the adversarial game (webapp/monitoring/health.py): alarm thresholds. Only
# the variables that are set override the defaults documented there.
for _field in dataclasses.fields(Thresholds):  # the names come from the thresholds
    _name = f"GAD_HEALTH_{_field.name.upper()}"
    if env.raw(_name) is not None:
        globals()[_name] = env.number(_name)
# How often a running job's guard evaluates the alarms (seconds).
GAD_GUARD_CHECK_S = env.integer("GAD_GUARD_CHECK_S", 30, minimum=1)
# How often the job page asks for new points (seconds).
GAD_MONITOR_POLL_S = env.integer("GAD_MONITOR_POLL_S", 5, minimum=1)

# Cache: the monitoring charts keep each job's down-sampled series here. A Redis URL
# shares it between web processes and the workers, whose ingestion keeps it current, so
# even a job's first chart request is answered from it (docs/benchmarks.md); without
# one, each process has its own local-memory cache and pays the first read itself.
_cache_url = env.string("GAD_CACHE_URL")
if _cache_url:
    if not _cache_url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"GAD_CACHE_URL must be a Redis URL (redis://HOST:6379/1), not {_cache_url[:40]!r}"
        )
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _cache_url,
        }
    }

# Celery. Without CELERY_BROKER_URL, development uses kombu's filesystem transport,
# which needs no server; production must name its Redis.
_broker_url = env.string("CELERY_BROKER_URL")
if not _broker_url and not DEBUG:
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL is not set; production needs Redis, e.g. redis://HOST:6379/0"
    )
CELERY_BROKER_URL = _broker_url or "filesystem://"
# Redis redelivers an unacknowledged task after this long; jobs run for hours, and the
# sweep (not redelivery) is what recovers a job from a dead worker.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 7 * 24 * 3600}
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = GAD_DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS |= {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        # Its exchange tables: kombu's default is "control" in the current directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 60 * 60
CELERY_TASK_TIME_LIMIT = 60 * 60 + 300
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Where each teacher endpoint's rate limit (requests and tokens per minute, requests in
# flight, the provider's last word) is shared by every worker that calls it
# (trainer/ratelimit.py): the broker's Redis unless this names another; "" with a broker
# that is not Redis, where each process limits itself alone.
# How often a job collecting through the Batch API looks at its batch (seconds).
GAD_BATCH_POLL_S = env.number("GAD_BATCH_POLL_S") if env.raw("GAD_BATCH_POLL_S") else 60.0
GAD_LIMITER_URL = env.string("GAD_LIMITER_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
# The sweep re-queues jobs whose worker died and resumes paused jobs (run by celery beat).
# GAD_SWEEP_S (30 s) is read by beat; the tests shorten it to watch a recovery happen.
GAD_SWEEP_S = env.integer("GAD_SWEEP_S", 30, minimum=1)
CELERY_BEAT_SCHEDULE = {"sweep": {"task": "gad.sweep", "schedule": float(GAD_SWEEP_S)}}
# Routing, declared once: every documented worker consumes "cpu" (GPU nodes run
# "-Q gpu,cpu", CPU nodes "-Q cpu", the demo "-Q cpu,gpu"), so a task sent without a
# queue (the beat's sweep, "Test connection") goes there, never to Celery's "celery"
# queue that no worker reads. A job's queue depends on its GPUs and evaluation
# generation's on GAD_EVAL_QUEUE: their senders name it (webapp/dispatch.py).
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "gad.sweep": {"queue": "cpu"},
    "gad.test_teacher": {"queue": "cpu"},
    # Its own queue, which GPU workers do not read: a hostile file costs a CPU worker at
    # most, never a training node.
    "gad.import_prompts": {"queue": "imports"},
    "gad.judge_evaluation": {"queue": "cpu"},
    "gad.ping": {"queue": "cpu"},
}

# Security. Behind a TLS-terminating proxy set DJANGO_SECURE_PROXY_SSL_HEADER=1.
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.boolean("DJANGO_SECURE_SSL_REDIRECT", True)
    # Load balancers and the containers' healthchecks probe over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env.integer("DJANGO_SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.boolean("DJANGO_SECURE_HSTS_PRELOAD", True)
    if env.boolean("DJANGO_SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    CSRF_TRUSTED_ORIGINS = env.str_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# plain: "time LEVEL logger: message"; json: one JSON object a line (webapp.logs), for
# the web, the workers and beat alike (Celery then keeps Django's logging, see below).
GAD_LOG_FORMAT = env.string("GAD_LOG_FORMAT") or "plain"
if GAD_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"GAD_LOG_FORMAT={GAD_LOG_FORMAT!r}: use plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "webapp.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": GAD_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.string("GAD_LOG_LEVEL", "INFO")},
}
# With JSON logs the workers keep the handlers above instead of Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = GAD_LOG_FORMAT != "json"

"""Settings, read from the environment (Healthchecks style: tiny helpers, secure defaults).

Infrastructure comes from the environment; hyperparameters live in recipes stored on runs.
Without any variable set, the platform runs on the embedded defaults: SQLite under ``var/`` and
a Celery broker on the filesystem, so ``make demo`` needs no external service.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)
ARTIFACTS_DIR = Path(env_str("ARTIFACTS_DIR", str(VAR_DIR / "artifacts")))

# "production" turns on the HTTPS-only cookie and header settings that `check --deploy` asks for.
PRODUCTION = env_str("FEEDBACK_ENV", "development") == "production"
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise RuntimeError("SECRET_KEY must be set when FEEDBACK_ENV=production")
    # A development machine keeps one random key under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Keys the pseudonymous annotator ids in exports; rotate it to unlink old exports from new ones.
PSEUDONYM_KEY = env_str("PSEUDONYM_KEY", SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "feedback",
    "annotation",
    "training",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "feedback.platform.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "feedback.platform.middleware.DatabaseUnavailableMiddleware",
    "feedback.platform.audit.AuditLogMiddleware",
]

ROOT_URLCONF = "feedback.urls"
WSGI_APPLICATION = "feedback.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'feedback.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction starts, so two writers queue up instead
    # of failing half-way; WAL lets readers go on while one writes.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so a worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # Django's PostgreSQL backend, its per-request health check without a round trip on a
    # quiet connection (feedback/platform/postgresql/base.py).
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "feedback.platform.postgresql"
    # An unreachable server fails a request in seconds (a fast 503), not after the kernel's TCP
    # timeout; keepalives notice a connection that died silently.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        connect_timeout=env_int("DB_CONNECT_TIMEOUT", 3),
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=5,
        keepalives_count=3,
        # Server-side parameter binding, so psycopg prepares a statement on the server once it
        # has run it prepare_threshold times: the hot path's statements are planned once per
        # connection instead of on every request (the lease's pick spent half its time there).
        server_side_binding=env_bool("DB_SERVER_SIDE_BINDING", True),
        prepare_threshold=env_int("DB_PREPARE_THRESHOLD", 5),
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# Development serves static files straight from the apps; production uses collectstatic.
WHITENOISE_USE_FINDERS = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

LOGIN_URL = "frontend:login"
LOGIN_REDIRECT_URL = "frontend:home"
LOGOUT_REDIRECT_URL = "frontend:login"

# Request bodies: an import file may be large, everything else is small.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 64 * 1024 * 1024)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an anonymous call gets 401 with a WWW-Authenticate header. DRF's,
        # with the token, its user and the user's roles read in one query.
        "feedback.platform.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Strict JSON: NUL, lone surrogates, deep nesting, oversize bodies are 4xx (feedback/parsers).
    "DEFAULT_PARSER_CLASSES": ["feedback.platform.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "feedback.platform.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # `?format=` names an export format here (DESIGN §9), not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Feedback Loop API",
    "DESCRIPTION": (
        "Annotators lease comparison tasks and submit 3H judgments; admins import prompts and run "
        "rounds; researchers export preference data. Errors are JSON: "
        '`{"code": ..., "detail": ..., "fields": {"dotted.field": ["reason"]}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several choice sets share the field name "kind": name each one.
    "ENUM_NAME_OVERRIDES": {
        "TrainingRunKindEnum": "training.models.TrainingRun.Kind",
        "SnapshotKindEnum": "training.models.DatasetSnapshot.Kind",
        "SnapshotRequestKindEnum": "training.snapshot_api.SNAPSHOT_REQUEST_KINDS",
        # A round's selection and an automation's next_selection: one set, one name.
        "SelectionEnum": "annotation.round_selection.SELECTIONS",
    },
}

# Memory of the serving or training device, for the registry's fit warnings (0: unknown).
DEVICE_MEMORY_GIB = env_int("DEVICE_MEMORY_GIB", 0)
# Where models run (feedback/serving/devices.py): auto (a CUDA GPU if there is one, else the
# CPU), cpu, cuda (a GPU or an error) or cuda:N; bf16 on a GPU that has it, fp16 on older ones,
# fp32 on the CPU.
DEVICE = env_str("DEVICE", "auto")
# Where the web tier runs on a CPU and training workers on GPUs: run creation then trusts the
# workers for QLoRA instead of asking this machine (the worker still refuses a run it cannot
# train, with the reason).
TRAINING_WORKERS_HAVE_CUDA = env_bool("TRAINING_WORKERS_HAVE_CUDA", False)

# Generation (DESIGN §6): the backend, an OpenAI-compatible server, timeouts and retries.
GENERATION_BACKEND = env_str("GENERATION_BACKEND", "transformers")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "http://127.0.0.1:8001")
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
GENERATION_CONNECT_TIMEOUT = float(env_str("GENERATION_CONNECT_TIMEOUT", "5"))
GENERATION_READ_TIMEOUT = float(env_str("GENERATION_READ_TIMEOUT", "120"))
GENERATION_RETRIES = env_int("GENERATION_RETRIES", 2)
# The artifacts root as the OpenAI-compatible server sees it (its own mount), for the paths it
# is given: adapters loaded at deploy, weights in a restart hint; empty: the same path as here.
OPENAI_ADAPTER_ROOT = env_str("OPENAI_ADAPTER_ROOT", "")
# The in-process vLLM engine (GENERATION_BACKEND=vllm): GPUs per model, a quantization (fp8,
# awq, gptq; empty: as the weights say), the share of GPU memory it may take (weights + KV cache).
VLLM_TENSOR_PARALLEL = env_int("VLLM_TENSOR_PARALLEL", 1)
VLLM_QUANTIZATION = env_str("VLLM_QUANTIZATION", "")
VLLM_GPU_MEMORY_UTILIZATION = float(env_str("VLLM_GPU_MEMORY_UTILIZATION", "0.9"))
# The largest LoRA rank it accepts (vLLM allows 8, 16, 32, 64, 128, 256, ...; a higher one costs
# memory for every adapter slot), and how many adapters share one batch.
VLLM_MAX_LORA_RANK = env_int("VLLM_MAX_LORA_RANK", 64)
VLLM_MAX_LORAS = env_int("VLLM_MAX_LORAS", 4)
# The context length it reserves KV cache for (0: the model's own).
VLLM_MAX_MODEL_LEN = env_int("VLLM_MAX_MODEL_LEN", 0)
# Folders besides ARTIFACTS_DIR that policies' weights may be read from (absolute paths).
MODEL_DIRS = env_list("MODEL_DIRS", "")
# Model servers a generation backend may be pointed at, as host or host:port; the host of
# OPENAI_BASE_URL is always allowed.
MODEL_SERVER_HOSTS = env_list("MODEL_SERVER_HOSTS", "127.0.0.1,localhost")
# The tiny model `build_tiny_model` makes, relative to ARTIFACTS_DIR.
TINY_MODEL_DIR = env_str("TINY_MODEL_DIR", "models/tiny-llama")

# A running training run with no heartbeat for this long lost its worker; it is retried once.
TRAINING_STALE_SECONDS = env_int("TRAINING_STALE_SECONDS", 300)
# Where a run logs besides its own page when its recipe's report_to is unset: tensorboard (event
# files kept with the run's artifacts, offline), trackio, wandb, or none; comma-separated.
# Nothing that sends data off the machine is on by default.
TRAINING_REPORT_TO = env_str("TRAINING_REPORT_TO", "tensorboard")
# A generating round whose job wrote no heartbeat for this long lost its worker.
GENERATION_STALE_SECONDS = env_int("GENERATION_STALE_SECONDS", 600)
# Active learning: the module that checks a round's reward runs and scores its candidates
# (annotation/round_selection.py asks it by this name, so annotation never imports training).
ROUND_SELECTION_SCORING = "training.active_learning"

# Rate limits (feedback/platform/throttle.py): "count/period" with period s, min, h or d, held
# in every window of that length; "" turns one off. A lease is per annotator (a person takes one
# every few seconds at most); sign-in counts failures per account and address, and failures per
# address across accounts (a correct password elsewhere always signs in).
THROTTLE_RATES = {
    "lease": env_str("THROTTLE_LEASE", "300/min"),
    "login": env_str("THROTTLE_LOGIN", "10/min"),
    "login_address": env_str("THROTTLE_LOGIN_ADDRESS", "100/min"),
}
# Webhook targets on loopback, private, link-local or shared addresses are refused (server-side
# request forgery) unless this is on; cloud metadata addresses are refused always.
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
# Proxies in front of the app that append to X-Forwarded-For (0: use the peer address).
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)

# Task distribution (DESIGN §4).
LEASE_SECONDS = env_int("LEASE_SECONDS", 30 * 60)
# On PostgreSQL a lease is one call of the annotation_lease function (annotation/lease.py) and
# a submit's fast path one of annotation_submit (annotation/judgments.py); off, both run the
# same steps from Python (as on SQLite), a round trip each.
HOT_PATH_IN_DATABASE = env_bool("HOT_PATH_IN_DATABASE", True)

# Annotation quality (annotation/quality.py): trust is a share of agreeing pairs in [0, 1]; an
# annotator below TRUST_REVIEW_BELOW with at least TRUST_MIN_PAIRS pairs of evidence is flagged.
TRUST_REVIEW_BELOW = float(env_str("TRUST_REVIEW_BELOW", "0.6"))
TRUST_MIN_PAIRS = env_int("TRUST_MIN_PAIRS", 10)

# Exports (annotation/exports.py): files written by export jobs live under ARTIFACTS_DIR/exports.
EXPORT_BATCH_ROWS = env_int("EXPORT_BATCH_ROWS", 5000)

# Celery: Redis or RabbitMQ through CELERY_BROKER_URL; otherwise a broker on the filesystem under
# var/, which needs no server and suits one machine with one worker.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # Broadcast (pidbox) exchanges: kombu's default is a "control" folder in the current one.
        "control_folder": str(_broker_dir / "control"),
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Jobs are acknowledged when they end (acks_late), and Redis hands a job taken but not yet
    # acknowledged to a worker again once visibility_timeout has passed (kombu's default: 1 hour,
    # less than a training run on real hardware). So it is set above the longest job expected (a
    # day); a job delivered again anyway finds its row claimed and returns at once (training runs,
    # exports, rounds and deployments each claim their row by status). A worker that dies is
    # noticed by its heartbeats (TRAINING_STALE_SECONDS), not by this timeout; only the jobs it
    # had reserved but not started wait for it, after a hard kill (a warm shutdown hands them back).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 24 * 3600),
    }


# Results let callers (and tests) wait on a task: stored beside the broker's messages.
def _result_backend(broker: str) -> str:
    if broker.startswith("filesystem://"):
        (VAR_DIR / "results").mkdir(parents=True, exist_ok=True)
        return f"file://{VAR_DIR / 'results'}"
    if broker.startswith(("redis://", "rediss://")):
        return broker
    return "rpc://"


CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", _result_backend(CELERY_BROKER_URL))
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "expire-leases": {"task": "annotation.tasks.leases_expire", "schedule": 60.0},
    "relay-outbox": {"task": "feedback.tasks.outbox_relay", "schedule": 10.0},
    "prune-throttle-windows": {"task": "feedback.tasks.throttle_windows_prune", "schedule": 600.0},
    "recover-training-runs": {"task": "training.tasks.training_runs_recover", "schedule": 60.0},
    "recover-export-jobs": {"task": "annotation.tasks.export_jobs_recover", "schedule": 60.0},
    "recover-round-generation": {
        "task": "annotation.tasks.rounds_generation_recover",
        "schedule": 60.0,
    },
    "advance-automations": {"task": "training.tasks.automations_advance_all", "schedule": 15.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

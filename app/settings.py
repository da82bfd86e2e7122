"""Configuration, read once from the environment into one typed object (12-factor).

Nothing deeper in the code reads the environment: `create_app` receives a `Settings`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///parley.db"
# The drivers Parley installs: a URL naming another (Heroku's postgres://) cannot work.
DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")
REDIS_SCHEMES = ("redis", "rediss", "unix")
# The event log may have a Redis (Cluster) of its own (docs/SCALING.md).
LOG_REDIS_SCHEMES = (*REDIS_SCHEMES, "redis+cluster", "rediss+cluster")


class ConfigError(ValueError):
    """A setting is present but unusable; raised at start-up, never at request time."""


class StartupError(Exception):
    """A setting reads well but does not work (a server it names is unreachable, its port is
    taken): serving cannot start. The message names the setting and says what to do."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    scheme = raw.partition("://")[0] if "://" in raw else ""
    if scheme not in schemes:
        # Only the scheme is quoted back: the rest may hold a password.
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name} must start with {wanted}, got {(scheme + '://') if scheme else 'no scheme'}")
    return raw


def _log_redis_url(env: Mapping[str, str]) -> str | None:
    url = _url(env, "PARLEY_LOG_REDIS_URL", LOG_REDIS_SCHEMES)
    if url is not None and not env.get("REDIS_URL", "").strip():
        # Presence, leases and rate limits stay on REDIS_URL: the log alone cannot go there.
        raise ConfigError("PARLEY_LOG_REDIS_URL needs REDIS_URL too (presence, leases and limits stay there)")
    return url


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    # Address to bind. Default: loopback while development login is on (anyone could sign in
    # as anyone), every interface otherwise.
    host: str = "0.0.0.0"
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    # Every Redis key starts with this; tests give each test its own.
    redis_prefix: str = "parley"
    # The event log's own Redis or Redis Cluster (`redis+cluster://node:port`); default REDIS_URL.
    log_redis_url: str | None = None
    # The event log's shards (topics hashed across them; one hash slot each on a cluster).
    log_shards: int = 1
    # Durable appends wait until this many replicas confirm them (WAIT): failovers lose nothing.
    log_wait_replicas: int = 0
    jwt_secret: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    dev_login: bool = False
    # Lifetime of the development login's tokens; short ones exercise the page's token refresh.
    dev_token_ttl_s: int = 24 * 3600
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:ops@parley.invalid"
    heartbeat_s: float = 30.0
    retention_s: int = 24 * 3600
    # Per-user rate limits (app/infra/ratelimit.py, GCRA: this many a minute, all at once at most);
    # 0 turns one off. Shared by every process when REDIS_URL is set.
    rate_limit_per_min: int = 100  # responses posted, edited or deleted
    discussion_limit_per_min: int = 10
    follow_limit_per_min: int = 60  # follows and unfollows
    typing_limit_per_min: int = 120  # typing signals (REST and WebSocket), before the throttle
    presence_limit_per_min: int = 30  # status updates (REST and WebSocket)
    ws_user_messages_per_min: int = 600  # WebSocket messages of one user, all connections
    beacon_limit_per_min: int = 20  # batches of client beacons (a page sends one per 30 s or so)
    # Per process (no round trip): one WebSocket connection's messages (past it: close 4029),
    # one user's open streams (SSE, WebSocket, long-poll; the next gets 429), and connection
    # attempts per client IP address (past it: 429 and close). 0 turns one off.
    ws_connection_messages_per_min: int = 240
    max_streams_per_user: int = 20
    connect_limit_per_min: int = 1200
    allowed_origins: tuple[str, ...] = ()
    # Peers whose X-Forwarded-Proto/-For/-Host are believed (a TLS-terminating proxy or PaaS
    # router): IP addresses or CIDR networks, or "*" for any peer (only when nothing but the
    # router can reach the app). Empty: forwarded headers are ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Where the embedded default keeps what it generates once (dev JWT secret, VAPID keys, lock).
    data_dir: Path = field(default_factory=lambda: Path(".parley"))
    # Largest JSON body accepted, in bytes; larger gets 413.
    max_body_bytes: int = 64 * 1024
    # Events a connection may have queued before it counts as a slow consumer and is dropped.
    max_buffered_events: int = 1024
    # A resume that would replay more than this many events gets `sync_required` instead.
    max_catchup_events: int = 1000
    # Hypercorn workers for `parley serve` (WEB_CONCURRENCY on most PaaS).
    workers: int = 1
    # PARLEY_WORKERS: whether `parley serve` runs the workers (the notification and analysis
    # journal workers, the retention sweeper: `app.main.start_workers`) beside the streams.
    # 0 leaves them to a `parley work` process (needs REDIS_URL; docs/ARCHITECTURE.md).
    run_workers: bool = True
    # Serve `GET /stream` on the lean front (transports/lean_http.py) in front of Hypercorn.
    # PARLEY_LEAN_STREAM=0 serves everything with Hypercorn; with TLS it is always off.
    lean_stream: bool = True
    # Objects older than this are frozen out of the collector's passes, and a full collection
    # runs this often instead (app/infra/collector.py); 0 keeps CPython's own schedule.
    gc_freeze_s: float = 1.0
    gc_full_s: float = 600.0
    # The lean front closes a connection whose first request head is not complete this long
    # after it opened (slowloris).
    header_timeout_s: float = 5.0
    log_level: str = "INFO"
    # Web Push (issue 6): one attempt's timeout, parallel sends, first retry's backoff (doubles).
    push_timeout_s: float = 10.0
    push_concurrency: int = 16
    push_backoff_s: float = 1.0
    # Accept http:// and loopback push endpoints. Off in production (a subscription endpoint
    # is a URL the server will POST to: SSRF); the tests' loopback push service needs it.
    push_allow_insecure: bool = False
    # The notification worker's cluster-wide lease: a crashed holder is replaced after this.
    notify_lease_s: float = 5.0
    # Test knob: a pause per event processed by the notification worker, so a test can kill
    # a worker mid-batch deterministically. 0 in production.
    notify_event_delay_ms: int = 0
    # Test knob: check every REST answer against its route's declared contract (app/web/contract.py);
    # one that breaks it becomes a 500 saying why. Off in production (it re-reads each body).
    check_responses: bool = False
    # Presence (app/presence/store.py): a connection not refreshed for this long is gone (a killed
    # server's users vanish after it); the refresh runs every third of it.
    presence_ttl_s: float = 45.0
    # A user's last connection lingers this long after closing, so a reload does not flap.
    presence_grace_s: float = 5.0
    # How often this process sweeps expired presence and typing in its discussions.
    presence_sweep_s: float = 1.0
    typing_ttl_s: float = 5.0
    typing_throttle_ms: int = 500
    # A stream whose user did nothing for this long is closed (FR-035).
    idle_timeout_s: float = 30 * 60.0
    # Roles the development login may hand out (PARLEY_DEV_ROLES, comma-separated): none by
    # default, so `POST /api/dev/login {"roles": ["admin"]}` is refused unless allowed here.
    dev_roles: frozenset[str] = frozenset()
    # Common ground (app/analysis/rules.py, docs/COMMON_GROUND.md). A proposition is judged only
    # once this many participants agreed or disagreed with it (passes do not count).
    cg_min_participants: int = 3
    # Agreement (agree / (agree + disagree)) at or above this: common ground.
    cg_common_ground_min: float = 0.7
    # Agreement within [low, high]: divisive (the room is split).
    cg_divisive_low: float = 0.35
    cg_divisive_high: float = 0.65
    # Debounce (app/analysis/worker.py): a recomputation starts this long after the first
    # stance of a burst, and at least `cg_min_interval_ms` after the previous one started.
    cg_debounce_ms: int = 200
    cg_min_interval_ms: int = 1000
    # The analysis worker's cluster-wide lease, and the per-discussion run lease's length.
    cg_lease_s: float = 5.0
    # Test knob: a pause inside each recomputation (to make overlaps observable). 0 in production.
    cg_compute_delay_ms: int = 0
    # Operations (issue 16). One JSON access-log line per request: on unless development login is.
    access_log: bool = True
    # Retention (app/domain/retention.py): notifications older than this are deleted; a deleted
    # response's words are erased this long after its deletion; the sweep runs this often.
    notification_retention_days: float = 90.0
    deleted_body_grace_days: float = 30.0
    retention_interval_s: float = 3600.0

    @property
    def embedded(self) -> bool:
        """True when the event log lives inside this one process (no REDIS_URL)."""
        return self.redis_url is None

    @property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            rest = self.database_url[len(prefix) :]
            if rest and rest != ":memory:":
                return Path(rest)
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        secret = env.get("PARLEY_JWT_SECRET") or None
        jwks = env.get("PARLEY_JWKS_URL") or None
        dev_login = _flag(env, "PARLEY_DEV_LOGIN")
        if dev_login is None:
            # On by default only when nothing else can identify people (API.md, Identity).
            dev_login = secret is None and jwks is None
        dev_roles = frozenset(r.strip() for r in env.get("PARLEY_DEV_ROLES", "").split(",") if r.strip())
        common_ground_min = _float(env, "PARLEY_CG_COMMON_GROUND_MIN", 0.7, minimum=0.5)
        divisive_low = _float(env, "PARLEY_CG_DIVISIVE_LOW", 0.35, minimum=0.0)
        divisive_high = _float(env, "PARLEY_CG_DIVISIVE_HIGH", 0.65, minimum=0.0)
        if common_ground_min > 1.0:
            raise ConfigError(f"PARLEY_CG_COMMON_GROUND_MIN must be at most 1, got {common_ground_min}")
        if not divisive_low <= divisive_high < common_ground_min:
            raise ConfigError(
                "the divisive band must satisfy PARLEY_CG_DIVISIVE_LOW <= PARLEY_CG_DIVISIVE_HIGH "
                f"< PARLEY_CG_COMMON_GROUND_MIN, got {divisive_low}, {divisive_high}, {common_ground_min}"
            )
        origins = tuple(o.strip() for o in env.get("PARLEY_ALLOWED_ORIGINS", "").split(",") if o.strip())
        proxies = tuple(p.strip() for p in env.get("PARLEY_TRUSTED_PROXIES", "").split(",") if p.strip())
        for proxy in proxies:
            if proxy != "*":
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ConfigError(f"PARLEY_TRUSTED_PROXIES: {proxy!r} is not an IP address or network") from None
        return cls(
            port=_int(env, "PORT", 8000, minimum=0),
            host=env.get("PARLEY_HOST", "").strip() or ("127.0.0.1" if dev_login else "0.0.0.0"),
            database_url=_url(env, "DATABASE_URL", DATABASE_SCHEMES) or DEFAULT_DATABASE_URL,
            redis_url=_url(env, "REDIS_URL", REDIS_SCHEMES),
            redis_prefix=env.get("PARLEY_REDIS_PREFIX") or "parley",
            log_redis_url=_log_redis_url(env),
            log_shards=_int(env, "PARLEY_LOG_SHARDS", 1, minimum=1),
            log_wait_replicas=_int(env, "PARLEY_LOG_WAIT_REPLICAS", 0, minimum=0),
            jwt_secret=secret,
            jwks_url=jwks,
            jwt_issuer=env.get("PARLEY_JWT_ISSUER") or None,
            jwt_audience=env.get("PARLEY_JWT_AUDIENCE") or None,
            dev_login=dev_login,
            dev_token_ttl_s=_int(env, "PARLEY_DEV_TOKEN_TTL_S", 24 * 3600, minimum=5),
            vapid_private_key=env.get("PARLEY_VAPID_PRIVATE_KEY") or None,
            vapid_subject=env.get("PARLEY_VAPID_SUBJECT") or "mailto:ops@parley.invalid",
            heartbeat_s=_float(env, "PARLEY_HEARTBEAT_S", 30.0, minimum=0.05),
            retention_s=_int(env, "PARLEY_RETENTION_S", 24 * 3600, minimum=1),
            rate_limit_per_min=_int(env, "PARLEY_RATE_LIMIT_PER_MIN", 100, minimum=0),
            discussion_limit_per_min=_int(env, "PARLEY_DISCUSSION_LIMIT_PER_MIN", 10, minimum=0),
            follow_limit_per_min=_int(env, "PARLEY_FOLLOW_LIMIT_PER_MIN", 60, minimum=0),
            typing_limit_per_min=_int(env, "PARLEY_TYPING_LIMIT_PER_MIN", 120, minimum=0),
            presence_limit_per_min=_int(env, "PARLEY_PRESENCE_LIMIT_PER_MIN", 30, minimum=0),
            ws_user_messages_per_min=_int(env, "PARLEY_WS_USER_MESSAGES_PER_MIN", 600, minimum=0),
            beacon_limit_per_min=_int(env, "PARLEY_BEACON_LIMIT_PER_MIN", 20, minimum=0),
            ws_connection_messages_per_min=_int(env, "PARLEY_WS_CONNECTION_MESSAGES_PER_MIN", 240, minimum=0),
            max_streams_per_user=_int(env, "PARLEY_MAX_STREAMS_PER_USER", 20, minimum=0),
            connect_limit_per_min=_int(env, "PARLEY_CONNECT_LIMIT_PER_MIN", 1200, minimum=0),
            allowed_origins=origins,
            trusted_proxies=proxies,
            data_dir=Path(env.get("PARLEY_DATA_DIR") or ".parley"),
            max_body_bytes=_int(env, "PARLEY_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            max_buffered_events=_int(env, "PARLEY_MAX_BUFFERED_EVENTS", 1024, minimum=1),
            max_catchup_events=_int(env, "PARLEY_MAX_CATCHUP_EVENTS", 1000, minimum=1),
            workers=_int(env, "WEB_CONCURRENCY", 1, minimum=1),
            run_workers=_flag(env, "PARLEY_WORKERS") is not False,
            lean_stream=_flag(env, "PARLEY_LEAN_STREAM") is not False,
            gc_freeze_s=_float(env, "PARLEY_GC_FREEZE_S", 1.0, minimum=0.0),
            gc_full_s=_float(env, "PARLEY_GC_FULL_S", 600.0, minimum=1.0),
            header_timeout_s=_float(env, "PARLEY_HEADER_TIMEOUT_S", 5.0, minimum=0.1),
            log_level=(env.get("PARLEY_LOG_LEVEL") or "INFO").upper(),
            push_timeout_s=_float(env, "PARLEY_PUSH_TIMEOUT_S", 10.0, minimum=0.1),
            push_concurrency=_int(env, "PARLEY_PUSH_CONCURRENCY", 16, minimum=1),
            push_backoff_s=_float(env, "PARLEY_PUSH_BACKOFF_S", 1.0, minimum=0.0),
            push_allow_insecure=bool(_flag(env, "PARLEY_PUSH_ALLOW_INSECURE")),
            notify_lease_s=_float(env, "PARLEY_NOTIFY_LEASE_S", 5.0, minimum=0.5),
            notify_event_delay_ms=_int(env, "PARLEY_NOTIFY_EVENT_DELAY_MS", 0, minimum=0),
            check_responses=bool(_flag(env, "PARLEY_CHECK_RESPONSES")),
            presence_ttl_s=_float(env, "PARLEY_PRESENCE_TTL_S", 45.0, minimum=0.1),
            presence_grace_s=_float(env, "PARLEY_PRESENCE_GRACE_S", 5.0, minimum=0.01),
            presence_sweep_s=_float(env, "PARLEY_PRESENCE_SWEEP_S", 1.0, minimum=0.01),
            typing_ttl_s=_float(env, "PARLEY_TYPING_TTL_S", 5.0, minimum=0.1),
            typing_throttle_ms=_int(env, "PARLEY_TYPING_THROTTLE_MS", 500, minimum=1),
            idle_timeout_s=_float(env, "PARLEY_IDLE_TIMEOUT_S", 30 * 60.0, minimum=1.0),
            dev_roles=dev_roles,
            cg_min_participants=_int(env, "PARLEY_CG_MIN_PARTICIPANTS", 3, minimum=1),
            cg_common_ground_min=common_ground_min,
            cg_divisive_low=divisive_low,
            cg_divisive_high=divisive_high,
            cg_debounce_ms=_int(env, "PARLEY_CG_DEBOUNCE_MS", 200, minimum=0),
            cg_min_interval_ms=_int(env, "PARLEY_CG_MIN_INTERVAL_MS", 1000, minimum=0),
            cg_lease_s=_float(env, "PARLEY_CG_LEASE_S", 5.0, minimum=0.5),
            cg_compute_delay_ms=_int(env, "PARLEY_CG_COMPUTE_DELAY_MS", 0, minimum=0),
            access_log=not dev_login if (access := _flag(env, "PARLEY_ACCESS_LOG")) is None else access,
            notification_retention_days=_float(env, "PARLEY_NOTIFICATION_RETENTION_DAYS", 90.0, minimum=0.0),
            deleted_body_grace_days=_float(env, "PARLEY_DELETED_BODY_GRACE_DAYS", 30.0, minimum=0.0),
            retention_interval_s=_float(env, "PARLEY_RETENTION_INTERVAL_S", 3600.0, minimum=0.05),
        )

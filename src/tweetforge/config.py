"""Settings read from the environment (prefix ``TWEETFORGE_``) or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWEETFORGE_", env_file=".env", extra="ignore")

    home: Path = Path(".tweetforge")
    """Data home: database, dataset snapshots, models."""

    database_url: str | None = None
    """SQLAlchemy URL; default is a SQLite file in the data home (WAL mode)."""

    database_pool_size: int = 5
    """PostgreSQL connections each process keeps open (every replica and every --workers process has its own
    pool): replicas x workers x (pool size + overflow) must stay under the server's max_connections."""

    database_max_overflow: int = 5
    """Connections a process may open beyond the pool under a burst (closed again after)."""

    artifacts: str | None = None
    """Where dataset snapshots and model versions are written: any fsspec URL (s3://bucket/prefix, gs://…,
    file:///shared/dir) shared by every machine on the same store; unset, the data home. Credentials come
    from the filesystem's own configuration (AWS_* variables, ~/.aws, …), never from this URL."""

    admin_token: SecretStr | None = None
    """Bearer token for the service's admin operations; unset, they answer 403. Hidden in reprs and logs."""

    cors_origins: list[str] = []
    """Origins allowed to call the API from a browser (e.g. ["http://localhost:3000"])."""

    rate_limit_per_minute: int = 120
    """Generation requests (REST, OpenAI-compatible and GraphQL together) per client address per minute; 0 turns
    the limit off. A request's user_id never chooses the client."""

    trusted_proxies: list[str] = []
    """Addresses or networks of the proxies in front of the server (e.g. ["10.0.0.0/8"]): only from these is
    X-Forwarded-For believed, for the rate limit's client address; from anyone else it is ignored."""

    max_body_bytes: int = 64 * 1024
    """Largest request body, sent with Content-Length or chunked; larger ones are refused with 413 unread."""

    body_timeout_s: float = 30.0
    """A request body not complete this long after its head is refused with 408 and the connection closed."""

    header_timeout_s: float = 10.0
    """A request head (request line and headers) not complete this long after the connection opened, or after
    the previous response on it, is refused with 408 and the connection closed."""

    max_header_bytes: int = 64 * 1024
    """Largest request head; larger ones are refused with 431 and the connection closed."""

    max_connections: int = 1000
    """Open connections and requests in progress per server process; beyond them uvicorn answers 503."""

    graphql_max_depth: int = 10
    """Deepest nesting of fields in a GraphQL query."""

    graphql_max_aliases: int = 10
    """Aliased fields in one GraphQL document (each aliased generate is one more generation request)."""

    graphql_max_operations: int = 5
    """Operation definitions in one GraphQL document; batched requests (a JSON list) are refused."""

    graphql_max_tokens: int = 2000
    """Lexical tokens in one GraphQL document: bounds the work of parsing and validating it."""

    x_bearer_token: SecretStr | None = None
    """X API v2 bearer token (the X API is paid); read only from the environment, never stored."""

    mastodon_token: SecretStr | None = None
    """Access token for Mastodon instances that do not serve public posts without one."""

    sync_retries: int = 5
    """Tries per request of a live sync on 5xx answers and network errors (exponential backoff)."""

    sync_backoff_s: float = 1.0
    """First backoff of a live sync; doubled each try, with jitter, at most 60 s."""

    import_max_line_bytes: int = 1_000_000
    """Longest line of a CSV or JSON Lines file, and largest post record of an X archive's tweets.js. A post
    is at most 25,000 characters; a longer line is a broken or hostile file. Bounds the memory of an import."""

    import_max_archive_file_mb: int = 4096
    """Largest file read from an X archive (a ZIP entry once uncompressed, or a file of its folder)."""

    import_max_zip_ratio: int = 100
    """How many times its compressed size a ZIP entry may expand once it is larger than 16 MB (X's JSON
    compresses about 10 times; a ZIP bomb 1,000 times)."""

    import_max_archive_files: int = 200_000
    """Entries of an X archive ZIP (media included), or files in its data/ folder."""

    import_max_bad_records: int = 100_000
    """Bad records an import with --skip-bad lists before giving up on the file."""

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'tweetforge.db'}"

    @property
    def datasets_location(self) -> Path | str:
        """The data home's datasets directory, or the artifacts URL's datasets prefix."""
        return self.artifacts.rstrip("/") + "/datasets" if self.artifacts else self.resolved_home / "datasets"

    @property
    def models_location(self) -> Path | str:
        return self.artifacts.rstrip("/") + "/models" if self.artifacts else self.resolved_home / "models"


TOKEN_SETTINGS = ("TWEETFORGE_ADMIN_TOKEN", "TWEETFORGE_X_BEARER_TOKEN", "TWEETFORGE_MASTODON_TOKEN")


def _refuse_a_readable_env_file() -> None:
    """A .env holding a token must be readable by its owner alone (chmod 600), as ssh insists for its keys."""
    from tweetforge.errors import TweetforgeError

    env = Path(".env")
    if not env.is_file():
        return
    mode = env.stat().st_mode & 0o777
    if mode & 0o077 and any(name in env.read_text(errors="replace") for name in TOKEN_SETTINGS):
        raise TweetforgeError(f"{env.resolve()} holds a token and other users can read it (mode {mode:o}): chmod 600 {env}")


@lru_cache
def get_settings() -> Settings:
    _refuse_a_readable_env_file()
    return Settings()

"""Settings: one object read from the environment, passed to everything that needs it.

The variable names are a contract with users' configs: `ACEDATACLOUD_API_TOKEN` and
`ACEDATACLOUD_API_BASE_URL` are shared with the vendor's own server so existing configs keep
working; everything of ours is `FLUX_MCP_*`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flux_mcp.domain.tasks import PreviewChoice
from flux_mcp.domain.team import Budget, ServerToken, parse_budget, server_tokens

DEFAULT_BASE_URL = "https://api.acedata.cloud"
DEFAULT_PLATFORM_URL = "https://platform.acedata.cloud"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
AuthMode = Literal["tokens", "passthrough", "oauth", "none"]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
MIN_CALLBACK_KEY_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUX_MCP_", extra="ignore", populate_by_name=True)

    api_token: SecretStr | None = Field(
        None,
        validation_alias="ACEDATACLOUD_API_TOKEN",
        description="AceDataCloud API token; the server starts without it but every call then fails clearly.",
    )
    api_base_url: str = Field(
        DEFAULT_BASE_URL,
        validation_alias="ACEDATACLOUD_API_BASE_URL",
        description="Base URL of the Flux REST API.",
    )
    platform_base_url: str = Field(
        DEFAULT_PLATFORM_URL,
        validation_alias="ACEDATACLOUD_PLATFORM_BASE_URL",
        description="Base URL of the AceDataCloud platform: file uploads (edit inputs) and balances.",
    )
    input_dirs: str | None = Field(
        None,
        description=(
            "Folders local edit inputs may come from, separated by os.pathsep (: or ; on Windows), besides "
            "the client's MCP roots; unset = the home folder. Local files are never read over HTTP."
        ),
    )
    wait_seconds: float = Field(
        45.0,
        ge=0,
        le=3600,
        description=(
            "Longest a tool call waits for images before it returns `pending` with a task id for get_task; "
            "keep it under your host's tool-call timeout."
        ),
    )
    log_level: LogLevel = Field(
        "INFO",
        description="Level of the log, which goes to stderr only: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    poll_min_seconds: float = Field(2.0, gt=0, description="First look at a task after this many seconds.")
    poll_max_seconds: float = Field(15.0, gt=0, description="Longest pause between two looks at a task.")
    http_timeout_seconds: float = Field(30.0, gt=0, description="Timeout of one upstream HTTP request.")
    max_concurrency: int = Field(
        16, ge=1, le=1024, description="Most upstream HTTP requests in flight at once; more wait their turn."
    )
    max_retries: int = Field(
        3, ge=0, le=10, description="Retries of a request the upstream provably refused."
    )
    retry_max_seconds: float = Field(20.0, ge=0, description="Longest single pause before a retry.")
    preview_size: int = Field(
        512, ge=0, le=2048, description="Longest side of inline previews in pixels; 0 = none."
    )
    preview: PreviewChoice = Field(
        "default", description="Inline previews when a call does not choose: default, small or none."
    )
    resource_links: bool = Field(
        True, description="Put a resource link to each full-size image in results (off for langchain)."
    )
    save: bool | None = Field(
        None, description="Save images to FLUX_MCP_OUTPUT_DIR; unset = yes on stdio, no over HTTP."
    )
    output_dir: Path | None = Field(
        None, description="Folder for saved images; unset = flux-mcp in Pictures (or home)."
    )
    db: Path | None = Field(
        None,
        description="History database file (or a postgresql:// URL); unset = the user's data folder.",
    )
    database_url: SecretStr | None = Field(
        None,
        description="postgresql://…: the history in PostgreSQL, shared by replicas (the postgres extra).",
    )
    callback_key: SecretStr | None = Field(
        None,
        description=(
            "Key that signs callback URLs so that any replica can verify them (at least 32 characters); "
            "required with PostgreSQL and FLUX_MCP_PUBLIC_URL; unset = a random key per process."
        ),
    )
    max_download_mb: float = Field(50.0, gt=0, description="Largest image download accepted, in MB.")
    max_video_download_mb: float = Field(
        300.0, gt=0, description="Largest video (MP4) download accepted, in MB (generate_video results)."
    )
    download_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one image download.")
    allow_private_downloads: bool = Field(
        False,
        description="Let image downloads reach loopback and private-network addresses (off: public only).",
    )
    host: str = Field("127.0.0.1", description="HTTP bind address (serve --transport http).")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    stateless: bool = Field(False, description="Serve HTTP without server-side sessions (for replicas).")
    max_sessions_per_client: int = Field(
        32,
        ge=1,
        le=10_000,
        description=(
            "Most open HTTP sessions one person's credential (pass-through token, OAuth subject) may hold; "
            "a new one past it ends that credential's least recently used session."
        ),
    )
    auth: AuthMode | None = Field(
        None,
        description=(
            "HTTP auth: tokens, passthrough, oauth or none; unset = tokens if FLUX_MCP_AUTH_TOKENS is set, "
            "else none."
        ),
    )
    auth_tokens: SecretStr | None = Field(
        None,
        description=(
            "Comma-separated bearer tokens HTTP clients must send, each optionally named: "
            "alice:tok-1,bob:tok-2."
        ),
    )
    public_url: str | None = Field(
        None,
        description="URL at which the upstream reaches this server; enables callbacks instead of polling.",
    )
    oauth_issuer: str | None = Field(
        None, description="FLUX_MCP_AUTH=oauth: issuer URL of the authorization server (RFC 8414 / OIDC)."
    )
    oauth_audience: str | None = Field(
        None, description="Audience access tokens must carry (this server's URL); unset = the public URL."
    )
    oauth_scopes: str | None = Field(None, description="Scopes every access token needs, space-separated.")
    oauth_introspection_url: str | None = Field(
        None, description="Check tokens by RFC 7662 introspection at this URL instead of as JWTs."
    )
    oauth_client_id: str | None = Field(None, description="Client ID this server introspects with.")
    oauth_client_secret: SecretStr | None = Field(
        None, description="The client secret of FLUX_MCP_OAUTH_CLIENT_ID."
    )
    oauth_allowed: str | None = Field(
        None, description="Comma-separated subjects or verified emails who may use it; unset = anyone."
    )
    # --- metrics (HTTP only): /metrics in the Prometheus text format ---
    metrics: bool = Field(
        False,
        description=(
            "Serve /metrics (Prometheus text format) over HTTP: loopback clients only, unless "
            "FLUX_MCP_METRICS_TOKEN is set."
        ),
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token /metrics requires; with it set, /metrics answers any client that has it.",
    )

    # Local edit inputs (issue 24)
    allow_hard_links: bool = Field(
        False,
        description=(
            "Read a local edit input that has more than one name (hard links). Off: such a file is refused, "
            "since its other name may lie outside the allowed folders."
        ),
    )

    # --- running for a team (issue 26): sessions of a shared token, budgets ----------------------
    max_sessions_per_team_token: int = Field(
        512,
        ge=1,
        le=10_000,
        description=(
            "Most open HTTP sessions one server token (FLUX_MCP_AUTH_TOKENS, shared by a team) may hold; "
            "a new one past it ends that token's least recently used session."
        ),
    )
    budget_per_person: str | None = Field(
        None,
        description=(
            "Most upstream credits one person may spend: AMOUNT/day or AMOUNT/month (UTC), e.g. 50/day; "
            "on stdio, your own cap. Unset = no limit."
        ),
    )
    budget_total: str | None = Field(
        None,
        description="Most upstream credits the whole server may spend: AMOUNT/day or AMOUNT/month (UTC).",
    )

    # --- MCP Tasks (issue 25) ---
    tasks: bool = Field(
        True,
        description=(
            "Answer image and video calls with an MCP task (a handle the host polls) when the client "
            "declares Tasks support; false = every client waits and resumes with get_task as without Tasks."
        ),
    )

    def with_changes(self, **changes: Any) -> Self:
        """A copy with `changes` (by field name), validated like settings read from the environment.

        Use it instead of `model_copy(update=...)`, which validates nothing (it would take port=99999).
        Raises pydantic's ValidationError naming the field and the rule it breaks.
        """
        fields = type(self).model_fields
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ValueError(f"no such setting: {', '.join(unknown)}")
        # Field by field rather than model_dump: secrets stay SecretStr and nothing is left out.
        current = {name: getattr(self, name) for name in fields}
        return self.model_validate({**current, **changes})

    def auth_mode(self) -> AuthMode:
        if self.auth is not None:
            return self.auth
        return "tokens" if self.client_tokens() else "none"

    def client_tokens(self) -> list[str]:
        """The server tokens' secrets (their names left off)."""
        return [token.secret.get_secret_value() for token in self.server_tokens()]

    def server_tokens(self) -> list[ServerToken]:
        """FLUX_MCP_AUTH_TOKENS, each with the name it is known by (`domain.team.server_tokens`)."""
        return server_tokens(self.auth_tokens.get_secret_value() if self.auth_tokens is not None else "")

    def person_budget(self) -> Budget | None:
        return parse_budget(self.budget_per_person) if self.budget_per_person else None

    def total_budget(self) -> Budget | None:
        return parse_budget(self.budget_total) if self.budget_total else None

    def oauth_audience_url(self) -> str | None:
        """The audience tokens must be issued for, which is also this resource's RFC 9728 identifier."""
        return self.oauth_audience or self.public_url

    def oauth_required_scopes(self) -> list[str]:
        return (self.oauth_scopes or "").split()

    def oauth_allowed_people(self) -> frozenset[str]:
        """Subjects as given, emails lower-cased; empty = every valid token."""
        entries = (entry.strip() for entry in (self.oauth_allowed or "").split(","))
        return frozenset(entry.lower() if "@" in entry else entry for entry in entries if entry)

    def saves_images(self) -> bool:
        return True if self.save is None else self.save

    def image_folder(self) -> Path:
        return (self.output_dir or default_output_dir()).expanduser()

    def history_path(self) -> Path:
        return (self.db or default_data_dir() / "history.db").expanduser()

    def history_url(self) -> str | None:
        """The PostgreSQL history's URL (a secret: it may hold a password), or None for the SQLite file."""
        url = self.database_url.get_secret_value().strip() if self.database_url is not None else ""
        return url or None

    def history_problem(self) -> str | None:
        """What is wrong with the history settings, naming no secret (pydantic would echo the value)."""
        url = self.history_url()
        if url is not None and not url.strip().startswith(POSTGRES_SCHEMES):
            return "FLUX_MCP_DATABASE_URL must start with postgresql:// (or postgres://)."
        key = self.callback_key.get_secret_value() if self.callback_key is not None else None
        if key is not None and len(key.strip()) < MIN_CALLBACK_KEY_LENGTH:
            return (
                f"FLUX_MCP_CALLBACK_KEY must be at least {MIN_CALLBACK_KEY_LENGTH} characters "
                "(for example the output of: openssl rand -hex 32)."
            )
        if url is not None and self.public_url and key is None:
            return (
                "FLUX_MCP_CALLBACK_KEY is required with a PostgreSQL history and FLUX_MCP_PUBLIC_URL: every "
                "replica must verify the callback URLs the others hand out. Give all replicas the same key "
                "(for example the output of: openssl rand -hex 32)."
            )
        return None

    def callback_secret(self) -> bytes | None:
        """The shared key callback URLs are signed with, or None (then each process draws its own)."""
        if self.callback_key is None or not self.callback_key.get_secret_value().strip():
            return None
        return self.callback_key.get_secret_value().strip().encode()

    def input_folders(self) -> list[Path]:
        """Where local edit inputs may be read from (besides the client's roots)."""
        if self.input_dirs is None:
            return [Path.home()]
        return [Path(part.strip()).expanduser() for part in self.input_dirs.split(os.pathsep) if part.strip()]

    @model_validator(mode="before")
    @classmethod
    def _database_url_in_db(cls, values: Any) -> Any:
        """FLUX_MCP_DB=postgresql://… means the same as FLUX_MCP_DATABASE_URL."""
        if isinstance(values, dict):
            db = values.get("db")
            if isinstance(db, str) and db.strip().startswith(POSTGRES_SCHEMES):  # not a file path
                values = {**values, "db": None}
                if values.get("database_url") is None:
                    values["database_url"] = db.strip()
        return values

    @field_validator("api_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _tokens_named_or_unset(cls, value: object) -> object:
        """Blank is unset; set but naming no token (",,,") is a mistake, not "no auth"."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str):
            return value
        if not text.strip():
            return None
        if not server_tokens(text):
            raise ValueError(
                "FLUX_MCP_AUTH_TOKENS is set but names no token: give token or name:token, comma-separated"
            )
        return value

    @field_validator("api_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("ACEDATACLOUD_API_BASE_URL must start with http:// or https://")
        return value

    @field_validator("platform_base_url")
    @classmethod
    def _platform_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("ACEDATACLOUD_PLATFORM_BASE_URL must start with http:// or https://")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("FLUX_MCP_PUBLIC_URL must start with http:// or https://")
        return value

    @field_validator("oauth_issuer", "oauth_audience", "oauth_introspection_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("auth", mode="before")
    @classmethod
    def _lower_auth(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or None
        return value

    @field_validator("budget_per_person", "budget_total", mode="before")
    @classmethod
    def _budget(cls, value: object) -> object:
        """Blank is unset; anything else must read as a budget (a ValueError saying the form otherwise)."""
        if isinstance(value, str):
            if not value.strip():
                return None
            parse_budget(value)
            return value.strip()
        return value

    @field_validator("preview", mode="before")
    @classmethod
    def _lower_preview(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def default_output_dir() -> Path:
    """`flux-mcp` in the user's Pictures folder where one exists, else in the home folder.

    Never the working directory: desktop hosts start servers inside their own app folder.
    """
    home = Path.home()
    pictures = home / "Pictures"
    return (pictures if pictures.is_dir() else home) / "flux-mcp"


def default_data_dir() -> Path:
    """The per-user data folder of this platform."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "flux-mcp"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "flux-mcp"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "flux-mcp"

"""Server settings, from HE_AGG_* environment variables or a TOML file (HE_AGG_CONFIG)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HE_AGG_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8750
    data_dir: Path = Path("./he-agg-data")
    database: str | None = Field(
        default=None,
        description="SQLAlchemy URL (sqlite:///… or postgresql://…); default: SQLite in data_dir",
    )
    admin_keys: list[str] = Field(default_factory=list, description="hex Ed25519 admin keys")
    max_skew_seconds: int = 300
    tick_seconds: float = 0.5
    metrics_open: bool = False
    log_level: str = "INFO"
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain for https")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    max_inflight_upload_bytes: int = Field(
        default=1 << 30, ge=1, description="uploads admitted at once, in declared bytes"
    )
    max_inflight_uploads: int = Field(default=64, ge=1, description="uploads admitted at once")
    body_chunk_seconds: float = Field(
        default=30.0, gt=0, description="an upload whose body stalls this long gets 408"
    )
    min_rate: float = Field(
        default=16 * 1024, ge=0, description="bytes/s an upload body must average (408 below)"
    )
    min_free_bytes: int = Field(
        default=1 << 30, ge=0, description="/ready answers 503 below this much free disk"
    )
    retry_after_seconds: float = Field(
        default=2.0, gt=0, description="what a 503 for a busy server tells clients to wait"
    )
    receive_slots: int = Field(
        default=8,
        ge=1,
        description="upload bodies read at once, a chunk at a time in turn; the other admitted "
        "uploads wait, held back by TCP flow control, so that the event loop's turns stay short",
    )
    turn_seconds: float = Field(
        default=0.25,
        gt=0,
        description="an upload body with no data ready this long gives its receive slot "
        "back and queues again (a slow client cannot hold one)",
    )
    validation_slots: int = Field(
        default_factory=lambda: os.cpu_count() or 2,
        ge=1,
        description="uploads validated at once (each holds one window of words; default: cores)",
    )
    collect_seconds: float = Field(
        default=600.0, gt=0, description="how often orphan blobs and scratch files are collected"
    )
    collect_grace: float = Field(
        default=3600.0, ge=0, description="orphans younger than this many seconds are kept"
    )
    max_admin_body_bytes: int = Field(
        default=64 << 20, ge=1, description="the largest body an administrator's request may carry"
    )
    blob_dir: Path | None = Field(
        default=None,
        description="where uploads and aggregates are kept (default: data_dir/blobs); "
        "replicas share one, as they share one PostgreSQL database",
    )
    replica: str = Field(
        default="main",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="this process's name among replicas sharing blob_dir (its scratch folder)",
    )
    partial_seconds: float | None = Field(
        default=None,
        gt=0,
        description="replicas: how often each writes its running sums into blob_dir for the "
        "closing replica to add (tree aggregation); unset: never (a single server)",
    )
    insecure_http: bool = Field(
        default=False, description="allow plain http on an address other than loopback"
    )

    @property
    def blob_root(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        """The base URL the server is reached at (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return f"sqlite:///{(self.data_dir / 'he-agg.sqlite3').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("HE_AGG_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

"""Server settings, from HE_AGG_* environment variables or a TOML file (HE_AGG_CONFIG)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
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

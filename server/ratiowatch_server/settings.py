"""Service configuration, read from flags or ``RATIOWATCH_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8765


class ServerSettings(BaseSettings):
    """Everything the service needs to start; built once by the CLI (or a test) and passed down."""

    model_config = SettingsConfigDict(env_prefix="RATIOWATCH_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".ratiowatch")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 1
    max_body_bytes: int = 32 * 1024 * 1024
    dashboard_refresh_ms: int = 2000

    def resolved_database_url(self) -> str:
        """The configured URL, or an SQLite file under ``home`` (created on demand)."""
        if self.database_url:
            return self.database_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.home / 'ratiowatch.db'}"

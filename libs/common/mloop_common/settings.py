"""Typed settings shared by every service (env prefix ``MLOOP_``, nested groups with ``__``).

Each service adds its own group with its own prefix (``MLOOP_INGEST_`` ...) in its config.py.
Settings are read once in the composition root and passed down; handlers never read the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_PORTS = {"ingest": 8001, "trainer": 8002, "validator": 8003, "registry": 8004, "serving": 8005, "drift": 8006}


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(3, ge=1)


class CommonSettings(BaseSettings):
    """What every service needs: where the broker, the artifacts and the other services are."""

    model_config = SettingsConfigDict(env_prefix="MLOOP_", env_nested_delimiter="__", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    kafka: KafkaSettings = KafkaSettings()
    artifacts_root: Path = Path(".run/artifacts")
    database_host: str = "127.0.0.1"
    database_port: int = 55432
    database_name: str = "mloop"
    registry_url: str = "http://127.0.0.1:8004"
    code_version: str | None = None

    def database_url(self, service: str) -> str:
        """The local default: one role and one schema per service (deploy/local/postgres.sh)."""
        return (
            f"postgresql+asyncpg://{service}:{service}@{self.database_host}:{self.database_port}/{self.database_name}"
        )


class ServiceSettings(BaseSettings):
    """Per-service base: HTTP bind address and an optional full database URL override."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    database_url: str | None = None
    database_schema: str | None = None


def build_settings(
    service: str, settings_class: type[ServiceSettings], *, uses_database: bool = True
) -> tuple[CommonSettings, ServiceSettings]:
    """Read the shared and the service's settings once, refusing unsafe defaults in production."""
    common = CommonSettings()
    own = settings_class(_env_prefix=f"MLOOP_{service.upper()}_")  # type: ignore[call-arg]
    if not own.port:
        own.port = SERVICE_PORTS[service]
    if not own.database_schema:
        own.database_schema = service
    if own.database_url is None:
        own.database_url = common.database_url(service)
    if uses_database and common.environment == "production" and f"{service}:{service}@" in own.database_url:
        raise ValueError(
            f"MLOOP_{service.upper()}_DATABASE_URL must be set in production "
            "(the local default uses well-known passwords)"
        )
    return common, own

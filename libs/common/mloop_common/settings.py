"""Typed settings: what every service shares (env prefix ``MLOOP_``) and each service's own group.

A service's settings class (its config.py) subclasses ``ServiceSettings`` with its own prefix
(``MLOOP_INGEST_`` ...) and carries the shared settings in ``.common``. Settings are read once,
passed to ``create_app(settings)`` and from there to the composition root; handlers never read
the environment.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, DEVELOPMENT_SECRET, MIN_SECRET_CHARS, service_key

SERVICE_PORTS = {"ingest": 8001, "trainer": 8002, "validator": 8003, "registry": 8004, "serving": 8005, "drift": 8006}
UI_PORT = 8007  # the web UI (services/ui): not one of the pipeline's services, no database and no consumer group


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(3, ge=1)
    # Largest event (encoded key + value + headers) a service creates: bigger ones are refused at creation.
    max_message_bytes: int = Field(900_000, ge=1024)
    # Of the topics the services create. Unset: 1 in development, else 3 (and min.insync.replicas 2), so a
    # production cluster never gets unreplicated topics by accident; a single-broker deployment sets 1.
    replication_factor: int | None = Field(None, ge=1)
    min_insync_replicas: int | None = Field(None, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # the CA that signed the brokers' certificates (default: the system's)
    ssl_certfile: Path | None = None  # a client certificate, for brokers that ask for one (mTLS)
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Self:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"MLOOP_KAFKA__SECURITY_PROTOCOL={self.security_protocol} needs MLOOP_KAFKA__SASL_MECHANISM, "
                "MLOOP_KAFKA__SASL_USERNAME and MLOOP_KAFKA__SASL_PASSWORD"
            )
        return self

    def client_security(self) -> dict[str, Any]:
        """aiokafka's connection options for this protocol (SASL credentials, TLS context)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None  # checked above
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        if self.security_protocol.endswith("SSL"):
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            options["ssl_context"] = context
        return options


class AuthSettings(BaseModel):
    """API keys (``mloop_common.auth``). The defaults work only in development; elsewhere services refuse them."""

    # Derives each service's own key: the same value on every service of a deployment, kept secret.
    secret: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    # Accepted by every service with the admin role: the key that creates the others.
    admin_key: SecretStr = SecretStr(DEVELOPMENT_ADMIN_KEY)
    # Prediction and feedback without a key (an application network that is trusted as a whole).
    open_predict: bool = False
    # How long a service trusts what the registry said about a stored key (a revocation's delay elsewhere).
    cache_seconds: float = Field(30.0, ge=0, le=3600)


class S3Settings(BaseModel):
    """S3-compatible object storage for the artifacts (``MLOOP_S3__...``), used when ``MLOOP_ARTIFACTS_ROOT`` is
    an ``s3://bucket/prefix`` URL. What is unset here comes from the standard ``AWS_*`` variables
    (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``...) or from instance or pod credentials."""

    endpoint_url: str | None = None  # MinIO, Ceph, R2... (default: AWS's endpoint for the region)
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    allow_http: bool = False  # plain HTTP to the endpoint: only for a local or otherwise trusted network
    virtual_hosted_style: bool = False  # bucket.endpoint/key instead of endpoint/bucket/key
    timeout_seconds: float = Field(120.0, gt=0)  # of one request (a part of a multipart upload included)
    max_retries: int = Field(5, ge=0)
    retry_seconds: float = Field(60.0, gt=0)  # retries of one request stop after this long

    @model_validator(mode="after")
    def _both_keys(self) -> Self:
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("MLOOP_S3__ACCESS_KEY_ID and MLOOP_S3__SECRET_ACCESS_KEY go together")
        return self


class CommonSettings(BaseSettings):
    """What every service needs: where the broker, the artifacts and the other services are."""

    model_config = SettingsConfigDict(env_prefix="MLOOP_", env_nested_delimiter="__", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    kafka: KafkaSettings = KafkaSettings()
    # The artifact store: a folder (shared by every service) or s3://bucket/prefix (with ``s3`` below).
    artifacts_root: str = ".run/artifacts"
    s3: S3Settings = S3Settings()
    database_host: str = "127.0.0.1"
    database_port: int = 55432
    database_name: str = "mloop"
    registry_url: str = "http://127.0.0.1:8004"
    code_version: str | None = None
    auth: AuthSettings = AuthSettings()
    # How long a consumer remembers an event it handled. Longer than the topics' retention (Kafka's
    # retention.ms, 7 days by default), or a record redelivered after that would be acted on twice.
    inbox_retention_days: float = Field(30.0, gt=0)
    # Host headers the services answer to (``*`` any, ``*.example.org`` a domain); others get 400. The default
    # fits services reached on this machine only; containers add their service names (docker-compose.yml).
    allowed_hosts: list[str] = ["localhost", "127.0.0.1", "::1"]
    # Requests one process handles at once; more are answered 429 at once (never queued). Health, readiness
    # and metrics are not counted.
    max_in_flight: int = Field(512, ge=1)

    @field_validator("artifacts_root")
    @classmethod
    def _artifacts_location(cls, value: str) -> str:
        scheme = urlsplit(value).scheme if "://" in value else ""
        if scheme == "s3" and not urlsplit(value).netloc:
            raise ValueError(f"MLOOP_ARTIFACTS_ROOT={value!r} names no bucket (s3://bucket/prefix)")
        if scheme not in ("", "file", "s3"):
            raise ValueError(f"MLOOP_ARTIFACTS_ROOT={value!r}: a folder or s3://bucket/prefix")
        return value

    @model_validator(mode="after")
    def _environment_defaults(self) -> Self:
        if self.kafka.replication_factor is None:
            self.kafka.replication_factor = 1 if self.environment == "development" else 3
        if self.kafka.min_insync_replicas is None and self.kafka.replication_factor > 1:
            self.kafka.min_insync_replicas = min(2, self.kafka.replication_factor)
        if self.environment == "development":
            return self
        for name, value, default in (
            ("SECRET", self.auth.secret, DEVELOPMENT_SECRET),
            ("ADMIN_KEY", self.auth.admin_key, DEVELOPMENT_ADMIN_KEY),
        ):
            if value.get_secret_value() == default or len(value.get_secret_value()) < MIN_SECRET_CHARS:
                raise ValueError(
                    f"MLOOP_AUTH__{name} must be set to a value of its own, at least {MIN_SECRET_CHARS} characters, "
                    f"when MLOOP_ENVIRONMENT={self.environment} (the default is public)"
                )
        return self

    def database_url(self, service: str) -> str:
        """The local default: one role and one schema per service (deploy/local/postgres.sh)."""
        return (
            f"postgresql+asyncpg://{service}:{service}@{self.database_host}:{self.database_port}/{self.database_name}"
        )


class ServiceSettings(BaseSettings):
    """Per-service base: HTTP bind address, database, and the shared settings in ``common``.

    Subclasses set ``service`` and their env prefix; unset ports, schemas and database URLs get
    the local defaults, and the local default passwords are refused in production.
    """

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    service: ClassVar[str]
    uses_database: ClassVar[bool] = True

    host: str = "127.0.0.1"
    port: int = 0
    database_url: str | None = None
    database_schema: str | None = None
    database_pool_size: int = Field(5, ge=1, le=100)
    # How long a request waits for a free connection before it is answered 503 (pool exhausted), not hung.
    database_pool_timeout_seconds: float = Field(5.0, gt=0, le=300)
    common: CommonSettings = Field(default_factory=CommonSettings)

    @property
    def own_key(self) -> str:
        """The key this service presents to the others (derived from ``MLOOP_AUTH__SECRET``)."""
        return service_key(self.common.auth.secret.get_secret_value(), self.service)

    @model_validator(mode="after")
    def _local_defaults(self) -> Self:
        service = self.service
        self.port = self.port or SERVICE_PORTS[service]
        self.database_schema = self.database_schema or service
        self.database_url = self.database_url or self.common.database_url(service)
        if self.uses_database and self.common.environment != "development":
            password = urlsplit(self.database_url).password
            if not password or f"{service}:{service}@" in self.database_url:
                raise ValueError(
                    f"MLOOP_{service.upper()}_DATABASE_URL must be set, with a password, outside development "
                    "(the local default uses well-known passwords)"
                )
        return self


def service_config(service: str) -> SettingsConfigDict:
    """The settings config of one service: env prefix ``MLOOP_<SERVICE>_``, nested groups with ``__``."""
    return SettingsConfigDict(env_prefix=f"MLOOP_{service.upper()}_", env_nested_delimiter="__", extra="ignore")

from typing import ClassVar

from pydantic import Field

from mloop_common.settings import UI_PORT, ServiceSettings, service_config


class UiSettings(ServiceSettings):
    """Web UI settings (env prefix MLOOP_UI_). It keeps no tables: it reads the services' APIs with the key of
    whoever signed in, and the event topics for the pipeline page."""

    model_config = service_config("ui")
    service: ClassVar[str] = "ui"
    uses_database: ClassVar[bool] = False

    port: int = UI_PORT
    ingest_url: str = "http://127.0.0.1:8001"
    trainer_url: str = "http://127.0.0.1:8002"
    validator_url: str = "http://127.0.0.1:8003"
    serving_url: str = "http://127.0.0.1:8005"
    drift_url: str = "http://127.0.0.1:8006"
    # A sign-in lasts this long (then the key is asked for again); sessions live in this process's memory.
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    max_sessions: int = Field(10_000, ge=1)
    # Send the session cookie over HTTPS only: set when the UI is reached through TLS (a proxy in front).
    secure_cookies: bool = False
    # Events the pipeline page can show (the newest, across every topic).
    pipeline_events: int = Field(2_000, ge=10, le=100_000)
    # Drift windows whose full reports the drift page reads (each is one request to drift).
    drift_windows: int = Field(30, ge=1, le=200)

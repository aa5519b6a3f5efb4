import pytest

from mloop_common.telemetry import service_resource


def test_the_service_is_named_after_mloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service_resource("drift").attributes["service.name"] == "mloop-drift"


def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "drift-eu-1")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    resource = service_resource("drift")
    assert resource.attributes["service.name"] == "drift-eu-1"
    assert resource.attributes["deployment.environment"] == "prod"


def test_resource_attributes_may_name_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=scoring,team=ml")
    assert service_resource("serving").attributes["service.name"] == "scoring"

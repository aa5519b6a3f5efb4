"""The Prometheus files in deploy/prometheus: valid, every alert rule unit-tested with promtool, and every
metric a rule reads is one mloop exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "mloop.rules.yml"
SOURCES = [*REPO.glob("libs/*/mloop_*/**/*.py"), *REPO.glob("services/*/mloop_*/**/*.py")]
# Series a histogram or counter adds to the name it is declared with.
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def promtool_run(promtool: Path, *args: str) -> str:
    done = subprocess.run([str(promtool), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rules() -> list[dict]:  # type: ignore[type-arg]
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_config_and_rules_are_valid(promtool: Path) -> None:
    out = promtool_run(promtool, "check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_every_alert_rule_passes_its_unit_tests(promtool: Path) -> None:
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "tests").glob("*.test.yml"))
    promtool_run(promtool, "test", "rules", *tests)


def test_every_alert_rule_has_a_unit_test() -> None:
    tested = set()
    for path in (PROMETHEUS / "tests").glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {check["alertname"] for check in case.get("alert_rule_test", []) if check.get("exp_alerts")}
    untested = {rule["alert"] for rule in rules()} - tested
    assert not untested, f"rules without a test that makes them fire: {sorted(untested)}"


def test_rules_read_only_metrics_mloop_exports() -> None:
    declared = set()
    for source in SOURCES:
        declared |= set(re.findall(r'"(mloop_[a-z0-9_]+)"', source.read_text()))
    read = set()
    for rule in rules():
        read |= set(re.findall(r"\b(mloop_[a-z0-9_]+)", rule["expr"]))
    unknown = {
        name for name in read if name not in declared and not any(name.removesuffix(s) in declared for s in SUFFIXES)
    }
    assert not unknown, f"rules read metrics no service declares: {sorted(unknown)}"

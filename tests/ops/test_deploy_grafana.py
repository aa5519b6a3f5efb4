"""The Grafana dashboards in deploy/grafana: JSON with what Grafana needs to load them (uid, title, panels with
queries on a provisioned datasource), and every metric a query reads is one mloop declares."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SOURCES = [*REPO.glob("libs/*/mloop_*/**/*.py"), *REPO.glob("services/*/mloop_*/**/*.py")]
# Series a histogram or counter adds to the name it is declared with (as in test_prometheus.py).
SUFFIXES = ("_bucket", "_count", "_sum", "_created")
# Variables Grafana itself defines.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def queries(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def declared_metrics() -> set[str]:
    declared: set[str] = set()
    for source in SOURCES:
        declared |= set(re.findall(r'"(mloop_[a-z0-9_]+)"', source.read_text()))
    return declared


def test_there_is_a_dashboard_per_concern() -> None:
    uids = {dashboard(path)["uid"] for path in DASHBOARDS}
    assert uids == {"mloop-serving", "mloop-pipeline", "mloop-drift", "mloop-models"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_has_what_grafana_needs(path: Path) -> None:
    board = dashboard(path)
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"]), board["uid"]
    assert board["title"] and board["panels"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "mloop.yml").read_text())["datasources"]
    uids = {source["uid"] for source in datasources if source["type"] == "prometheus"}
    variables = {variable["name"] for variable in board["templating"]["list"]} | BUILTIN_VARIABLES
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in board["panels"]:
        assert panel["title"] and panel["type"] and panel["targets"], panel.get("title")
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert panel["datasource"]["uid"] in uids
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= variables, f"{panel['title']}: undefined {sorted(used - variables)}"


def test_dashboards_have_distinct_uids() -> None:
    uids = [dashboard(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_read_only_metrics_mloop_exports(path: Path) -> None:
    declared = declared_metrics()
    read = {name for expr in queries(dashboard(path)) for name in re.findall(r"\b(mloop_[a-z0-9_]+)", expr)}
    read |= {
        name
        for variable in dashboard(path)["templating"]["list"]
        for name in re.findall(r"\b(mloop_[a-z0-9_]+)", variable["definition"])
    }
    assert read
    unknown = {
        name for name in read if name not in declared and not any(name.removesuffix(s) in declared for s in SUFFIXES)
    }
    assert not unknown, f"{path.name} reads metrics no service declares: {sorted(unknown)}"


def test_every_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, with the dashboard variables set as Grafana would."""
    values = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    exprs = [expr for path in DASHBOARDS for expr in queries(dashboard(path))]
    rules = [
        {"record": f"mloop:dashboard_query_{i}", "expr": re.sub(r"\$(\w+)", lambda m: values.get(m[1], ".*"), expr)}
        for i, expr in enumerate(exprs)
    ]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [str(promtool), "check", "rules", "queries.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout

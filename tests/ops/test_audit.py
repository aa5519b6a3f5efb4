"""tools/audit.py, the dependency audit's verdict (`make audit`): pip-audit's JSON reports, in the format pip-audit
documents and writes (`pip-audit -f json`: dependencies with name, version and vulns of id, fix_versions, aliases,
description; skipped ones with a skip_reason), read against the runtime packages exported from uv.lock."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

from tools.audit import decide, main, pinned_names

RUNTIME_REQUIREMENTS = """\
jinja2==3.1.2
    # via mloop-ui
python-multipart==0.0.6
    # via
    #   mloop-ingest
    #   mloop-ui
uvloop==0.23.0 ; platform_python_implementation != 'PyPy' and sys_platform != 'cygwin' and sys_platform != 'win32'
    # via uvicorn
"""
RUNTIME = pinned_names(RUNTIME_REQUIREMENTS)

JINJA2_FINDING = {
    "name": "jinja2",
    "version": "3.1.2",
    "vulns": [
        {
            "id": "GHSA-h5c8-rqwp-cp95",
            "fix_versions": ["3.1.3"],
            "aliases": ["CVE-2024-22195"],
            "description": "The xmlattr filter in affected versions of Jinja accepts keys containing spaces.",
        }
    ],
}
WERKZEUG_FINDING = {
    "name": "Werkzeug",
    "version": "2.2.2",
    "vulns": [
        {
            "id": "PYSEC-2023-58",
            "fix_versions": ["2.2.3"],
            "aliases": ["CVE-2023-25577"],
            "description": "Werkzeug's multipart form data parser will parse an unlimited number of parts.",
        }
    ],
}
CLEAN = [
    {"name": "python-multipart", "version": "0.0.6", "vulns": []},
    {"name": "uvloop", "version": "0.23.0", "vulns": []},
]


def report(*dependencies: dict[str, Any]) -> dict[str, Any]:
    return {"dependencies": list(dependencies), "fixes": []}


def test_runtime_packages_are_read_from_the_exported_requirements() -> None:
    assert RUNTIME == {"jinja2", "python-multipart", "uvloop"}


def test_a_fixable_finding_in_a_runtime_dependency_fails_naming_package_version_advisory_and_fix() -> None:
    verdict = decide(report(JINJA2_FINDING, *CLEAN), RUNTIME, "pypi")

    assert verdict.exit_code == 1
    text = "\n".join(verdict.lines)
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (CVE-2024-22195); fixed in 3.1.3" in text
    assert verdict.lines[-1].startswith("audit failed: 1 fixable vulnerabilities in runtime dependencies")


def test_a_finding_in_a_dev_only_dependency_is_reported_and_passes() -> None:
    verdict = decide(report(WERKZEUG_FINDING, *CLEAN), RUNTIME, "pypi")

    assert verdict.exit_code == 0
    text = "\n".join(verdict.lines)
    assert "dev-only dependencies (reported):" in text
    assert "werkzeug 2.2.2: PYSEC-2023-58 (CVE-2023-25577); fixed in 2.2.3" in text
    assert "audit failed" not in text


def test_a_runtime_finding_without_a_fixed_release_is_reported_and_passes() -> None:
    unfixed = {**JINJA2_FINDING, "vulns": [{**JINJA2_FINDING["vulns"][0], "fix_versions": []}]}

    verdict = decide(report(unfixed, *CLEAN), RUNTIME, "osv")

    assert verdict.exit_code == 0
    assert "  jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (CVE-2024-22195); no fixed release yet" in verdict.lines


def test_no_findings_passes_with_a_summary() -> None:
    verdict = decide(report({"name": "jinja2", "version": "3.1.6", "vulns": []}, *CLEAN), RUNTIME, "pypi")

    assert verdict == verdict.__class__(
        0,
        ["audit: 3 locked packages (3 runtime) checked against PyPI JSON API (pypi.org/pypi): 0 known vulnerabilities"],
    )


def test_an_unresolvable_service_skips_with_one_line() -> None:
    # The end of what pip-audit 2.9.0 writes when api.osv.dev has no DNS record (it writes no report).
    stderr = (
        "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev', port=443): Max retries exceeded "
        "with url: /v1/query (Caused by NameResolutionError(\"HTTPSConnection(host='api.osv.dev', port=443): Failed "
        "to resolve 'api.osv.dev' ([Errno -2] Name or service not known)\"))\n"
    )

    verdict = decide(None, RUNTIME, "osv", stderr)

    assert verdict.exit_code == 0
    assert verdict.lines == ["audit skipped: OSV (api.osv.dev) unreachable (cannot resolve api.osv.dev)"]


def test_a_pypi_json_api_answering_404_for_every_package_skips_rather_than_passes() -> None:
    # pip-audit itself prints "No known vulnerabilities found" and exits 0 here: nothing was checked.
    skipped = [
        {"name": name, "skip_reason": f"Dependency not found on PyPI and could not be audited: {name} ({version})"}
        for name, version in [("jinja2", "3.1.2"), ("python-multipart", "0.0.6"), ("uvloop", "0.23.0")]
    ]

    verdict = decide(report(*skipped), RUNTIME, "pypi")

    assert verdict.exit_code == 0
    assert verdict.lines == ["audit skipped: PyPI JSON API (pypi.org/pypi) unreachable (HTTP 404 for all 3 packages)"]


def test_a_service_error_from_pip_audit_skips_and_any_other_failure_fails() -> None:
    outage = decide(None, RUNTIME, "pypi", "ERROR:pip_audit._cli:Could not connect to PyPI's vulnerability feed\n")
    broken = decide(None, RUNTIME, "pypi", "ERROR:pip_audit._cli:invalid requirements input: .run/audit/all.txt\n")

    assert outage.lines == ["audit skipped: PyPI JSON API (pypi.org/pypi) unreachable (could not connect)"]
    assert outage.exit_code == 0
    assert broken.exit_code == 2
    assert broken.lines == [
        "audit failed: pip-audit wrote no report: ERROR:pip_audit._cli:invalid requirements input: .run/audit/all.txt"
    ]


def fake_pip_audit(tmp_path: Path, body: str) -> Path:
    """An executable standing in for pip-audit (the real one needs a reachable vulnerability service)."""
    path = tmp_path / "pip-audit"
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def audit(tmp_path: Path, pip_audit: Path, *extra: str) -> int:
    (tmp_path / "runtime.txt").write_text(RUNTIME_REQUIREMENTS)
    (tmp_path / "all.txt").write_text(RUNTIME_REQUIREMENTS + "werkzeug==2.2.2\n")
    return main(
        ["--pip-audit", str(pip_audit), "--runtime", str(tmp_path / "runtime.txt"), "--all", str(tmp_path / "all.txt")]
        + list(extra)
    )


def test_make_audit_exits_1_when_pip_audit_reports_a_runtime_finding(tmp_path: Path, capsys: Any) -> None:
    found = json.dumps(report(JINJA2_FINDING, WERKZEUG_FINDING, *CLEAN))
    pip_audit = fake_pip_audit(
        tmp_path, f"print({found!r}); print('Found 2 known vulnerabilities', file=sys.stderr); sys.exit(1)"
    )

    assert audit(tmp_path, pip_audit) == 1
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95" in capsys.readouterr().out


def test_make_audit_skips_when_pip_audit_gets_no_answer_in_time(tmp_path: Path, capsys: Any) -> None:
    pip_audit = fake_pip_audit(tmp_path, "time.sleep(30)")

    assert audit(tmp_path, pip_audit, "--timeout", "0.5") == 0
    assert capsys.readouterr().out == (
        "audit skipped: PyPI JSON API (pypi.org/pypi) unreachable (no answer within 0.5 s)\n"
    )

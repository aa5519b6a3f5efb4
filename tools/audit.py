"""Known vulnerabilities in the locked dependencies: runs pip-audit on the requirements exported from uv.lock and
decides what CI does with its JSON report (`make audit`, part of `make test`).

Policy ("known-exploitable"): a finding is a published advisory (PYSEC, GHSA, CVE... id) that pip-audit's
vulnerability service matches to the exact pinned version of a package. It fails the audit (exit 1) when the package
is a runtime dependency (what the services and the CLI install, `uv export --no-dev`) and the advisory names a fixed
release, since then bumping the pin clears it. Findings in dev-only packages (tests, lint, fuzzing) and runtime
findings that no release fixes yet are printed and do not fail. A vulnerability service that cannot be reached (no
route, timeout, 5xx, or a PyPI JSON API that answers 404 for every package) skips the audit with one line and exit 0:
CI reports it instead of failing on the network.

Only the standard library: it runs in pip-audit's own venv (.cache/), outside uv.lock.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Names printed in the messages, by pip-audit's `--vulnerability-service` choice.
SERVICES = {"pypi": "PyPI JSON API (pypi.org/pypi)", "osv": "OSV (api.osv.dev)"}
# pip-audit's skip reason when PyPI's JSON API answers 404 for a package (pip_audit/_service/pypi.py).
NOT_ON_PYPI = "Dependency not found on PyPI"

# What in pip-audit's stderr (its error lines, or the traceback of an uncaught requests error) says the service could
# not be reached, and how to say it in one line; first match wins.
UNREACHABLE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"no answer within (\S+ s)"), "no answer within {0}"),  # our own timeout, see run()
    (re.compile(r"Failed to resolve '([^']+)'"), "cannot resolve {0}"),
    (re.compile(r"(\d{3}) Server Error"), "HTTP {0}"),
    (re.compile(r"(\d{3}) Client Error"), "HTTP {0}"),
    (re.compile(r"Connection refused"), "connection refused"),
    (re.compile(r"(?:ConnectTimeout|ReadTimeout|timed out)"), "timed out"),
    (re.compile(r"SSLError|CERTIFICATE_VERIFY_FAILED"), "TLS error"),
    (re.compile(r"ProxyError"), "proxy error"),
    (re.compile(r"Could not connect to PyPI's vulnerability feed"), "could not connect"),
    (re.compile(r"PyPI is not redirecting properly"), "PyPI is not redirecting properly"),
    (re.compile(r"requests\.exceptions\.ConnectionError|Max retries exceeded"), "connection failed"),
    (re.compile(r"network may be blocking this service"), "network blocked"),
]


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]

    def line(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        fixed = f"fixed in {', '.join(self.fixed_in)}" if self.fixed_in else "no fixed release yet"
        return f"  {self.package} {self.version}: {self.advisory}{aliases}; {fixed}"


@dataclass(frozen=True)
class Verdict:
    exit_code: int  # 0 pass, report or skip; 1 runtime finding with a fix; 2 the audit itself broke
    lines: list[str]


def canonical(name: str) -> str:
    """A package name as PEP 503 normalises it (pip-audit reports names this way)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_names(requirements: str) -> set[str]:
    """The packages pinned (`name==version`) in a requirements file such as `uv export` writes."""
    names = set()
    for line in requirements.splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==", line)
        if match:
            names.add(canonical(match.group(1)))
    return names


def unreachable_reason(stderr: str) -> str | None:
    """Why the vulnerability service could not be reached, from pip-audit's stderr; None when it failed otherwise."""
    for pattern, reason in UNREACHABLE:
        match = pattern.search(stderr)
        if match:
            return reason.format(*match.groups())
    return None


def skipped(service: str, reason: str) -> Verdict:
    return Verdict(0, [f"audit skipped: {SERVICES.get(service, service)} unreachable ({reason})"])


def findings(report: dict[str, Any]) -> list[Finding]:
    return [
        Finding(
            package=canonical(dep["name"]),
            version=dep["version"],
            advisory=vuln["id"],
            aliases=tuple(sorted(vuln.get("aliases", []))),
            fixed_in=tuple(vuln.get("fix_versions", [])),
        )
        for dep in report.get("dependencies", [])
        if "skip_reason" not in dep
        for vuln in dep.get("vulns", [])
    ]


def section(title: str, items: Iterable[Finding]) -> list[str]:
    rows = [finding.line() for finding in items]
    return [title, *rows] if rows else []


def decide(report: dict[str, Any] | None, runtime: set[str], service: str, stderr: str = "") -> Verdict:
    """What CI does with pip-audit's JSON report (None when pip-audit wrote none) against the runtime packages."""
    if report is None:
        reason = unreachable_reason(stderr)
        if reason is not None:
            return skipped(service, reason)
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output")
        return Verdict(2, [f"audit failed: pip-audit wrote no report: {last.strip()}"])

    dependencies = report.get("dependencies", [])
    skips = [dep for dep in dependencies if "skip_reason" in dep]
    if dependencies and len(skips) == len(dependencies):
        # PyPI's JSON API answering 404 for every package is an API that is not there, not 165 unknown packages:
        # pip-audit itself would call this "No known vulnerabilities found".
        if all(dep["skip_reason"].startswith(NOT_ON_PYPI) for dep in skips):
            return skipped(service, f"HTTP 404 for all {len(skips)} packages")
        return skipped(service, f"none of {len(skips)} packages could be looked up: {skips[0]['skip_reason']}")

    found = findings(report)
    failing = [f for f in found if f.package in runtime and f.fixed_in]
    unfixed = [f for f in found if f.package in runtime and not f.fixed_in]
    dev_only = [f for f in found if f.package not in runtime]
    audited = {canonical(dep["name"]) for dep in dependencies if "skip_reason" not in dep}
    lines = [
        f"audit: {len(audited)} locked packages ({len(audited & runtime)} runtime) checked against "
        f"{SERVICES.get(service, service)}: {len(found)} known vulnerabilities"
    ]
    lines += [f"  not audited: {dep['name']} ({dep['skip_reason']})" for dep in skips]
    lines += section("runtime dependencies, fixed release available (fails the audit):", failing)
    lines += section("runtime dependencies, no fixed release yet (reported):", unfixed)
    lines += section("dev-only dependencies (reported):", dev_only)
    if failing:
        lines.append(f"audit failed: {len(failing)} fixable vulnerabilities in runtime dependencies; bump their pins")
        return Verdict(1, lines)
    return Verdict(0, lines)


def run(pip_audit: Path, requirements: Path, service: str, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report (None if it wrote none) and its stderr; a timeout reads as an unreachable service."""
    command = [
        str(pip_audit),
        "--requirement",
        str(requirements),
        "--no-deps",  # uv export pins every package already: nothing to resolve
        "--disable-pip",
        "--format",
        "json",
        "--vulnerability-service",
        service,
        "--progress-spinner",
        "off",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"timed out: no answer within {timeout:g} s"
    # Exit 1 with a report means "vulnerabilities found"; without one, pip-audit failed (its stderr says why).
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None, done.stderr
    return (report if isinstance(report, dict) else None), done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pip-audit", type=Path, required=True, help="the pip-audit executable")
    parser.add_argument("--runtime", type=Path, required=True, help="runtime requirements (uv export --no-dev)")
    parser.add_argument("--all", type=Path, required=True, help="runtime and dev requirements (--all-groups)")
    parser.add_argument("--service", choices=sorted(SERVICES), default="pypi")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the whole pip-audit run")
    args = parser.parse_args(argv)

    report, stderr = run(args.pip_audit, args.all, args.service, args.timeout)
    verdict = decide(report, pinned_names(args.runtime.read_text()), args.service, stderr)
    print("\n".join(verdict.lines))
    return verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())

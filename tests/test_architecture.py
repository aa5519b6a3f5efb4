"""Architecture rules read from the source with ast: service isolation, one Kafka module, a pure core."""

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "libs" / "common" / "mloop_common"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / f"mloop_{p.name}" / "__init__.py").is_file())
IO_LIBRARIES = {"fastapi", "aiokafka", "sqlalchemy", "httpx"}
DOMAIN_MODULES = [
    "services/drift/mloop_drift/stats.py",
    "services/drift/mloop_drift/detector.py",
    "services/drift/mloop_drift/cooldown.py",
    "services/ingest/mloop_ingest/checks.py",
    "services/ingest/mloop_ingest/contract.py",
    "services/ingest/mloop_ingest/profiling.py",
    "services/ingest/mloop_ingest/reading.py",
    "services/validator/mloop_validator/policy.py",
    "services/registry/mloop_registry/policy.py",
    "services/serving/mloop_serving/host.py",
    "services/serving/mloop_serving/oip.py",
    "services/trainer/mloop_trainer/training.py",
    "libs/common/mloop_common/spec.py",
    "libs/common/mloop_common/evaluation.py",
    "libs/common/mloop_common/profile.py",
]


def package_of(path: Path) -> list[str]:
    """The dotted package ``path`` belongs to, as parts (empty outside the first-party packages)."""
    for name, folder in [
        ("mloop_common", COMMON),
        *((f"mloop_{s}", ROOT / "services" / s / f"mloop_{s}") for s in SERVICES),
    ]:
        if path.is_relative_to(folder):
            return [name, *path.relative_to(folder).parent.parts]
    return []


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Absolute module names imported anywhere in ``path`` (relative imports resolved);
    ``from m import n`` yields both m and m.n."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = package_of(path)
                parts = package[: len(package) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            if base:
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(found)


def top_level(module: str) -> str:
    return module.partition(".")[0]


def package_folder(package: str) -> Path | None:
    if package == "mloop_common":
        return COMMON
    if package.startswith("mloop_") and package[len("mloop_") :] in SERVICES:
        return ROOT / "services" / package[len("mloop_") :] / package
    return None


def source_of(module: str) -> Path | None:
    """The file of a first-party module, or None for third-party ones and names that are not modules."""
    package, _, rest = module.partition(".")
    folder = package_folder(package)
    if folder is None:
        return None
    base = folder.joinpath(*rest.split(".")) if rest else folder
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def third_party_reach(path: Path) -> dict[str, list[str]]:
    """Every third-party top-level package ``path`` imports, directly or through first-party modules,
    with the chain of files that leads to it."""
    reach: dict[str, list[str]] = {}
    seen = {path}
    queue = [(path, [str(path.relative_to(ROOT))])]
    while queue:
        current, chain = queue.pop(0)
        for module in sorted(imports_of(current)):
            source = source_of(module)
            if source is not None:
                if source not in seen:
                    seen.add(source)
                    queue.append((source, [*chain, str(source.relative_to(ROOT))]))
            elif package_folder(top_level(module)) is None:
                reach.setdefault(top_level(module), chain)
    return reach


def product_files():
    """Python files of the shipped code (libraries, services, CLI), tests excluded."""
    roots = [ROOT / "libs", ROOT / "services", ROOT / "cli"]
    return sorted(p for r in roots for p in r.rglob("*.py") if "tests" not in p.relative_to(ROOT).parts)


def test_there_are_services_to_check():
    assert len(SERVICES) >= 6


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_no_other_service(service):
    others = {f"mloop_{name}" for name in SERVICES if name != service}

    offending = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "services" / service).rglob("*.py"))
        if ".venv" not in path.parts
        for module in sorted(imports_of(path))
        if top_level(module) in others
    ]

    assert offending == []


def test_common_library_imports_no_service():
    services = {f"mloop_{name}" for name in SERVICES}

    offending = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted(COMMON.rglob("*.py"))
        for module in sorted(imports_of(path))
        if top_level(module) in services
    ]

    assert offending == []


def test_only_the_bus_module_imports_aiokafka():
    importers = [
        str(path.relative_to(ROOT))
        for path in product_files()
        if any(top_level(module) == "aiokafka" for module in imports_of(path))
    ]

    assert importers == ["libs/common/mloop_common/bus.py"]


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_domain_module_imports_no_io_library(module):
    reach = third_party_reach(ROOT / module)

    assert {name: " -> ".join(chain) for name, chain in reach.items() if name in IO_LIBRARIES} == {}


def test_io_check_notices_an_adapter_import():
    reach = third_party_reach(COMMON / "runtime.py")

    assert {"fastapi", "aiokafka", "sqlalchemy"} <= set(reach)

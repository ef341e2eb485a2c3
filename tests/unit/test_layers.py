"""The layers: the domain package `tally` imports no Google, Firebase or Flask library, nor the outer ring."""

import ast
import tomllib
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "functions" / "tally"
FORBIDDEN = ("google", "firebase_admin", "firebase_functions", "flask", "functions_framework", "grpc")
# The I/O ring and the edge depend on the domain, never the reverse.
OUTER = ("adapters", "entrypoints", "main")


def imported(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(DOMAIN.rglob("*.py")), ids=lambda p: str(p.relative_to(DOMAIN)))
def test_the_domain_imports_no_io_library_and_no_outer_layer(path: Path) -> None:
    names = imported(path)

    wrong = [n for n in names if n.split(".")[0] in FORBIDDEN or n.split(".")[0] in OUTER]
    assert wrong == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from google.cloud import firestore\nimport adapters.firestore\n")

    assert imported(module) == ["google.cloud", "adapters.firestore"]


FUNCTIONS = DOMAIN.parent
SOURCES = sorted(p for p in FUNCTIONS.rglob("*.py") if "venv" not in p.parts and "__pycache__" not in p.parts)
MAX_MODULE_LINES = 450
MAX_DEFINITION_LINES = 150
# Stored field names and the one module that spells each (the documents' own modules).
OWNERS = {
    "costNanos": "tally/documents/counters.py",
    "estimateNanos": "tally/documents/holds.py",
    "monthlyCostLimitNanos": "tally/documents/limits.py",
    "limitPercent": "tally/documents/limits.py",
    "tallyOpen": "tally/documents/sessions.py",
    "mirrorStale": "tally/services/mirror.py",
    "unpricedModels": "tally/documents/months.py",
    "totalCostNanos": "tally/documents/sessions.py",
    "firstStepAt": "tally/documents/sessions.py",
    "featureDays": "tally/documents/months.py",
    "forecastAlerted": "tally/documents/user_months.py",
    "anomalyAlertedDay": "tally/documents/user_months.py",
}
# Names the SPEC also gives a request or a response field: besides their owner, only these say them.
SPEC_NAMES = {
    "monthlyFreeRuns": (
        "tally/documents/limits.py",
        "tally/requests/limits.py",  # a limits object as sent
        "tally/usage.py",  # the `limits` object
        "tally/limits.py",  # a limits object as shown
        "tally/services/analytics.py",  # a free-tier row
    ),
    "held": (
        "tally/documents/usage.py",
        "tally/documents/windows.py",  # a feature's holds
        "tally/usage.py",  # the `limits` object
        "tally/limits.py",  # a scope
    ),
    "isBillableRun": (
        "tally/documents/steps.py",
        "tally/requests/__init__.py",  # a step as sent
        "tally/services/legacy/sources.py",  # a step as the earlier systems kept it
    ),
}


def spelling(name: str) -> list[str]:
    """Return the modules under functions/ whose code spells `name` as a string."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(n, ast.Constant) and n.value == name for n in ast.walk(tree)):
            found.append(str(path.relative_to(FUNCTIONS)))
    return found


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_a_stored_field_name_is_spelled_by_one_module(name: str) -> None:
    assert spelling(name) == [OWNERS[name]]


@pytest.mark.parametrize("name", sorted(SPEC_NAMES))
def test_a_field_name_the_spec_shares_is_spelled_by_its_owner_and_the_edge_only(name: str) -> None:
    assert sorted(spelling(name)) == sorted(SPEC_NAMES[name])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(FUNCTIONS)))
def test_modules_and_definitions_stay_small(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_DEFINITION_LINES
    ]

    assert len(source.splitlines()) <= MAX_MODULE_LINES
    assert long == []


def test_every_package_of_the_functions_is_installed() -> None:
    config = tomllib.loads((FUNCTIONS.parent / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])

    found = {
        ".".join(init.parent.relative_to(FUNCTIONS).parts)
        for init in FUNCTIONS.rglob("__init__.py")
        if "venv" not in init.parts
    }

    assert found <= listed

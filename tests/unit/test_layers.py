"""The layers: the domain package `tally` imports no Google, Firebase or Flask library, nor the outer ring."""

import ast
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

"""scripts/emulator-preload.cjs: the Auth emulator compiles its validators on first use."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRELOAD = ROOT / "scripts" / "emulator-preload.cjs"
EXEGESIS_OPTIONS = ROOT / "node_modules" / "exegesis" / "lib" / "options.js"

# exegesis's compiled options, as firebase-tools' Auth emulator would get them (it passes no such key).
PROBE = """
const options = require(require.resolve("exegesis/lib/options", {
  paths: [require("node:path").dirname(require.resolve("firebase-tools/package.json"))],
}));
const given = options.compileOptions({ controllers: {} });
const chosen = options.compileOptions({ controllers: {}, lazyCompileValidationSchemas: false });
const lazy = [given, chosen].map((compiled) => compiled.lazyCompileValidationSchemas);
process.stdout.write(JSON.stringify(lazy));
"""

NODE = shutil.which("node")
needs_node_modules = pytest.mark.skipif(
    NODE is None or not EXEGESIS_OPTIONS.is_file(),
    reason="node and node_modules (make setup) are needed",
)


def probe(*node_args: str) -> list[bool]:
    assert NODE is not None
    done = subprocess.run(  # noqa: S603 - node, fixed arguments
        [NODE, *node_args, "-e", PROBE], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    answer: list[bool] = json.loads(done.stdout)
    return answer


@needs_node_modules
def test_without_the_preload_exegesis_compiles_every_validator_at_start() -> None:
    assert probe() == [False, False]


@needs_node_modules
def test_the_preload_makes_lazy_compiling_the_default_and_keeps_an_explicit_choice() -> None:
    assert probe("--require", str(PRELOAD)) == [True, False]

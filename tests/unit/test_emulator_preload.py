"""scripts/emulator-preload.cjs and emulator-tuning.cjs: lazy validators, concurrent Python workers."""

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


TUNING = ROOT / "scripts" / "emulator-tuning.cjs"
WORKER_POOL = ROOT / "node_modules" / "firebase-tools" / "lib" / "emulator" / "functionsRuntimeWorker.js"

# firebase-tools' own worker pool, a stand-in emulator whose workers take 30 ms to start and 200 ms
# per request, and the emulator's request handling (start a worker when none has room, then submit).
CONCURRENT_REQUESTS = """
const [tuningPath, perWorker, runtime, requests] = process.argv.slice(1);
const { RuntimeWorkerPool, RuntimeWorkerState } = require(require.resolve(
  "firebase-tools/lib/emulator/functionsRuntimeWorker",
  { paths: [require("node:path").dirname(require.resolve("firebase-tools/package.json"))] },
));
const { BUSY, IDLE } = RuntimeWorkerState;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
class Pool extends RuntimeWorkerPool {}
class Emulator {
  constructor() { this.workerPools = { tally: new Pool() }; this.workers = []; }
  async startRuntime(backend, trigger) {
    const worker = { state: "CREATED", now: 0, most: 0, served: 0 };
    worker.request = async () => {
      worker.state = BUSY; worker.now += 1; worker.most = Math.max(worker.most, worker.now);
      await sleep(200);
      worker.now -= 1; worker.served += 1; worker.state = IDLE;
    };
    const pool = this.workerPools[backend.codebase];
    const running = pool.getTriggerWorkers(trigger.id, backend.runtime);
    pool.setTriggerWorkers(trigger.id, [...running, worker], backend.runtime);
    this.workers.push(worker);
    await sleep(30);
    worker.state = IDLE;
    return worker;
  }
}
const applied = require(tuningPath).servePythonConcurrently(
  { RuntimeWorkerPool: Pool, RuntimeWorkerState, FunctionsEmulator: Emulator }, Number(perWorker));
const emulator = new Emulator();
const pool = emulator.workerPools.tally;
async function handle() {
  const backend = { codebase: "tally", runtime }, trigger = { id: "us-central1-reserve_spend" };
  if (!pool.readyForWork(trigger.id, runtime)) await emulator.startRuntime(backend, trigger);
  await pool.submitRequest(trigger.id, {}, {}, "", undefined, runtime);
}
Promise.all(Array.from({ length: Number(requests) }, handle)).then(() => {
  const workers = emulator.workers;
  process.stdout.write(JSON.stringify({
    applied,
    workers: workers.length,
    most: Math.max(...workers.map((w) => w.most)),
    served: workers.reduce((sum, w) => sum + w.served, 0),
  }));
});
"""

needs_firebase_tools = pytest.mark.skipif(
    NODE is None or not WORKER_POOL.is_file(), reason="node and node_modules (make setup) are needed"
)


def concurrent_requests(*, per_worker: int, runtime: str = "python311") -> dict[str, object]:
    assert NODE is not None
    args = [str(TUNING), str(per_worker), runtime, "30"]
    done = subprocess.run(  # noqa: S603 - node, fixed script
        [NODE, "-e", CONCURRENT_REQUESTS, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


@needs_firebase_tools
def test_the_emulator_alone_starts_a_python_worker_per_concurrent_request() -> None:
    assert concurrent_requests(per_worker=1) == {"applied": False, "workers": 30, "most": 1, "served": 30}


@needs_firebase_tools
def test_thirty_concurrent_requests_share_four_python_workers_of_eight() -> None:
    assert concurrent_requests(per_worker=8) == {"applied": True, "workers": 4, "most": 8, "served": 30}


@needs_firebase_tools
def test_other_runtimes_keep_one_request_per_worker() -> None:
    assert concurrent_requests(per_worker=8, runtime="nodejs22") == {
        "applied": True,
        "workers": 30,
        "most": 1,
        "served": 30,
    }


# The options the Functions emulator sends a Python worker's requests with.
WORKER_CONNECTION = """
const { TCPConn } = require(require.resolve("firebase-tools/lib/emulator/functionsEmulator", {
  paths: [require("node:path").dirname(require.resolve("firebase-tools/package.json"))],
}));
const options = new TCPConn("127.0.0.1", 8081).httpReqOpts();
const agent = options.agent || require("node:http").globalAgent;
process.stdout.write(JSON.stringify([options.host, options.port, agent.keepAlive]));
"""


@needs_firebase_tools
def test_the_emulator_alone_keeps_worker_connections_alive() -> None:
    assert json.loads(node_output(WORKER_CONNECTION)) == ["127.0.0.1", 8081, True]


@needs_firebase_tools
def test_the_preload_gives_each_worker_request_a_fresh_connection() -> None:
    assert json.loads(node_output(WORKER_CONNECTION, "--require", str(PRELOAD))) == ["127.0.0.1", 8081, False]


def node_output(script: str, *node_args: str) -> str:
    assert NODE is not None
    done = subprocess.run(  # noqa: S603 - node, fixed arguments
        [NODE, *node_args, "-e", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout

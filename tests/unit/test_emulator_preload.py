"""scripts/emulator-preload.cjs and emulator-tuning.cjs, in firebase-tools' own modules.

One Node process answers every question without the preload, one with it (each loads firebase-tools).
"""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRELOAD = ROOT / "scripts" / "emulator-preload.cjs"
TUNING = ROOT / "scripts" / "emulator-tuning.cjs"
WORKER_POOL = ROOT / "node_modules" / "firebase-tools" / "lib" / "emulator" / "functionsRuntimeWorker.js"

PROBE = """
const tools = (name) => require(require.resolve(name, {
  paths: [require("node:path").dirname(require.resolve("firebase-tools/package.json"))],
}));
const answers = {};

// exegesis's compiled options, as the Auth emulator gets them (it passes no such key), and when
// a caller chooses.
const options = tools("exegesis/lib/options");
answers.lazy = [{}, { lazyCompileValidationSchemas: false }].map(
  (given) => options.compileOptions({ controllers: {}, ...given }).lazyCompileValidationSchemas,
);

// The options the Functions emulator sends a Python worker's requests with.
const { TCPConn } = tools("firebase-tools/lib/emulator/functionsEmulator");
const connection = new TCPConn("127.0.0.1", 8081).httpReqOpts();
const agent = connection.agent || require("node:http").globalAgent;
answers.connection = [connection.host, connection.port, agent.keepAlive];

// firebase-tools' own worker pool, a stand-in emulator whose workers take 30 ms to start and 200 ms
// per request, and the emulator's request handling (start a worker when none has room, then submit):
// 30 concurrent requests.
const { RuntimeWorkerPool, RuntimeWorkerState } = tools("firebase-tools/lib/emulator/functionsRuntimeWorker");
const { BUSY, IDLE } = RuntimeWorkerState;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function concurrentRequests(perWorker, runtime) {
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
  const applied = require(process.argv[1]).servePythonConcurrently(
    { RuntimeWorkerPool: Pool, RuntimeWorkerState, FunctionsEmulator: Emulator }, perWorker);
  const emulator = new Emulator();
  const pool = emulator.workerPools.tally;
  const backend = { codebase: "tally", runtime }, trigger = { id: "us-central1-reserve_spend" };
  await Promise.all(Array.from({ length: 30 }, async () => {
    if (!pool.readyForWork(trigger.id, runtime)) await emulator.startRuntime(backend, trigger);
    await pool.submitRequest(trigger.id, {}, {}, "", undefined, runtime);
  }));
  const workers = emulator.workers;
  return {
    applied,
    workers: workers.length,
    most: Math.max(...workers.map((w) => w.most)),
    served: workers.reduce((sum, w) => sum + w.served, 0),
  };
}
// Two functions' first requests at once: how many Python workers were starting at the same time.
async function startsAcrossFunctions() {
  class Pool extends RuntimeWorkerPool {}
  let starting = 0, most = 0;
  class Emulator {
    constructor() { this.workerPools = { tally: new Pool() }; }
    async startRuntime(backend, trigger) {
      starting += 1; most = Math.max(most, starting);
      await sleep(30);
      starting -= 1;
      const pool = this.workerPools[backend.codebase];
      const worker = { state: IDLE, request: async () => {} };
      const running = pool.getTriggerWorkers(trigger.id, backend.runtime);
      pool.setTriggerWorkers(trigger.id, [...running, worker], backend.runtime);
      return worker;
    }
  }
  require(process.argv[1]).servePythonConcurrently(
    { RuntimeWorkerPool: Pool, RuntimeWorkerState, FunctionsEmulator: Emulator }, 8);
  const emulator = new Emulator();
  const backend = { codebase: "tally", runtime: "python311" };
  const names = ["set_plan", "set_price", "set_team"];
  await Promise.all(names.map((name) => emulator.startRuntime(backend, { id: `us-central1-${name}` })));
  return most;
}
// The commands the Functions emulator runs in the functions' virtualenv, with a stand-in for
// firebase-tools' python module and for spawning: discovering the functions, then two workers.
function zygoteCommands() {
  const spawned = [], ran = [];
  const python = { runWithVirtualEnv: (args, cwd) => { ran.push([args, cwd]); return "ran"; } };
  const childProcess = { spawn: (command, args, options) => {
    spawned.push({ command, args, cwd: options.cwd, env: options.env });
    return { pid: 4242, on() {}, unref() {}, stdin: { unref() {} } };
  } };
  const fs = { mkdtempSync: (prefix) => `${prefix}x`, existsSync: () => true };
  const os = { tmpdir: () => "/scratch" };
  const applied = require(process.argv[1]).forkPythonWorkers(
    python, { childProcess, fs, os, path: require("node:path") }, "/kit/worker_zygote.py");
  const results = [
    python.runWithVirtualEnv(["python3.11", "-c", "discover"], "/app/functions", {}),
    python.runWithVirtualEnv(["functions-framework"], "/app/functions", { FUNCTION_TARGET: "record_steps" }),
    python.runWithVirtualEnv(["functions-framework"], "/app/functions", { FUNCTION_TARGET: "my_usage" }),
  ];
  const spawns = spawned.map(({ command, args, cwd, env }) => ({
    command, args, cwd,
    env: env === process.env ? "the emulator's"
      : [env.FUNCTION_TARGET, env.VIRTUAL_ENV, env.TALLY_WORKER_ZYGOTE_PID, env.PATH.split(":")[0]],
  }));
  return { applied, ran, spawns, returned: results.map((r) => (r === "ran" ? r : "client")) };
}
answers.zygote = zygoteCommands();
// The socket's folder: the suite's (scripts/with-emulators names it), unless too long for a socket.
answers.zygoteSockets = ["/suite/run-1", `/${"x".repeat(100)}`].map((folder) => {
  process.env.TALLY_WORKER_ZYGOTE_DIR = folder;
  const socket = zygoteCommands().spawns[0].args[3];
  delete process.env.TALLY_WORKER_ZYGOTE_DIR;
  return socket;
});
const python = tools("firebase-tools/lib/functions/python");
answers.workersForked = String(python.runWithVirtualEnv).includes("zygote");

(async () => {
  answers.concurrency = {
    alone: await concurrentRequests(1, "python311"),
    python: await concurrentRequests(8, "python311"),
    node: await concurrentRequests(8, "nodejs22"),
  };
  answers.startsAtOnce = await startsAcrossFunctions();
  process.stdout.write(JSON.stringify(answers));
})();
"""

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not WORKER_POOL.is_file(), reason="node and node_modules (make setup) are needed"
)


def node_answers(*node_args: str) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run(  # noqa: S603 - node, fixed arguments
        [NODE, *node_args, "-e", PROBE, str(TUNING)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answers: dict[str, Any] = json.loads(done.stdout)
    return answers


@pytest.fixture(scope="module")
def plain() -> dict[str, Any]:
    """What firebase-tools does by itself."""
    return node_answers()


@pytest.fixture(scope="module")
def preloaded() -> dict[str, Any]:
    """What firebase-tools does with scripts/emulator-preload.cjs, as scripts/with-emulators runs it."""
    return node_answers("--require", str(PRELOAD))


def test_without_the_preload_exegesis_compiles_every_validator_at_start(plain: dict[str, Any]) -> None:
    assert plain["lazy"] == [False, False]


def test_the_preload_makes_lazy_compiling_the_default_and_keeps_an_explicit_choice(
    preloaded: dict[str, Any],
) -> None:
    assert preloaded["lazy"] == [True, False]


def test_the_emulator_alone_keeps_worker_connections_alive(plain: dict[str, Any]) -> None:
    assert plain["connection"] == ["127.0.0.1", 8081, True]


def test_the_preload_gives_each_worker_request_a_fresh_connection(preloaded: dict[str, Any]) -> None:
    assert preloaded["connection"] == ["127.0.0.1", 8081, False]


def test_the_emulator_alone_starts_a_python_worker_per_concurrent_request(plain: dict[str, Any]) -> None:
    assert plain["concurrency"]["alone"] == {"applied": False, "workers": 30, "most": 1, "served": 30}


def test_thirty_concurrent_requests_share_four_python_workers_of_eight(plain: dict[str, Any]) -> None:
    assert plain["concurrency"]["python"] == {"applied": True, "workers": 4, "most": 8, "served": 30}


def test_python_workers_of_different_functions_start_one_at_a_time(plain: dict[str, Any]) -> None:
    # Each start takes a port from portfinder, which does not hold it: two at once may share one.
    assert plain["startsAtOnce"] == 1


def test_other_runtimes_keep_one_request_per_worker(plain: dict[str, Any]) -> None:
    assert plain["concurrency"]["node"] == {"applied": True, "workers": 30, "most": 1, "served": 30}


def test_the_emulator_alone_starts_each_python_worker_as_a_new_process(
    plain: dict[str, Any], preloaded: dict[str, Any]
) -> None:
    assert (plain["workersForked"], preloaded["workersForked"]) == (False, True)


def test_python_workers_are_started_by_one_zygote_and_other_commands_run_as_before(
    plain: dict[str, Any],
) -> None:
    zygote = plain["zygote"]
    socket = "/scratch/tally-zygote-x/worker-zygote.sock"
    serve = ["-u", "/kit/worker_zygote.py", "serve", socket]
    client = ["-S", "/kit/worker_zygote.py", "client", socket]
    interpreter = "/app/functions/venv/bin/python"
    environment = ["/app/functions/venv", "4242", "/app/functions/venv/bin"]
    assert zygote["applied"] is True
    assert zygote["ran"] == [[["python3.11", "-c", "discover"], "/app/functions"]]
    assert zygote["returned"] == ["ran", "client", "client"]
    assert zygote["spawns"] == [
        {"command": interpreter, "args": serve, "cwd": "/app/functions", "env": "the emulator's"},
        {
            "command": interpreter,
            "args": client,
            "cwd": "/app/functions",
            "env": ["record_steps", *environment],
        },
        {"command": interpreter, "args": client, "cwd": "/app/functions", "env": ["my_usage", *environment]},
    ]


def test_the_zygote_listens_in_the_suites_folder_unless_its_path_is_too_long(plain: dict[str, Any]) -> None:
    assert plain["zygoteSockets"] == [
        "/suite/run-1/worker-zygote.sock",
        "/scratch/tally-zygote-x/worker-zygote.sock",
    ]

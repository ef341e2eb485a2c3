// How scripts/emulator-preload.cjs adjusts firebase-tools: each change takes the module or
// classes it adjusts as arguments (so tests can give it their own) and returns whether it applied.
"use strict";

// The Auth emulator serves its REST API through exegesis, which by default compiles a JSON-schema
// validator for every parameter of every operation when the emulator starts: about 15 s of CPU on
// every start, before any request. exegesis has an option to compile each validator on its first
// use instead (`lazyCompileValidationSchemas`); firebase-tools does not set it, so this makes it
// the default. Requests are validated exactly as before; an explicit choice still wins.
function compileValidatorsOnFirstUse(options) {
  const compile = options && options.compileOptions;
  if (typeof compile !== "function") {
    return false;
  }
  options.compileOptions = (given) => compile({ lazyCompileValidationSchemas: true, ...given });
  return true;
}

// The Functions emulator gives each Python worker one request at a time, and starts a new worker
// (a Python process importing the functions' code: about 1.4 s of CPU) for every request that
// finds them all busy, including every request that arrives while the first worker starts: 30
// concurrent requests start 30 processes. A deployed 2nd-gen function serves concurrent requests
// in one instance, and the worker is functions-framework's gunicorn with several threads, built
// for exactly that. This lets a Python worker take up to `perWorker` requests at once, and has a
// request that finds every worker full wait for the one worker starting (one start at a time per
// function) instead of starting its own.
function servePythonConcurrently({ RuntimeWorkerPool, RuntimeWorkerState, FunctionsEmulator }, perWorker) {
  const pool = RuntimeWorkerPool && RuntimeWorkerPool.prototype;
  const emulator = FunctionsEmulator && FunctionsEmulator.prototype;
  const methods = [
    pool && pool.getIdleWorker,
    pool && pool.submitRequest,
    pool && pool.getTriggerWorkers,
    pool && pool.getKey,
    pool && pool.cleanUpWorkers,
    emulator && emulator.startRuntime,
  ];
  if (!(perWorker > 1) || !RuntimeWorkerState || !methods.every((method) => typeof method === "function")) {
    return false;
  }
  const { IDLE, BUSY } = RuntimeWorkerState;
  const isPython = (runtime) => typeof runtime === "string" && runtime.startsWith("python");
  const serving = new WeakMap(); // worker -> how many requests it is serving now
  const startsByPool = new WeakMap(); // pool -> Map(function key -> its single start)
  const startsOf = (workers) => {
    if (!startsByPool.has(workers)) {
      startsByPool.set(workers, new Map());
    }
    return startsByPool.get(workers);
  };

  // A worker with room: started, and serving fewer than perWorker requests.
  const getIdleWorker = pool.getIdleWorker;
  pool.getIdleWorker = function (triggerId, runtime) {
    if (!isPython(runtime)) {
      return getIdleWorker.call(this, triggerId, runtime);
    }
    this.cleanUpWorkers();
    return this.getTriggerWorkers(triggerId, runtime).find(
      (worker) => (worker.state === IDLE || worker.state === BUSY) && (serving.get(worker) || 0) < perWorker,
    );
  };

  // One worker starts at a time per function; whoever needs a worker meanwhile waits for that start.
  // And one at a time across functions: the emulator gives each Python worker a port from
  // portfinder, which checks that a port is free but does not hold it, so two workers starting
  // at once can be given the same port; the second cannot bind it, and the first one's function
  // then answers the second one's requests. A start ends once its worker listens (the emulator
  // waits for its socket), so the next start never gets a port in use.
  let anyStart = Promise.resolve();
  const oneAtATime = (start) => {
    const run = anyStart.then(start, start);
    anyStart = run.catch(() => undefined);
    return run;
  };
  const startRuntime = emulator.startRuntime;
  emulator.startRuntime = function (backend, trigger) {
    if (!trigger || !backend || !isPython(backend.runtime) || !this.workerPools) {
      return startRuntime.call(this, backend, trigger);
    }
    const workers = this.workerPools[backend.codebase];
    const starts = startsOf(workers);
    const key = workers.getKey(trigger.id, backend.runtime);
    if (!starts.has(key)) {
      const single = { running: null };
      single.start = () => {
        if (!single.running) {
          single.running = oneAtATime(() => startRuntime.call(this, backend, trigger)).finally(() => {
            single.running = null;
          });
        }
        return single.running;
      };
      starts.set(key, single);
    }
    return starts.get(key).start();
  };

  const submitRequest = pool.submitRequest;
  pool.submitRequest = async function (triggerId, req, resp, body, debug, runtime) {
    const single = isPython(runtime) && !debug ? startsOf(this).get(this.getKey(triggerId, runtime)) : undefined;
    if (!single) {
      return submitRequest.call(this, triggerId, req, resp, body, debug, runtime);
    }
    let worker = this.getIdleWorker(triggerId, runtime);
    while (!worker) {
      try {
        await single.start(); // every worker is full: start one more, or wait for the one starting
      } catch (error) {
        if (!resp.headersSent) {
          resp.writeHead(500);
        }
        resp.end(JSON.stringify({ error: `could not start a worker for ${triggerId}: ${error}` }));
        return undefined;
      }
      worker = this.getIdleWorker(triggerId, runtime);
    }
    serving.set(worker, (serving.get(worker) || 0) + 1);
    try {
      return await worker.request(req, resp, body, false);
    } finally {
      serving.set(worker, serving.get(worker) - 1);
    }
  };
  return true;
}

// The emulator talks to a Python worker over HTTP through Node's global agent, which keeps
// connections alive (Node >= 19) for 5 s, while the worker's gunicorn closes an idle one after 2 s.
// A request sent on a connection the worker is closing fails (ECONNRESET, "socket hang up"), and
// the emulator answers it 500 and kills the worker, with every other request it was serving. This
// gives the worker connections an agent that does not keep them: one local connection per request.
function freshConnectionPerRequest(TCPConn, http) {
  const options = TCPConn && TCPConn.prototype && TCPConn.prototype.httpReqOpts;
  if (typeof options !== "function") {
    return false;
  }
  const agent = new http.Agent({ keepAlive: false });
  TCPConn.prototype.httpReqOpts = function () {
    return { ...options.call(this), agent };
  };
  return true;
}

// The emulator starts each Python worker as a new `functions-framework` process (through a shell
// that activates the virtualenv), which spends about 0.9 s of CPU importing the same libraries
// before it imports the functions' code. This starts one zygote (scripts/worker_zygote.py) that
// imports them once, at the first Python command the emulator runs (its discovery of the
// functions, while the suite starts), and starts every worker as a `worker_zygote.py client`: a
// small process that has the zygote fork the worker with the client's environment, folder and
// streams, and lives as long as it. Every other command, and a worker when the zygote is gone,
// runs as before. `fs`, `os`, `path` and `childProcess` are Node's modules (tests give their own).
function forkPythonWorkers(python, { childProcess, fs, os, path }, script) {
  const run = python && python.runWithVirtualEnv;
  if (typeof run !== "function" || process.platform === "win32") {
    return false;
  }
  let zygote = null; // { interpreter, socket, pid }
  const startZygote = (interpreter, cwd) => {
    // In the suite's own folder when scripts/with-emulators names one (it removes the folders of
    // suites that ended), unless that path is too long for a socket; else a new temporary folder.
    const given = process.env.TALLY_WORKER_ZYGOTE_DIR;
    const inGiven = given && path.join(given, "worker-zygote.sock").length <= 100;
    const folder = inGiven ? given : fs.mkdtempSync(path.join(os.tmpdir(), "tally-zygote-"));
    const socket = path.join(folder, "worker-zygote.sock");
    // Its stdin is a pipe from this process: when the emulator ends, so does the zygote.
    const child = childProcess.spawn(interpreter, ["-u", script, "serve", socket], {
      cwd,
      env: process.env,
      stdio: ["pipe", "inherit", "inherit"],
    });
    child.on("error", () => {}); // no zygote: clients become functions-framework themselves
    child.unref();
    child.stdin.unref();
    zygote = { interpreter, socket, pid: child.pid };
  };
  python.runWithVirtualEnv = function (commandAndArgs, cwd, envs, spawnOpts = {}, venvDir = "venv") {
    const bin = path.join(cwd, venvDir, "bin");
    const interpreter = path.join(bin, "python");
    if (!zygote && fs.existsSync(interpreter)) {
      startZygote(interpreter, cwd);
    }
    const worker = commandAndArgs.length === 1 && commandAndArgs[0] === "functions-framework";
    if (!worker || !zygote || zygote.interpreter !== interpreter) {
      return run.call(this, commandAndArgs, cwd, envs, spawnOpts, venvDir);
    }
    return childProcess.spawn(interpreter, ["-S", script, "client", zygote.socket], {
      cwd,
      stdio: "pipe",
      ...spawnOpts,
      env: {
        ...process.env,
        ...envs,
        VIRTUAL_ENV: path.dirname(bin), // what activating the virtualenv sets
        PATH: `${bin}${path.delimiter}${process.env.PATH || ""}`,
        TALLY_WORKER_ZYGOTE_PID: String(zygote.pid),
      },
    });
  };
  return true;
}

module.exports = {
  compileValidatorsOnFirstUse,
  servePythonConcurrently,
  freshConnectionPerRequest,
  forkPythonWorkers,
};

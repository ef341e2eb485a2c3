// Preloaded into the emulator suite's Node process by scripts/with-emulators (node --require).
// scripts/emulator-tuning.cjs says why and how:
//   - the Auth emulator compiles its request validators on first use, not all at start;
//   - a Python function worker serves several requests at once, as a deployed instance does
//     (TALLY_WORKER_REQUESTS per worker; default functions-framework's thread count, THREADS or
//     4 per CPU; 1 keeps the emulator's one request per worker);
//   - the emulator opens a fresh connection to a Python worker for each request, so it never sends
//     one on a kept-alive connection the worker is closing (a 500, and the worker killed);
//   - Python workers start as forks of one process that imported their libraries
//     (scripts/worker_zygote.py; TALLY_WORKER_ZYGOTE=0 starts each as a new process).
// A change whose firebase-tools module is not where it expects is skipped: the suite starts as is.
"use strict";

const childProcess = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const path = require("node:path");
const tuning = require("./emulator-tuning.cjs");

function toolsModule(name) {
  const toolsDir = path.dirname(require.resolve("firebase-tools/package.json"));
  return require(require.resolve(name, { paths: [toolsDir] }));
}

const changes = [
  () => tuning.compileValidatorsOnFirstUse(toolsModule("exegesis/lib/options")),
  () =>
    tuning.servePythonConcurrently(
      {
        ...toolsModule("firebase-tools/lib/emulator/functionsRuntimeWorker"),
        ...toolsModule("firebase-tools/lib/emulator/functionsEmulator"),
      },
      Number(process.env.TALLY_WORKER_REQUESTS) || Number(process.env.THREADS) || os.cpus().length * 4,
    ),
  () => tuning.freshConnectionPerRequest(toolsModule("firebase-tools/lib/emulator/functionsEmulator").TCPConn, http),
  () =>
    process.env.TALLY_WORKER_ZYGOTE !== "0" &&
    tuning.forkPythonWorkers(
      toolsModule("firebase-tools/lib/functions/python"),
      { childProcess, fs, os, path },
      path.join(__dirname, "worker_zygote.py"),
    ),
];
for (const change of changes) {
  try {
    change();
  } catch {
    // firebase-tools or one of its modules moved: leave this part of the emulators unchanged.
  }
}

/** The end of a Node process: queued steps are sent at `beforeExit`, and `process.exit()` says what it loses. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { promisify } from "node:util";

import { setup } from "../helpers/setup.js";

const run = promisify(execFile);
const INDEX = new URL("../../src/index.js", import.meta.url).href;

/** Run `body` in a fresh Node process (with `flags`) with `Tally` imported; return its stderr. */
async function node(body: string, flags: string[] = []): Promise<string> {
  const code = `import { Tally } from ${JSON.stringify(INDEX)};\n${body}`;
  const { stderr } = await run(process.execPath, [...flags, "--input-type=module", "-e", code]);
  return stderr;
}

test("a process that runs out of work sends what is queued", async (t) => {
  const { fake } = await setup(t);

  await node(`new Tally({ functionsUrl: ${JSON.stringify(fake.url)}, idToken: () => "token" }).record({ feature: "f", provider: "p", cost: 1 });`);

  assert.equal(fake.steps().length, 1);
});

test("process.exit() with steps queued logs how many are lost, at error level", async () => {
  const stderr = await node(
    `new Tally({ functionsUrl: "http://127.0.0.1:9/t", idToken: () => "token" }).record({ feature: "f", provider: "p", cost: 1 }); process.exit(0);`,
  );

  assert.match(stderr, /exited with 1 step\(s\) unsent/);
});

test("a process that exits with nothing queued logs nothing", async (t) => {
  const { fake } = await setup(t);

  const stderr = await node(`const tally = new Tally({ functionsUrl: ${JSON.stringify(fake.url)}, idToken: () => "token" }); tally.record({ feature: "f", provider: "p", cost: 1 }); await tally.flush(); process.exit(0);`);

  assert.equal(stderr, "");
});

test("a client the app dropped with steps queued and no timer is not garbage-collected: its steps are sent", async (t) => {
  const { fake } = await setup(t);

  const stderr = await node(
    `let ref;
    (() => {
      const tally = new Tally({ functionsUrl: ${JSON.stringify(fake.url)}, idToken: () => "token", flushIntervalMs: null });
      tally.record({ feature: "f", provider: "p", cost: 1 });
      ref = new WeakRef(tally);
    })();
    await new Promise((resolve) => setTimeout(resolve, 10));
    globalThis.gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
    globalThis.gc();
    if (ref.deref() === undefined) console.error("collected");`,
    ["--expose-gc"],
  );

  assert.equal(stderr, "");
  assert.equal(fake.steps().length, 1);
});

test("an idle client the app dropped is still garbage-collected", async () => {
  const stderr = await node(
    `let ref;
    (() => {
      const tally = new Tally({ functionsUrl: "http://127.0.0.1:9/t", idToken: () => "token", flushIntervalMs: null });
      ref = new WeakRef(tally);
    })();
    await new Promise((resolve) => setTimeout(resolve, 10));
    globalThis.gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
    globalThis.gc();
    console.error(ref.deref() === undefined ? "collected" : "kept");`,
    ["--expose-gc"],
  );

  assert.equal(stderr.trim(), "collected");
});

test("process.exit() while close() is still sending logs the steps it loses", async () => {
  const stderr = await node(
    `const tally = new Tally({ functionsUrl: "http://127.0.0.1:9/t", idToken: () => "token", fetch: () => new Promise(() => {}) });
    tally.record({ feature: "f", provider: "p", cost: 1 });
    void tally.close();
    process.exit(0);`,
  );

  assert.match(stderr, /exited with 1 step\(s\) unsent/);
});

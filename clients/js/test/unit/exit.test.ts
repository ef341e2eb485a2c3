/** The end of a Node process: queued steps are sent at `beforeExit`, and `process.exit()` says what it loses. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { promisify } from "node:util";

import { setup } from "../helpers/setup.js";

const run = promisify(execFile);
const INDEX = new URL("../../src/index.js", import.meta.url).href;

/** Run `body` in a fresh Node process with `Tally` imported; return its stderr. */
async function node(body: string): Promise<string> {
  const code = `import { Tally } from ${JSON.stringify(INDEX)};\n${body}`;
  const { stderr } = await run(process.execPath, ["--input-type=module", "-e", code]);
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

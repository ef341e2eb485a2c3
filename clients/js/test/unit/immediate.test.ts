/** `mode: "immediate"`: each record is sent at once and its promise settles with the server's answer. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { PermissionDenied, Unavailable } from "../../src/index.js";
import { errorBody } from "../helpers/fake-tally.js";
import { setup } from "../helpers/setup.js";

test("record() sends at once and resolves with the operation id once acknowledged", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ mode: "immediate" });

  const promise = tally.record({ feature: "chat", provider: "openai", cost: "0.01" });
  const operationId = await promise;

  assert.ok(promise instanceof Promise);
  assert.deepEqual([...fake.recorded.keys()], [operationId]);
  assert.equal(tally.pending, 0);
});

test("records made together are sent together and each resolves", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ mode: "immediate" });

  const made = await Promise.all([1, 2, 3].map((n) => tally.record({ feature: "chat", provider: "openai", cost: n })));

  assert.deepEqual([...fake.recorded.keys()].sort(), [...made].sort());
  assert.ok(fake.requests().length <= 3);
});

test("a refused record rejects with the server's error and goes to onRefused", async (t) => {
  const { fake, make } = await setup(t);
  const handed: string[] = [];
  const tally = make({ mode: "immediate", onRefused: (steps) => handed.push(...steps.map((s) => String(s["operationId"]))) });
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "not yours"));

  const error = await tally.record({ feature: "chat", provider: "openai", cost: 1, userId: "other" }).catch((caught: unknown) => caught);

  assert.ok(error instanceof PermissionDenied);
  assert.equal(handed.length, 1);
  assert.equal(tally.refused.length, 1);
});

test("a record during an outage rejects with Unavailable and stays queued for the next flush", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ mode: "immediate" });
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 4);

  await assert.rejects(
    tally.record({ feature: "chat", provider: "openai", cost: 1 }),
    (error: unknown) => error instanceof Unavailable && /stays queued for the next flush: do not record it again/.test(error.message),
  );
  assert.equal(tally.pending, 1);
  await tally.flush();

  assert.equal(fake.recorded.size, 1);
});

test("session steps are sent at once and complete() ends the session", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ mode: "immediate" });
  const session = tally.session({ feature: "google_maps" });

  await session.step({ provider: "google_maps", cost: "0.00283" });
  await session.step({ provider: "google_maps", cost: "0.017" });
  await session.complete();

  assert.deepEqual(
    fake.bodies().map((body) => [body.steps.length, body.session?.complete]),
    [
      [1, false],
      [1, false],
      [0, true],
    ],
  );
});

test("flush() waits for the sends in progress (for waitUntil)", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ mode: "immediate" });
  const recording = tally.record({ feature: "chat", provider: "openai", cost: 1 });

  await tally.flush();

  assert.equal(fake.recorded.size, 1);
  await recording;
});

/** Sessions: ids, queueing, completion, outages. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidArgument, NotFound, TallyError } from "../../src/index.js";
import { errorBody } from "../helpers/fake-tally.js";
import { ids, setup } from "../helpers/setup.js";

test("a session sends its steps and completes with its last request", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "google_maps", userId: "user-1" });
  const first = session.step({ provider: "google_maps", cost: "0.00283", feature: "google_maps_autocomplete" });
  const second = session.step({ provider: "google_maps", cost: "0.005" });
  assert.equal(fake.bodies().length, 0);

  const response = await session.complete();

  const [body, ...rest] = fake.bodies();
  assert.equal(rest.length, 0);
  assert.match(session.id, /^session_\d{13}_[0-9a-f]{16}$/);
  assert.equal(body?.userId, "user-1");
  assert.deepEqual(body?.session, { id: session.id, feature: "google_maps", complete: true });
  assert.deepEqual(ids(body?.steps ?? []), [first, second]);
  assert.deepEqual(
    body?.steps.map((step) => step.feature),
    ["google_maps_autocomplete", "google_maps"],
  );
  assert.equal(response?.session?.status, "completed");
  assert.ok(session.completed);
});

test("a session completed in a finally block after the app's error still sends", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat" });

  await assert.rejects(async () => {
    try {
      session.step({ provider: "openai", cost: 1 });
      throw new RangeError("app bug");
    } finally {
      await session.complete();
    }
  }, RangeError);

  const [body] = fake.bodies();
  assert.equal(body?.session?.complete, true);
  assert.equal(body?.steps.length, 1);
});

test("a refusal at completion rejects", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("record_steps", 404, errorBody("NOT_FOUND", "no such session"));
  const session = tally.session({ feature: "chat" });
  session.step({ provider: "openai", cost: 1 });

  await assert.rejects(session.complete(), NotFound);
});

test("a session without steps sends nothing", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat" });

  const response = await session.complete();

  assert.equal(response, null);
  assert.equal(fake.requests().length, 0);
});

test("steps sent early, then an empty completing request", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat" });
  session.step({ provider: "openai", cost: 1 });
  await tally.flush();
  assert.equal(fake.bodies()[0]?.session?.complete, false);

  await session.complete();

  const [first, last] = fake.bodies();
  assert.equal(first?.steps.length, 1);
  assert.deepEqual(last, { session: { id: session.id, feature: "chat", complete: true }, steps: [] });
});

test("a long session completes with its last batch", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat" });
  for (let n = 0; n < 150; n++) session.step({ provider: "openai", cost: "0.001" });

  await session.complete();

  const bodies = fake.bodies();
  assert.equal(fake.recorded.size, 150);
  assert.ok(bodies.every((body) => body.steps.length <= 100));
  assert.deepEqual(
    bodies.map((body) => body.session?.complete),
    [...Array<boolean>(bodies.length - 1).fill(false), true],
  );
  assert.ok(bodies.every((body) => body.session?.id === session.id));
});

test("a session over every bound completes only with its last request", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "assistant" });
  for (let n = 0; n < 130; n++) {
    session.step({ provider: `provider_${n % 21}`, feature: `feature_${n % 22}`, units: { model: `model-${n % 23}`, inputTokens: n } });
  }

  await session.complete();

  const bodies = fake.bodies();
  assert.ok(bodies.length >= 7);
  assert.deepEqual(
    bodies.map((body) => body.session?.complete),
    [...Array<boolean>(bodies.length - 1).fill(false), true],
  );
  assert.equal(fake.recorded.size, 130);
  assert.ok(fake.completedSessions.has(session.id));
});

test("a session completion survives an outage", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 4);
  const session = tally.session({ feature: "chat" });
  const operationId = session.step({ provider: "openai", cost: 1 });

  assert.equal(await session.complete(), null); // logged, kept queued
  await tally.flush();

  const last = fake.bodies().at(-1);
  assert.deepEqual(last?.session, { id: session.id, feature: "chat", complete: true });
  assert.deepEqual(ids(last?.steps ?? []), [operationId]);
  assert.equal(new Set(fake.requests().map((request) => request.raw)).size, 1);
});

test("a step after completion is refused", async (t) => {
  const { tally } = await setup(t);
  const session = tally.session({ feature: "chat" });
  session.step({ provider: "openai", cost: 1 });
  await session.complete();

  assert.throws(() => session.step({ provider: "openai", cost: 1 }), TallyError);
});

test("completing twice is a no-op", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat" });
  session.step({ provider: "openai", cost: 1 });
  await session.complete();

  assert.equal(await session.complete(), null);
  assert.equal(fake.requests().length, 1);
});

test("a step needs a feature when the session has none", async (t) => {
  const { tally } = await setup(t);
  const session = tally.session();

  assert.throws(() => session.step({ provider: "openai", cost: 1 }), InvalidArgument);
});

test("a given session id is used", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat", sessionId: "session_given_1" });
  session.step({ provider: "openai", cost: 1 });

  await session.complete();

  assert.equal(fake.bodies()[0]?.session?.id, "session_given_1");
});

test("session and standalone steps go in separate requests", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat" });
  session.step({ provider: "openai", cost: 1 });
  tally.record({ feature: "maps", provider: "google_maps", cost: 1 });

  await tally.flush();

  assert.deepEqual(fake.bodies().map((body) => "session" in body).sort(), [false, true]);
});

test("session.flush() sends its steps without completing it", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "chat" });
  session.step({ provider: "openai", cost: 1 });
  tally.record({ feature: "maps", provider: "google_maps", cost: 1 });

  await session.flush();

  assert.equal(fake.bodies().length, 1);
  assert.equal(fake.bodies()[0]?.session?.complete, false);
  assert.equal(tally.pending, 1);
});

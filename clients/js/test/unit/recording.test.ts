/** Where a wrapped call's step goes (recordCall): never thrown, never lost without a trace. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { recordCall } from "../../src/recording.js";
import type { TallyError } from "../../src/index.js";
import type { Units } from "../../src/values.js";
import { logsOf } from "../helpers/logger.js";
import { setup } from "../helpers/setup.js";

const UNITS: Units = { model: "gpt-4o", inputTokens: 10, outputTokens: 5 };

async function watched(t: Parameters<typeof setup>[0]) {
  const calls: [Record<string, unknown>[], TallyError][] = [];
  const fixture = await setup(t, { onRefused: (steps, error) => calls.push([steps, error]) });
  return { ...fixture, calls };
}

test("a wrapped call whose feature the client refuses goes to refused and onRefused, not only to the log", async (t) => {
  const { fake, tally, calls } = await watched(t);

  recordCall({ tally, feature: "bad feature!" }, "openai", "chat.completions", UNITS, { api: "chat.completions" });
  await tally.flush();

  assert.equal(fake.steps().length, 0);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]?.[0][0]?.["feature"], "bad feature!");
  assert.equal(calls[0]?.[1].httpStatus, undefined);
  assert.equal(tally.refused.length, 1);
});

test("a wrapped call on a closed client goes to refused", async (t) => {
  const { tally, calls } = await watched(t);
  await tally.close();

  recordCall({ tally, userId: "user-1" }, "openai", "chat.completions", UNITS, {});

  assert.equal(calls.length, 1);
  assert.equal(tally.refused[0]?.userId, "user-1");
});

test("app metadata the server would refuse is dropped, and the call is still recorded", async (t) => {
  const { fake, tally } = await setup(t);

  recordCall({ tally, metadata: { __reserved__: 1 } }, "openai", "chat.completions", UNITS, { api: "chat.completions" });
  await tally.flush();

  assert.deepEqual(fake.steps()[0]?.["metadata"], { api: "chat.completions" });
  assert.ok(logsOf(tally).at("error").some((line) => line.includes("metadata")));
});

test("a call under a reservation whose session completed is recorded standalone and settles the hold", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "assistant", userId: "user-1" });
  const reservation = await session.reserve({ estimate: { cost: "0.05" } });
  session.step({ provider: "openai", cost: "0.01" });
  await session.complete();

  recordCall({ tally, reservation }, "openai", "chat.completions", UNITS, {});
  await tally.flush();

  const last = fake.bodies("record_steps").at(-1);
  assert.equal(last?.session, undefined);
  assert.equal(last?.steps[0]?.["reservationId"], reservation.reservationId);
  assert.equal(fake.steps().length, 2);
});

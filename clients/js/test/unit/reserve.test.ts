/** The gate: reserve_spend before spending, settle with reservationId, release otherwise. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { BudgetExceeded, InvalidArgument, NotFound, Unavailable } from "../../src/index.js";
import { errorBody } from "../helpers/fake-tally.js";
import { logsOf } from "../helpers/logger.js";
import { setup } from "../helpers/setup.js";

test("an allowed reservation is settled by the recorded step", async (t) => {
  const { fake, tally } = await setup(t);

  const reservation = await tally.reserve({ userId: "user-1", estimate: { cost: "0.05", isBillableRun: true }, ttlSeconds: 120 });
  const operationId = await reservation.record({ feature: "chat", provider: "openai", cost: "0.04", isBillableRun: true });

  assert.ok(reservation.allowed);
  assert.deepEqual(fake.bodies("reserve_spend"), [
    { userId: "user-1", reservationId: reservation.reservationId, estimate: { cost: "0.05", isBillableRun: true }, ttlSeconds: 120 },
  ]);
  assert.match(reservation.reservationId, /^res_\d{13}_[0-9a-f]{16}$/);
  const [body] = fake.bodies("record_steps");
  assert.equal(body?.userId, "user-1");
  assert.equal(body?.steps.length, 1);
  const step = body?.steps[0];
  assert.equal(step?.operationId, operationId);
  assert.equal(step?.["reservationId"], reservation.reservationId);
  assert.equal(step?.["cost"], "0.04");
  assert.deepEqual(fake.bodies("release_spend"), []);
  assert.deepEqual(reservation.usage, { month: "2026-11", totalCost: 1.25 });
  assert.equal(reservation.expiresAt, "2026-11-14T10:09:09.794Z");
});

test("a refused reservation rejects with BudgetExceeded, its reason and usage", async (t) => {
  const { fake, tally } = await setup(t);
  const usage = { month: "2026-11", totalCost: 5.0, limits: { exceeded: true } };
  fake.reserveAnswer = { allowed: false, reason: "MONTHLY_COST_LIMIT", reserved: 0, usage };

  const error = await tally.reserve({ userId: "user-1", estimate: { cost: 0.05 } }).catch((caught: unknown) => caught);

  assert.ok(error instanceof BudgetExceeded);
  assert.equal(error.reason, "MONTHLY_COST_LIMIT");
  assert.deepEqual(error.usage, usage);
  assert.equal(error.reservationId, (fake.bodies("reserve_spend")[0] as unknown as { reservationId: string }).reservationId);
  assert.deepEqual(fake.bodies("record_steps"), []);
  assert.deepEqual(fake.bodies("release_spend"), []);
});

for (const reason of ["FREE_RUNS", "UNPRICED"]) {
  test(`a ${reason} refusal reports its reason`, async (t) => {
    const { fake, tally } = await setup(t);
    fake.reserveAnswer = { allowed: false, reason, usage: {} };

    await assert.rejects(
      tally.reserve({ estimate: { cost: 0.01, isBillableRun: true } }),
      (error: unknown) => error instanceof BudgetExceeded && error.reason === reason,
    );
  });
}

test("release() frees the hold", async (t) => {
  const { fake, tally } = await setup(t);
  const reservation = await tally.reserve({ userId: "user-1", estimate: { cost: "0.05" } });

  await reservation.release();

  assert.deepEqual(fake.bodies("release_spend"), [{ userId: "user-1", reservationId: reservation.reservationId }]);
  assert.deepEqual(fake.bodies("record_steps"), []);
  await assert.rejects(reservation.record({ feature: "chat", provider: "openai", cost: 1 }), /was released/);
});

test("a units estimate", async (t) => {
  const { fake, tally } = await setup(t);
  const units = { model: "gpt-4o", inputTokens: 2000, outputTokens: 500 };

  const reservation = await tally.reserve({ estimate: { units, provider: "openai" }, ttlSeconds: 10 });
  await reservation.step({ feature: "chat", units: { ...units, outputTokens: 420 } });

  assert.deepEqual((fake.bodies("reserve_spend")[0] as unknown as { estimate: unknown }).estimate, {
    units,
    provider: "openai",
    isBillableRun: false,
  });
  assert.equal((fake.steps()[0]?.["units"] as { outputTokens: number }).outputTokens, 420);
  assert.equal(fake.steps()[0]?.provider, "openai");
});

test("only the first step carries the reservation id", async (t) => {
  const { fake, tally } = await setup(t);
  const reservation = await tally.reserve({ estimate: { cost: "0.05" } });

  await reservation.record({ feature: "chat", provider: "openai", cost: "0.01" });
  await reservation.record({ feature: "chat", provider: "openai", cost: "0.02" });

  assert.deepEqual(
    fake.steps().map((step) => step["reservationId"]),
    [reservation.reservationId, undefined],
  );
});

test("a session reservation records into the session and names its feature", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "assistant", userId: "user-1" });

  const reservation = await session.reserve({ estimate: { cost: "0.05" } });
  await reservation.record({ provider: "openai", cost: "0.03" });
  assert.equal(fake.bodies("record_steps").length, 1);
  await session.complete();

  const [first, last] = fake.bodies("record_steps");
  assert.deepEqual(first?.session, { id: session.id, feature: "assistant", complete: false });
  assert.equal(first?.steps[0]?.["reservationId"], reservation.reservationId);
  assert.equal(first?.steps[0]?.feature, "assistant");
  assert.equal(last?.session?.complete, true);
  const reserve = fake.bodies("reserve_spend")[0] as unknown as { userId: string; estimate: { feature: string } };
  assert.equal(reserve.userId, "user-1");
  assert.equal(reserve.estimate.feature, "assistant");
});

test("a session reservation recorded after its session completed settles as a standalone step", async (t) => {
  const { fake, tally } = await setup(t);
  const session = tally.session({ feature: "assistant", userId: "user-1" });
  const reservation = await session.reserve({ estimate: { cost: "0.05" } });
  session.step({ provider: "openai", cost: "0.01" });
  await session.complete();

  await reservation.record({ provider: "openai", cost: "0.03" });

  const last = fake.bodies("record_steps").at(-1);
  assert.equal(last?.session, undefined);
  assert.equal(last?.userId, "user-1");
  assert.equal(last?.steps[0]?.["reservationId"], reservation.reservationId);
  assert.equal(last?.steps[0]?.feature, "assistant");
  assert.equal(fake.steps().length, 2);
});

test("a units estimate carries its provider and feature, the defaults of record()", async (t) => {
  const { fake, tally } = await setup(t);
  const units = { model: "gpt-4o", inputTokens: 2000, outputTokens: 500 };

  const reservation = await tally.reserve({ estimate: { units, provider: "openai", feature: "chat" }, userId: "user-1" });
  await reservation.record({ units: { ...units, outputTokens: 420 } });

  assert.deepEqual((fake.bodies("reserve_spend")[0] as unknown as { estimate: unknown }).estimate, {
    units,
    provider: "openai",
    feature: "chat",
    isBillableRun: false,
  });
  const [step] = fake.steps();
  assert.deepEqual([step?.provider, step?.feature, step?.["reservationId"]], ["openai", "chat", reservation.reservationId]);
});

test("a units estimate without provider is sent and logged", async (t) => {
  const { fake, tally } = await setup(t);

  await tally.reserve({ estimate: { units: { model: "gpt-4o", inputTokens: 10 } } });

  assert.ok(!("provider" in ((fake.bodies("reserve_spend")[0] as unknown as { estimate: object }).estimate)));
  assert.ok(logsOf(tally).at("warn").some((line) => line.includes("without provider")));
});

test("recording needs a provider when the reservation has none", async (t) => {
  const { tally } = await setup(t);
  const reservation = await tally.reserve({ estimate: { cost: "0.05" } });

  await assert.rejects(reservation.record({ feature: "chat", cost: "0.01" }), InvalidArgument);
});

test("an invalid estimate is refused before sending", async (t) => {
  const { fake, tally } = await setup(t);

  await assert.rejects(
    tally.reserve({ estimate: { cost: "0.05", provider: "open ai" } }),
    (error: unknown) => error instanceof InvalidArgument && error.details[0]?.field === "estimate.provider",
  );
  await assert.rejects(tally.reserve({ estimate: {} }), InvalidArgument);
  await assert.rejects(tally.reserve({ estimate: { cost: 1, units: { model: "m", inputTokens: 1 } } }), InvalidArgument);
  for (const ttlSeconds of [9, 3601, 2.5]) await assert.rejects(tally.reserve({ estimate: { cost: 1 }, ttlSeconds }), InvalidArgument);
  assert.equal(fake.server.requests.length, 0);
});

test("a server without reserve_spend rejects with NotFound", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("reserve_spend", 404, errorBody("NOT_FOUND", "no such function"));

  await assert.rejects(tally.reserve({ estimate: { cost: "0.05" } }), NotFound);
});

test("an unreachable gate rejects with Unavailable: spending anyway is the app's decision", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("reserve_spend", 503, errorBody("UNAVAILABLE", "down"), 4);

  await assert.rejects(tally.reserve({ estimate: { cost: "0.05" } }), Unavailable);
});

test("usage recorded while Tally is down stays queued and the record still resolves", async (t) => {
  const { fake, tally } = await setup(t);
  const reservation = await tally.reserve({ estimate: { cost: "0.05", provider: "openai", feature: "chat" } });
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 4);

  const operationId = await reservation.record({ cost: "0.04" });

  assert.equal(tally.pending, 1);
  await tally.flush();
  assert.equal(fake.recorded.get(operationId)?.["reservationId"], reservation.reservationId);
});

/**
 * Against the real functions: a wrapped chat completion, a stream, a session and a gated call (the
 * real `openai` package against a local fake of OpenAI), priced by an admin's catalog price, and the
 * user's `my_usage` equal to the nano to a price computed apart from Tally.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import OpenAI from "openai";

import { BudgetExceeded } from "../../src/index.js";
import { wrapOpenAI } from "../../src/openai.js";
import { SKIP, call, makeUser, myUsage, nanos, stepNanos, tallyFor, unique, waitUntil } from "../helpers/emulator.js";
import { FakeOpenAI, OPENAI_USAGE } from "../helpers/fake-providers.js";

const PRICES = { inputMTok: "2.5", outputMTok: "10", cacheReadMTok: "0.0012345" };

/** What one call the fake OpenAI answers costs at PRICES, from OpenAI's own usage numbers. */
function callNanos(): bigint {
  const cached = OPENAI_USAGE.prompt_tokens_details.cached_tokens;
  return stepNanos(
    { inputMTok: OPENAI_USAGE.prompt_tokens - cached, outputMTok: OPENAI_USAGE.completion_tokens, cacheReadMTok: cached },
    PRICES,
  );
}

test("wrapped calls, a stream, a session and a gated call: my_usage matches an independent price to the nano", { skip: SKIP }, async (t) => {
  const [admin, user] = await Promise.all([makeUser({ admin: true }), makeUser()]);
  const base = `js-acceptance-${unique()}`;
  await call("set_price", admin, {
    provider: "openai",
    model: base,
    prices: Object.fromEntries(Object.entries(PRICES).map(([key, value]) => [key, Number(value)])),
  });
  const api = await FakeOpenAI.start();
  api.model = `${base}-2024-08-06`; // the dated snapshot the provider answers with
  const tally = tallyFor(user);
  t.after(async () => {
    await tally.close();
    await api.close();
  });
  const openai = wrapOpenAI(new OpenAI({ apiKey: "sk-test", baseURL: api.baseURL, maxRetries: 0 }), { tally, feature: "chat" });
  const messages = [{ role: "user" as const, content: "Hi" }];

  await openai.chat.completions.create({ model: base, messages });
  const stream = await openai.chat.completions.create({ model: base, messages, stream: true });
  for await (const _chunk of stream);
  const session = tally.session({ feature: "assistant" });
  const inSession = wrapOpenAI(openai, { tally, session });
  await inSession.chat.completions.create({ model: base, messages });
  session.step({ provider: "google_maps", feature: "google_maps_autocomplete", cost: "0.00283" });
  await session.complete();
  const reservation = await tally.reserve({
    estimate: { units: { model: base, inputTokens: 2000, outputTokens: 500 }, provider: "openai", feature: "chat", isBillableRun: true },
  });
  await wrapOpenAI(openai, { tally, reservation, isBillableRun: true }).chat.completions.create({ model: base, messages });
  await tally.flush();

  const expected = 4n * callNanos() + 2_830_000n;
  const usage = await myUsage(user);
  assert.equal(callNanos(), 6_000_247n); // 2,500,000 + 3,500,000 + 246.9 rounded half-even once
  assert.equal(nanos(usage["totalCost"]), Number(expected));
  assert.equal(usage["apiCalls"], 5);
  assert.equal(usage["billableRuns"], 1);
  const limits = usage["limits"] as Record<string, unknown>;
  assert.equal(limits["held"] ?? 0, 0);
  assert.deepEqual(tally.refused, []);
  const providers = usage["providers"] as { name: string; cost: number }[];
  assert.equal(nanos(providers.find((p) => p.name === "openai")?.cost), Number(4n * callNanos()));
  await waitUntil(async () => ((await myUsage(user))["sessions"] as { completed: number }).completed === 1);
});

test("a gated call over the user's limit is refused before spending", { skip: SKIP }, async () => {
  const [admin, user] = await Promise.all([makeUser({ admin: true }), makeUser()]);
  await call("set_limits", admin, { userId: user.uid, monthlyCostLimit: 0.5, monthlyFreeRuns: 100 });
  const tally = tallyFor(user);

  const error = await tally.reserve({ estimate: { cost: "0.75" } }).catch((caught: unknown) => caught);
  const unpriced = await tally
    .reserve({ estimate: { units: { model: `no-such-model-${unique()}`, inputTokens: 10 } } })
    .catch((caught: unknown) => caught);
  await tally.close();

  assert.ok(error instanceof BudgetExceeded);
  assert.equal(error.reason, "MONTHLY_COST_LIMIT");
  assert.equal(error.usage["month"], (await myUsage(user))["month"]);
  assert.ok(unpriced instanceof BudgetExceeded);
  assert.equal(unpriced.reason, "UNPRICED");
});

test("a released hold no longer counts", { skip: SKIP }, async () => {
  const user = await makeUser();
  const tally = tallyFor(user);

  const reservation = await tally.reserve({ estimate: { cost: "0.5" }, ttlSeconds: 600 });
  const held = ((await myUsage(user))["limits"] as { held: number }).held;
  await reservation.release();
  await tally.close();

  assert.equal(held, 0.5);
  const usage = await myUsage(user);
  assert.equal((usage["limits"] as { held?: number }).held ?? 0, 0);
  assert.equal(usage["totalCost"], 0);
});

/** wrapAnthropic with the real `@anthropic-ai/sdk` package against a local server that answers like Anthropic. */

import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { test } from "node:test";

import Anthropic from "@anthropic-ai/sdk";
import type { MessageCreateParamsNonStreaming as BetaMessageCreateParamsNonStreaming } from "@anthropic-ai/sdk/resources/beta/messages";
import type { MessageCreateParamsNonStreaming } from "@anthropic-ai/sdk/resources/messages";

import { wrapAnthropic } from "../../src/anthropic.js";
import { ANTHROPIC_MODEL, FakeAnthropic, MESSAGE, MESSAGE_UNITS, STREAM_EVENTS, STREAM_UNITS } from "../helpers/fake-providers.js";
import { setup, waitFor } from "../helpers/setup.js";

const HI = [{ role: "user" as const, content: "Hi" }];

async function fixture(t: TestContext) {
  const base = await setup(t);
  const api = await FakeAnthropic.start();
  t.after(() => api.close());
  const client = new Anthropic({ apiKey: "sk-ant-test", baseURL: api.baseURL, maxRetries: 0 });
  return { ...base, api, client };
}

test("a message is recorded with its cache tokens and returned unchanged", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat", userId: "user-1" });

  const message = await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 1024, messages: HI });
  await tally.flush();

  assert.deepEqual(JSON.parse(JSON.stringify(message)), MESSAGE);
  const [body] = fake.bodies();
  assert.equal(body?.userId, "user-1");
  const step = body?.steps[0];
  assert.deepEqual([step?.["usageType"], step?.provider, step?.feature], ["AI", "anthropic", "support_chat"]);
  assert.deepEqual(step?.["units"], MESSAGE_UNITS);
  assert.deepEqual(step?.["metadata"], { api: "messages", stream: false, responseId: MESSAGE.id });
});

test("per-call tally options never reach the API", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally });

  await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI, tally: { feature: "classify" } } as MessageCreateParamsNonStreaming);
  await tally.flush();

  assert.ok(!("tally" in (api.bodies[0] ?? {})));
  assert.equal(fake.steps()[0]?.feature, "classify");
});

test("a stream passes its events through and records message_start's usage updated by message_delta's", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const stream = await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 1024, messages: HI, stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  await tally.flush();

  assert.deepEqual(
    events.map((event) => event.type),
    STREAM_EVENTS.map((event) => event["type"]).filter((type) => type !== "ping"),
  );
  const text = events.map((event) => (event.type === "content_block_delta" && event.delta.type === "text_delta" ? event.delta.text : "")).join("");
  assert.equal(text, "Hello world");
  const [step, ...rest] = fake.steps();
  assert.equal(rest.length, 0);
  assert.deepEqual(step?.["units"], STREAM_UNITS);
  assert.equal((step?.["metadata"] as { stream: boolean }).stream, true);
});

test("a stream left early records what message_start reported", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const stream = await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 1024, messages: HI, stream: true });
  let first: string | undefined;
  for await (const event of stream) {
    first = event.type;
    break;
  }
  await tally.flush();

  assert.equal(first, "message_start");
  assert.deepEqual(fake.steps()[0]?.["units"], { ...STREAM_UNITS, outputTokens: 1 });
});

test("the messages.stream() helper is recorded once", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const message = await wrapped.messages.stream({ model: "claude-haiku-4-5", max_tokens: 1024, messages: HI }).finalMessage();
  await tally.flush();

  assert.equal(message.usage.output_tokens, 15);
  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [STREAM_UNITS],
  );
});

test("calls of a client wrapped with a session join it (the wrapper's feature wins)", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const session = tally.session({ feature: "assistant" });
  const wrapped = wrapAnthropic(client, { tally, feature: "classify", session });

  await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI });
  await session.complete();

  const [body] = fake.bodies();
  assert.equal(body?.session?.id, session.id);
  assert.equal(body?.steps[0]?.feature, "classify");
});

test("1-hour cache writes are counted apart from 5-minute ones", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.usage = {
    input_tokens: 100,
    output_tokens: 50,
    cache_read_input_tokens: 0,
    cache_creation_input_tokens: 1500,
    cache_creation: { ephemeral_5m_input_tokens: 500, ephemeral_1h_input_tokens: 1000 },
  };
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const message = await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI });
  await tally.flush();

  assert.equal(message.usage.cache_creation?.ephemeral_1h_input_tokens, 1000);
  assert.deepEqual(fake.steps()[0]?.["units"], {
    model: ANTHROPIC_MODEL,
    inputTokens: 100,
    outputTokens: 50,
    cacheReadTokens: 0,
    cacheWriteTokens: 500,
    cacheWrite1hTokens: 1000,
    requests: 1,
  });
});

test("a stream counts 1-hour cache writes apart", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.usage = {
    input_tokens: 25,
    output_tokens: 1,
    cache_read_input_tokens: 10,
    cache_creation_input_tokens: 40,
    cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 40 },
  };
  api.deltaUsage = { output_tokens: 15, input_tokens: 25, cache_read_input_tokens: 10, cache_creation_input_tokens: 40 };
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const stream = await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI, stream: true });
  for await (const _event of stream);
  await tally.flush();

  assert.deepEqual(fake.steps()[0]?.["units"], { ...STREAM_UNITS, cacheWriteTokens: 0, cacheWrite1hTokens: 40 });
});

test("without a breakdown every cache write counts as a 5-minute one", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI });
  await tally.flush();

  const units = fake.steps()[0]?.["units"] as Record<string, number>;
  assert.equal(units["cacheWriteTokens"], 300);
  assert.ok(!("cacheWrite1hTokens" in units));
});

test("everything else is the client's own", async (t) => {
  const { tally, client } = await fixture(t);

  const wrapped = wrapAnthropic(client, { tally });

  assert.equal(wrapped.apiKey, "sk-ant-test");
  assert.equal(wrapped.models, client.models);
  assert.equal(wrapped.beta.models, client.beta.models);
  assert.ok(wrapped instanceof Anthropic);
});

/** The steps' stream metadata and units. */
function recorded(fake: { steps(): Record<string, unknown>[] }): [boolean, unknown][] {
  return fake.steps().map((step) => [(step["metadata"] as { stream: boolean }).stream, step["units"]]);
}

const ONE_HOUR_USAGE = {
  input_tokens: 100,
  output_tokens: 50,
  cache_read_input_tokens: 0,
  cache_creation_input_tokens: 1500,
  cache_creation: { ephemeral_5m_input_tokens: 500, ephemeral_1h_input_tokens: 1000 },
};
const ONE_HOUR_UNITS = { ...MESSAGE_UNITS, cacheReadTokens: 0, cacheWriteTokens: 500, cacheWrite1hTokens: 1000 };

test("messages.parse() is recorded once", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const message = await wrapped.messages.parse({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI });
  await tally.flush();

  assert.equal(message.id, MESSAGE.id);
  assert.deepEqual(recorded(fake), [[false, MESSAGE_UNITS]]);
});

test("beta.messages.create() is recorded, its 1-hour cache writes apart, and its per-call options never reach the API", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.usage = ONE_HOUR_USAGE;
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const message = await wrapped.beta.messages.create({
    model: "claude-haiku-4-5",
    max_tokens: 10,
    messages: HI,
    betas: ["extended-cache-ttl-2025-04-11"],
    tally: { feature: "classify" },
  } as BetaMessageCreateParamsNonStreaming);
  await tally.flush();

  assert.equal(message.usage.cache_creation?.ephemeral_1h_input_tokens, 1000);
  assert.equal(api.server.requests[0]?.headers["anthropic-beta"], "extended-cache-ttl-2025-04-11");
  assert.ok(!("tally" in (api.bodies[0] ?? {})));
  assert.deepEqual(recorded(fake), [[false, ONE_HOUR_UNITS]]);
  assert.deepEqual(fake.steps()[0]?.["metadata"], { api: "messages", stream: false, responseId: MESSAGE.id });
  assert.equal(fake.steps()[0]?.feature, "classify");
});

test("a beta.messages.create() stream is recorded once", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const stream = await wrapped.beta.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI, stream: true });
  for await (const _event of stream);
  await tally.flush();

  assert.deepEqual(recorded(fake), [[true, STREAM_UNITS]]);
});

test("beta.messages.stream() and beta.messages.parse() are recorded once each", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "support_chat" });

  const streamed = await wrapped.beta.messages.stream({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI }).finalMessage();
  const parsed = await wrapped.beta.messages.parse({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI });
  await tally.flush();

  assert.equal(streamed.usage.output_tokens, 15);
  assert.equal(parsed.id, MESSAGE.id);
  assert.deepEqual(recorded(fake), [
    [true, STREAM_UNITS],
    [false, MESSAGE_UNITS],
  ]);
});

test("a client wrapped twice records each request of every method once, with the newer options", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const twice = wrapAnthropic(wrapAnthropic(client, { tally, feature: "first" }), { tally, feature: "second" });
  const body = { model: "claude-haiku-4-5", max_tokens: 10, messages: HI };

  await twice.messages.create(body);
  await twice.messages.parse(body);
  await twice.messages.stream(body).finalMessage();
  for await (const _event of await twice.messages.create({ ...body, stream: true }));
  await twice.beta.messages.create(body);
  await twice.beta.messages.parse(body);
  await twice.beta.messages.stream(body).finalMessage();
  await twice.withOptions({ timeout: 5_000 }).beta.messages.parse(body);
  await tally.flush();

  assert.equal(api.bodies.length, 8);
  const steps = fake.steps();
  assert.equal(steps.length, 8);
  assert.ok(steps.every((step) => step.feature === "second"));
});

const WEATHER_CALL = {
  id: "msg_tool_1",
  content: [{ type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Paris" } }],
  stop_reason: "tool_use",
  usage: { input_tokens: 30, output_tokens: 8, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
};
const WEATHER_UNITS = { model: ANTHROPIC_MODEL, inputTokens: 30, outputTokens: 8, cacheReadTokens: 0, cacheWriteTokens: 0, requests: 1 };
const weather = {
  type: "custom" as const,
  name: "weather",
  description: "The weather of a city",
  input_schema: { type: "object" as const, properties: { city: { type: "string" } } },
  run: () => "sunny",
};

test("beta.messages.toolRunner() records one step per request", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "agent" });
  api.replies.push(WEATHER_CALL);

  const final = await wrapped.beta.messages.toolRunner({ model: "claude-haiku-4-5", max_tokens: 100, messages: HI, tools: [weather] });
  await tally.flush();

  assert.equal(final.id, MESSAGE.id);
  assert.equal(api.bodies.length, 2);
  assert.deepEqual(
    fake.steps().map((step) => [step.feature, step["units"]]),
    [
      ["agent", WEATHER_UNITS],
      ["agent", MESSAGE_UNITS],
    ],
  );
});

test("a streaming toolRunner() (and one without a thread) records one step per request", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "agent" });
  api.replies.push(WEATHER_CALL);

  const runner = wrapped.beta.messages.toolRunner({ model: "claude-haiku-4-5", max_tokens: 100, messages: HI, tools: [weather], stream: true });
  for await (const stream of runner) for await (const _event of stream);
  api.replies.push(WEATHER_CALL);
  await wrapped.withOptions({ timeout: 5_000 }).beta.messages.toolRunner({ model: "claude-haiku-4-5", max_tokens: 100, messages: HI, tools: [weather], thread: false });
  await tally.flush();

  assert.equal(api.bodies.length, 4);
  assert.deepEqual(
    fake.steps().map((step) => [(step["metadata"] as { stream: boolean }).stream, step["units"]]),
    [
      [true, WEATHER_UNITS],
      [true, STREAM_UNITS],
      [false, WEATHER_UNITS],
      [false, MESSAGE_UNITS],
    ],
  );
});

test("a message thread's send() and stream() record one step per request", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "thread" });

  const thread = wrapped.beta.messages.thread({ model: "claude-haiku-4-5", max_tokens: 100 });
  await thread.send({ role: "user", content: "Hi" });
  await thread.send({ role: "user", content: "Again" });
  await thread.stream({ role: "user", content: "Once more" }).finalMessage();
  await tally.flush();

  assert.equal(api.bodies.length, 3);
  assert.deepEqual(
    fake.steps().map((step) => [step.feature, step["units"]]),
    [
      ["thread", MESSAGE_UNITS],
      ["thread", MESSAGE_UNITS],
      ["thread", STREAM_UNITS],
    ],
  );
});

test("asResponse() of a message and of a stream records the call", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapAnthropic(client, { tally, feature: "raw" });

  const message = await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI }).asResponse();
  assert.equal(((await message.json()) as { id: string }).id, MESSAGE.id);
  const stream = await wrapped.messages.create({ model: "claude-haiku-4-5", max_tokens: 10, messages: HI, stream: true }).asResponse();
  const text = await stream.text();
  await waitFor(() => tally.pending >= 2);
  await tally.flush();

  assert.equal(text.split("\n\n").filter((event) => event !== "").length, STREAM_EVENTS.length);
  assert.deepEqual(
    fake.steps().map((step) => step["units"]).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    [MESSAGE_UNITS, STREAM_UNITS].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
  );
});

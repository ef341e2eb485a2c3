/** wrapOpenAI with the real `openai` package against a local server that answers like OpenAI. */

import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { test } from "node:test";

import OpenAI from "openai";
import type { RunnableToolFunctionWithParse } from "openai/lib/RunnableFunction";
import type { ChatCompletionCreateParamsNonStreaming } from "openai/resources/chat/completions";

import type { TallyOptions } from "../../src/index.js";
import { wrapOpenAI } from "../../src/openai.js";
import { errorBody } from "../helpers/fake-tally.js";
import { COMPLETION, FakeOpenAI, OPENAI_MODEL, OPENAI_UNITS, RESPONSE_UNITS, TEXT_PIECES } from "../helpers/fake-providers.js";
import { logsOf } from "../helpers/logger.js";
import { setup, waitFor } from "../helpers/setup.js";

const HI = [{ role: "user" as const, content: "Hi" }];

async function fixture(t: TestContext, options: Partial<TallyOptions> = {}) {
  const base = await setup(t, options);
  const api = await FakeOpenAI.start();
  t.after(() => api.close());
  const client = new OpenAI({ apiKey: "sk-test", baseURL: api.baseURL, maxRetries: 0 });
  return { ...base, api, client };
}

test("a chat completion is recorded and returned unchanged", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat", userId: "user-1" });

  const completion = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI });
  await tally.flush();

  assert.deepEqual(JSON.parse(JSON.stringify(completion)), COMPLETION);
  const [body] = fake.bodies();
  assert.equal(body?.userId, "user-1");
  assert.equal(body?.steps.length, 1);
  const step = body?.steps[0];
  assert.equal(step?.["usageType"], "AI");
  assert.equal(step?.provider, "openai");
  assert.equal(step?.feature, "chat");
  assert.deepEqual(step?.["units"], OPENAI_UNITS);
  assert.ok(!("cost" in (step ?? {})));
  assert.deepEqual(step?.["metadata"], { api: "chat.completions", stream: false, responseId: "chatcmpl-abc123" });
});

test("per-call tally options are used and removed before the API sees the call", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  await wrapped.chat.completions.create({
    model: "gpt-4o",
    messages: HI,
    tally: { feature: "summarize", userId: "user-2", isBillableRun: true, metadata: { doc: 7 } },
  } as ChatCompletionCreateParamsNonStreaming);
  await tally.flush();

  assert.deepEqual(api.bodies, [{ model: "gpt-4o", messages: HI }]);
  const [body] = fake.bodies();
  assert.equal(body?.userId, "user-2");
  const step = body?.steps[0];
  assert.deepEqual(
    [step?.feature, step?.["isBillableRun"], (step?.["metadata"] as { doc: number }).doc],
    ["summarize", true, 7],
  );
});

test("calls of a client wrapped with a session join it", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const session = tally.session({ feature: "assistant", userId: "user-1" });
  const wrapped = wrapOpenAI(client, { tally, session });

  await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI });
  await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI });
  await session.complete();

  const [body, ...rest] = fake.bodies();
  assert.equal(rest.length, 0);
  assert.deepEqual(body?.session, { id: session.id, feature: "assistant", complete: true });
  assert.deepEqual(
    body?.steps.map((step) => step.feature),
    ["assistant", "assistant"],
  );
  assert.equal(body?.userId, "user-1");
});

test("a call with a reservation settles it and records the reservation's feature", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const reservation = await tally.reserve({
    estimate: { units: { model: "gpt-4o", inputTokens: 2000, outputTokens: 500 }, provider: "openai", feature: "summarize" },
  });
  const wrapped = wrapOpenAI(client, { tally });

  await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI, tally: { reservation } } as ChatCompletionCreateParamsNonStreaming);
  await tally.flush();

  const [step] = fake.steps();
  assert.equal(step?.["reservationId"], reservation.reservationId);
  assert.deepEqual([step?.provider, step?.feature], ["openai", "summarize"]);
  assert.equal((step?.["units"] as { model: string }).model, OPENAI_MODEL);
  assert.deepEqual(fake.bodies("release_spend"), []);
});

test("a stream passes its chunks through and records the final usage", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const stream = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI, stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  await tally.flush();

  assert.deepEqual(api.bodies[0]?.["stream_options"], { include_usage: true });
  assert.equal(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join(""), TEXT_PIECES.join(""));
  assert.ok(chunks.every((chunk) => chunk.choices.length > 0)); // the usage-only chunk the wrapper asked for is not shown
  assert.equal(chunks.at(-1)?.choices[0]?.finish_reason, "stop");
  const [step, ...rest] = fake.steps();
  assert.equal(rest.length, 0);
  assert.deepEqual(step?.["units"], OPENAI_UNITS);
  assert.equal((step?.["metadata"] as { stream: boolean }).stream, true);
});

test("a stream that asked for usage itself gets the usage chunk", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const stream = await wrapped.chat.completions.create({
    model: "gpt-4o",
    messages: HI,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  await tally.flush();

  assert.deepEqual(chunks.at(-1)?.choices, []);
  assert.equal(chunks.at(-1)?.usage?.prompt_tokens, 1200);
  assert.deepEqual(fake.steps()[0]?.["units"], OPENAI_UNITS);
});

test("a stream whose caller set include_usage false is still recorded, the usage chunk kept from the app", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const stream = await wrapped.chat.completions.create({
    model: "gpt-4o",
    messages: HI,
    stream: true,
    stream_options: { include_usage: false },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  await tally.flush();

  assert.deepEqual(api.bodies[0]?.["stream_options"], { include_usage: true });
  assert.equal(chunks.length, 5);
  assert.ok(chunks.every((chunk) => chunk.choices.length > 0));
  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [OPENAI_UNITS],
  );
});

test("a stream left early records nothing and is logged", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const stream = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI, stream: true });
  for await (const _chunk of stream) break;
  await tally.flush();

  assert.deepEqual(fake.steps(), []);
  assert.ok(logsOf(tally).at("warn").some((line) => line.includes("without usage")));
});

test("a stream read through toReadableStream() is recorded once", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const stream = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI, stream: true });
  const reader = stream.toReadableStream().getReader();
  while (!(await reader.read()).done);
  await tally.flush();

  assert.equal(fake.steps().length, 1);
});

test("withResponse() still works and the call is recorded", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const { data, response } = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI }).withResponse();
  await tally.flush();

  assert.equal(data.id, "chatcmpl-abc123");
  assert.equal(response.status, 200);
  assert.equal(fake.steps().length, 1);
});

/** The `data` of each event of an SSE text. */
function sseData(text: string): string[] {
  return text
    .split("\n\n")
    .filter((event) => event !== "")
    .map((event) => event.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n"));
}

test("asResponse() of a chat completion records the call; the app still reads the body", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const response = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI }).asResponse();
  assert.deepEqual(await response.json(), COMPLETION);
  await waitFor(() => tally.pending > 0);
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => [step.feature, step["units"]]),
    [["chat", OPENAI_UNITS]],
  );
});

test("asResponse() of a chat stream records its usage and keeps the usage chunk it asked for out of the bytes", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const response = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI, stream: true }).asResponse();
  const text = await response.text();
  await tally.flush();

  assert.deepEqual(api.bodies[0]?.["stream_options"], { include_usage: true });
  assert.equal(response.headers.get("content-type"), "text/event-stream");
  const data = sseData(text);
  assert.equal(data.at(-1), "[DONE]");
  const chunks = data.slice(0, -1).map((item) => JSON.parse(item) as { choices: unknown[]; usage?: unknown });
  assert.equal(chunks.length, 5);
  assert.ok(chunks.every((chunk) => chunk.choices.length > 0 && chunk.usage === null));
  assert.deepEqual(
    fake.steps().map((step) => [step["units"], step["metadata"]]),
    [[OPENAI_UNITS, { api: "chat.completions", stream: true, responseId: "chatcmpl-abc123" }]],
  );
});

test("asResponse() of a stream whose caller asked for usage passes the server's bytes on unchanged", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });
  const body = { model: "gpt-4o", messages: HI, stream: true as const, stream_options: { include_usage: true } };
  const direct = await (await fetch(`${api.baseURL}/chat/completions`, { method: "POST", body: JSON.stringify(body) })).text();

  const response = await wrapped.chat.completions.create(body).asResponse();
  const text = await response.text();
  await tally.flush();

  assert.equal(text, direct);
  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [OPENAI_UNITS],
  );
});

test("asResponse() of a responses stream records its final event, its bytes unchanged", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "agent" });
  const body = { model: "gpt-4.1", input: "Hi", stream: true as const };
  const direct = await (await fetch(`${api.baseURL}/responses`, { method: "POST", body: JSON.stringify(body) })).text();

  const text = await (await wrapped.responses.create(body).asResponse()).text();
  await tally.flush();

  assert.equal(text, direct);
  assert.deepEqual(
    fake.steps().map((step) => [step.feature, step["units"]]),
    [["agent", RESPONSE_UNITS]],
  );
});

test("a call awaited, then read raw, is recorded once; withResponse() of a stream too, its stream still read", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const parsed = wrapped.chat.completions.create({ model: "gpt-4o", messages: HI });
  await parsed;
  assert.equal((await parsed.asResponse()).status, 200);
  const { data: stream } = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI, stream: true }).withResponse();
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
  await tally.flush();

  assert.equal(text, TEXT_PIECES.join(""));
  assert.deepEqual(
    fake.steps().map((step) => (step["metadata"] as { stream: boolean }).stream),
    [false, true],
  );
});

/** Whether this runtime tells a TransformStream's transformer that its reader cancelled (Node 20+). */
async function transformCancels(): Promise<boolean> {
  let told = false;
  const transformer: Transformer & { cancel(): void } = { transform: (chunk, controller) => controller.enqueue(chunk), cancel: () => void (told = true) };
  const reader = new ReadableStream({ start: (controller) => controller.enqueue(1) }).pipeThrough(new TransformStream(transformer)).getReader();
  await reader.cancel();
  return told;
}

test("asResponse() of a stream the app cancels is recorded from the events that passed", async (t) => {
  if (!(await transformCancels())) return t.skip("this runtime does not tell a transformer of a cancel");
  const { fake, tally, api } = await fixture(t);
  const body = { model: "gpt-4o", messages: HI, stream: true, stream_options: { include_usage: true } };
  const events = await (await fetch(`${api.baseURL}/chat/completions`, { method: "POST", body: JSON.stringify(body) })).text();
  // A body that never ends: every event but `[DONE]` arrives, then the app cancels.
  const open = new ReadableStream<Uint8Array>({ start: (controller) => controller.enqueue(new TextEncoder().encode(events.replace("data: [DONE]\n\n", ""))) });
  const client = new OpenAI({ apiKey: "sk-test", baseURL: api.baseURL, maxRetries: 0, fetch: async () => new Response(open, { headers: { "content-type": "text/event-stream" } }) });
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const response = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI, stream: true }).asResponse();
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  await reader.read();
  await reader.cancel();
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [OPENAI_UNITS],
  );
});

test("asResponse() of a helper's call (parse) records it", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  await (await wrapped.chat.completions.parse({ model: "gpt-4o", messages: HI }).asResponse()).json();
  await waitFor(() => tally.pending > 0);
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [OPENAI_UNITS],
  );
});

test("a responses call is recorded", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "agent" });

  const response = await wrapped.responses.create({ model: "gpt-4.1", input: "Hi" });
  await tally.flush();

  assert.equal(response.output_text, "Salut");
  assert.equal(response.id, "resp_abc123");
  const [step] = fake.steps();
  assert.deepEqual(step?.["units"], RESPONSE_UNITS);
  assert.equal((step?.["metadata"] as { api: string }).api, "responses");
});

test("a responses stream is recorded from its completed event", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "agent" });

  const stream = await wrapped.responses.create({ model: "gpt-4.1", input: "Hi", stream: true });
  const types = [];
  for await (const event of stream) types.push(event.type);
  await tally.flush();

  assert.deepEqual(types, ["response.created", "response.output_text.delta", "response.completed"]);
  assert.deepEqual(fake.steps()[0]?.["units"], RESPONSE_UNITS);
});

test("an API error propagates and records nothing", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.failWith = 500;
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  await assert.rejects(wrapped.chat.completions.create({ model: "gpt-4o", messages: HI }), OpenAI.InternalServerError);
  await tally.flush();

  assert.deepEqual(fake.steps(), []);
});

test("a Tally outage never breaks the call", async (t) => {
  const { fake, make, client } = await fixture(t);
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 2);
  const tally = make({ flushIntervalMs: 30, maxRetries: 0 });
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const completion = await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI });

  assert.equal(completion.choices[0]?.message.content, "Bonjour !");
  await waitFor(() => fake.requests().length >= 3 && tally.pending === 0);
  assert.equal(new Set(fake.steps().map((step) => step.operationId)).size, 1);
  assert.ok(logsOf(tally).at("warn").some((line) => line.includes("background flush failed")));
});

test("an invalid per-call option is logged, never thrown", async (t) => {
  const { tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const completion = await wrapped.chat.completions.create({
    model: "gpt-4o",
    messages: HI,
    tally: { userId: "not a uid" },
  } as ChatCompletionCreateParamsNonStreaming);

  assert.equal(completion.id, "chatcmpl-abc123");
  assert.equal(tally.pending, 0);
  assert.ok(logsOf(tally).at("error").some((line) => line.includes("recording a openai chat.completions call failed")));
});

test("an invalid wrapper option throws when wrapping", async (t) => {
  const { tally, client } = await fixture(t);

  assert.throws(() => wrapOpenAI(client, { tally, feature: "bad feature" }), /feature/);
});

test("everything else is the client's own", async (t) => {
  const { tally, client } = await fixture(t);

  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  assert.equal(wrapped.apiKey, "sk-test");
  assert.equal(wrapped.models, client.models);
  assert.ok(wrapped instanceof OpenAI);
});

test("withOptions() keeps the wrapper", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  await wrapped.withOptions({ timeout: 5_000 }).chat.completions.create({ model: "gpt-4o", messages: HI });
  await tally.flush();

  assert.equal(fake.steps().length, 1);
});

test("an immediate-mode client records each call at once", async (t) => {
  const { fake, make, client } = await fixture(t);
  const tally = make({ mode: "immediate" });
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  await wrapped.chat.completions.create({ model: "gpt-4o", messages: HI });
  await tally.flush(); // waits for the send in progress (what `waitUntil` is given)

  assert.equal(fake.recorded.size, 1);
});

test("wrapping a wrapped client again updates its options and records each call once", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat", userId: "user-1" });
  const session = tally.session({ feature: "assistant", userId: "user-1" });

  await wrapOpenAI(wrapped, { tally, session }).chat.completions.create({ model: "gpt-4o", messages: HI });
  await session.complete();

  const steps = fake.steps();
  assert.equal(steps.length, 1);
  assert.equal(fake.bodies()[0]?.session?.id, session.id);
  assert.equal(steps[0]?.feature, "chat"); // the first wrapper's feature is kept
});

const WEATHER_CALL = {
  role: "assistant",
  content: null,
  refusal: null,
  tool_calls: [{ id: "call_1", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } }],
};
const WEATHER_TOOL: RunnableToolFunctionWithParse<{ city: string }> = {
  type: "function",
  function: {
    name: "weather",
    description: "The weather in a city",
    function: (args: { city: string }) => `sunny in ${args.city}`,
    parse: (input: string) => JSON.parse(input) as { city: string },
    parameters: { type: "object", properties: { city: { type: "string" } } },
  },
};

/** The steps' api and stream metadata and units. */
function recorded(fake: { steps(): Record<string, unknown>[] }): [string, boolean, unknown][] {
  return fake.steps().map((step) => {
    const metadata = step["metadata"] as { api: string; stream: boolean };
    return [metadata.api, metadata.stream, step["units"]];
  });
}

test("chat.completions.parse() is recorded once, with its per-call options", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const completion = await wrapped.chat.completions.parse({ model: "gpt-4o", messages: HI, tally: { feature: "extract" } } as ChatCompletionCreateParamsNonStreaming);
  await tally.flush();

  assert.equal(completion.choices[0]?.message.content, "Bonjour !");
  assert.ok(!("tally" in (api.bodies[0] ?? {})));
  assert.deepEqual(recorded(fake), [["chat.completions", false, OPENAI_UNITS]]);
  assert.equal(fake.steps()[0]?.feature, "extract");
});

test("chat.completions.stream() asks for usage, keeps its chunk from the app and is recorded once", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const runner = wrapped.chat.completions.stream({ model: "gpt-4o", messages: HI });
  const chunks: number[] = [];
  runner.on("chunk", (chunk) => chunks.push(chunk.choices.length));
  const completion = await runner.finalChatCompletion();
  await tally.flush();

  assert.equal(completion.choices[0]?.message.content, TEXT_PIECES.join(""));
  assert.deepEqual(api.bodies[0]?.["stream_options"], { include_usage: true });
  assert.ok(chunks.length === 5 && chunks.every((length) => length > 0));
  assert.deepEqual(recorded(fake), [["chat.completions", true, OPENAI_UNITS]]);
});

test("chat.completions.runTools() records one step per request", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.replies.push(WEATHER_CALL);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const content = await wrapped.chat.completions.runTools({ model: "gpt-4o", messages: HI, tools: [WEATHER_TOOL] }).finalContent();
  await tally.flush();

  assert.equal(content, "Bonjour !");
  assert.equal(api.bodies.length, 2);
  assert.deepEqual((api.bodies[1]?.["messages"] as { content: string }[] | undefined)?.at(-1)?.content, "sunny in Paris");
  assert.deepEqual(recorded(fake), [
    ["chat.completions", false, OPENAI_UNITS],
    ["chat.completions", false, OPENAI_UNITS],
  ]);
});

test("a streaming runTools() records one step per request", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.replies.push(WEATHER_CALL);
  const wrapped = wrapOpenAI(client, { tally, feature: "chat" });

  const content = await wrapped.chat.completions.runTools({ model: "gpt-4o", messages: HI, tools: [WEATHER_TOOL], stream: true }).finalContent();
  await tally.flush();

  assert.equal(content, TEXT_PIECES.join(""));
  assert.deepEqual(
    api.bodies.map((body) => body["stream_options"]),
    [{ include_usage: true }, { include_usage: true }],
  );
  assert.deepEqual(recorded(fake), [
    ["chat.completions", true, OPENAI_UNITS],
    ["chat.completions", true, OPENAI_UNITS],
  ]);
});

test("responses.parse() is recorded once", async (t) => {
  const { fake, tally, client } = await fixture(t);
  const wrapped = wrapOpenAI(client, { tally, feature: "agent" });

  const response = await wrapped.responses.parse({ model: "gpt-4.1", input: "Hi" });
  await tally.flush();

  assert.equal(response.output_text, "Salut");
  assert.deepEqual(recorded(fake), [["responses", false, RESPONSE_UNITS]]);
});

test("responses.stream() is recorded once", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.itemEvents = true;
  const wrapped = wrapOpenAI(client, { tally, feature: "agent" });

  const response = await wrapped.responses.stream({ model: "gpt-4.1", input: "Hi" }).finalResponse();
  await tally.flush();

  assert.equal(response.output_text, "Salut");
  assert.deepEqual(recorded(fake), [["responses", true, RESPONSE_UNITS]]);
});

test("a client wrapped twice records each request of every helper once, with the newer options", async (t) => {
  const { fake, tally, api, client } = await fixture(t);
  api.itemEvents = true;
  api.replies.push(WEATHER_CALL);
  const twice = wrapOpenAI(wrapOpenAI(client, { tally, feature: "first" }), { tally, feature: "second" });

  await twice.chat.completions.runTools({ model: "gpt-4o", messages: HI, tools: [WEATHER_TOOL] }).finalContent();
  await twice.chat.completions.create({ model: "gpt-4o", messages: HI });
  await twice.chat.completions.parse({ model: "gpt-4o", messages: HI });
  await twice.chat.completions.stream({ model: "gpt-4o", messages: HI }).finalChatCompletion();
  await twice.responses.create({ model: "gpt-4.1", input: "Hi" });
  await twice.responses.parse({ model: "gpt-4.1", input: "Hi" });
  await twice.responses.stream({ model: "gpt-4.1", input: "Hi" }).finalResponse();
  await twice.withOptions({ timeout: 5_000 }).chat.completions.parse({ model: "gpt-4o", messages: HI });
  await tally.flush();

  assert.equal(api.bodies.length, 9);
  const steps = fake.steps();
  assert.equal(steps.length, 9);
  assert.ok(steps.every((step) => step.feature === "second"));
});

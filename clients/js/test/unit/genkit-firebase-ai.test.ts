/** Genkit usage (plain response objects) and Firebase AI Logic (the real `firebase/ai` against a local server). */

import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { test } from "node:test";

import { deleteApp, initializeApp } from "firebase/app";
import { GoogleAIBackend, getAI, getGenerativeModel } from "firebase/ai";

import { recordFirebaseAI, usageMetadataUnits, wrapGenerativeModel } from "../../src/firebase-ai.js";
import { genkitMiddleware, genkitUnits, recordGenkit, splitGenkitModel } from "../../src/genkit.js";
import { LocalServer, sendEvents, sendJson } from "../helpers/http.js";
import { logsOf } from "../helpers/logger.js";
import { setup, waitFor } from "../helpers/setup.js";

const GENKIT_USAGE = { inputTokens: 1200, outputTokens: 300, thoughtsTokens: 50, cachedContentTokens: 200, totalTokens: 1550 };
const GENKIT_UNITS = { model: "gemini-2.5-flash", inputTokens: 1000, outputTokens: 350, cacheReadTokens: 200, cacheWriteTokens: 0, requests: 1 };

test("a Genkit usage maps to units: cached input apart, thoughts counted as output", () => {
  assert.deepEqual(genkitUnits("gemini-2.5-flash", GENKIT_USAGE), GENKIT_UNITS);
  assert.deepEqual(splitGenkitModel("googleai/gemini-2.5-flash", undefined), ["google", "gemini-2.5-flash"]);
  assert.deepEqual(splitGenkitModel("vertexai/gemini-2.5-pro", undefined), ["google", "gemini-2.5-pro"]);
  assert.deepEqual(splitGenkitModel("openai/gpt-4o", undefined), ["openai", "gpt-4o"]);
  assert.deepEqual(splitGenkitModel("gemini-2.5-flash", "vertex"), ["vertex", "gemini-2.5-flash"]);
});

test("recordGenkit records a response's usage under the model's provider", async (t) => {
  const { fake, tally } = await setup(t);

  recordGenkit({ text: "hi", usage: GENKIT_USAGE }, { tally, feature: "chat", userId: "user-1", model: "googleai/gemini-2.5-flash" });
  await tally.flush();

  const [body] = fake.bodies();
  assert.equal(body?.userId, "user-1");
  const step = body?.steps[0];
  assert.deepEqual([step?.provider, step?.feature], ["google", "chat"]);
  assert.deepEqual(step?.["units"], GENKIT_UNITS);
});

test("genkitMiddleware records every response it passes on, with the model the plugin answered", async (t) => {
  const { fake, tally } = await setup(t);
  const middleware = genkitMiddleware({ tally, feature: "chat", provider: "google" });
  const data = { message: { role: "model", content: [{ text: "hi" }] }, usage: GENKIT_USAGE, custom: { modelVersion: "gemini-2.5-flash" } };

  const response = await middleware({ messages: [] }, async () => data);
  await tally.flush();

  assert.equal(response, data);
  assert.deepEqual(fake.steps()[0]?.["units"], GENKIT_UNITS);
  assert.equal(middleware.length, 2); // Genkit tells simple middleware (req, next) by its arity
});

test("a Genkit response without usage is logged, not recorded", async (t) => {
  const { tally } = await setup(t);

  recordGenkit({ text: "hi" }, { tally, feature: "chat", model: "googleai/gemini-2.5-flash" });

  assert.equal(tally.pending, 0);
  assert.ok(logsOf(tally).at("warn").some((line) => line.includes("no usage")));
});

const USAGE_METADATA = {
  promptTokenCount: 1200,
  candidatesTokenCount: 300,
  thoughtsTokenCount: 50,
  cachedContentTokenCount: 200,
  totalTokenCount: 1550,
};
const GEMINI_UNITS = { model: "gemini-2.5-flash", inputTokens: 1000, outputTokens: 350, cacheReadTokens: 200, cacheWriteTokens: 0, requests: 1 };

function geminiResponse(text: string, usage: unknown): Record<string, unknown> {
  return {
    candidates: [{ content: { role: "model", parts: [{ text }] }, finishReason: "STOP", index: 0 }],
    usageMetadata: usage,
    modelVersion: "gemini-2.5-flash",
    responseId: "resp-1",
  };
}

async function firebaseAI(t: TestContext) {
  const base = await setup(t);
  const server = await LocalServer.start();
  const path = "/v1beta/projects/demo-tally/models/gemini-2.5-flash";
  server.route(`${path}:generateContent`, (_request, res) => sendJson(res, 200, geminiResponse("Bonjour", USAGE_METADATA)));
  server.route(`${path}:streamGenerateContent`, (_request, res) =>
    sendEvents(res, [geminiResponse("Bon", undefined), geminiResponse("jour", USAGE_METADATA)], { done: false }),
  );
  const app = initializeApp({ apiKey: "fake-api-key", projectId: "demo-tally", appId: "1:1:web:1" }, `ai-${Math.random()}`);
  t.after(async () => {
    await deleteApp(app);
    await server.close();
  });
  const ai = getAI(app, { backend: new GoogleAIBackend() });
  const model = getGenerativeModel(ai, { model: "gemini-2.5-flash" }, { baseUrl: server.url });
  return { ...base, model, ai, server, path };
}

test("usageMetadata maps to units: cached input apart, thoughts and tool-use prompts counted", () => {
  assert.deepEqual(usageMetadataUnits("gemini-2.5-flash", USAGE_METADATA), GEMINI_UNITS);
  assert.deepEqual(usageMetadataUnits("gemini-2.5-flash", { ...USAGE_METADATA, toolUsePromptTokenCount: 30 }), {
    ...GEMINI_UNITS,
    inputTokens: 1030,
  });
});

test("a wrapped Firebase AI Logic model records generateContent", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const wrapped = wrapGenerativeModel(model, { tally, feature: "chat", userId: "user-1" });

  const result = await wrapped.generateContent("Hi");
  await tally.flush();

  assert.equal(result.response.text(), "Bonjour");
  const step = fake.steps()[0];
  assert.deepEqual([step?.provider, step?.feature], ["google", "chat"]);
  assert.deepEqual(step?.["units"], GEMINI_UNITS);
});

test("a wrapped Firebase AI Logic model records a stream once its response is complete", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const wrapped = wrapGenerativeModel(model, { tally, feature: "chat" });

  const result = await wrapped.generateContentStream("Hi");
  let text = "";
  for await (const chunk of result.stream) text += chunk.text();
  await result.response;
  await tally.flush();

  assert.equal(text, "Bonjour");
  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [GEMINI_UNITS],
  );
});

test("a chat of a wrapped model is recorded, and recordFirebaseAI records by hand", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const wrapped = wrapGenerativeModel(model, { tally, feature: "assistant" });

  await wrapped.startChat().sendMessage("Hi");
  recordFirebaseAI(await model.generateContent("Hi"), { tally, feature: "manual", model: "gemini-2.5-flash" });
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => step.feature),
    ["assistant", "manual"],
  );
});

test("a wrapped model records a stream whose app only awaits its response, from the last chunk's usage", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const wrapped = wrapGenerativeModel(model, { tally, feature: "chat" });

  const response = await (await wrapped.generateContentStream("Hi")).response;
  await (await wrapped.startChat().sendMessageStream("Hi")).response;
  await tally.flush();

  assert.equal(response.text(), "Bonjour");
  assert.equal(response.usageMetadata, undefined); // the SDK's aggregated response carries none
  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [GEMINI_UNITS, GEMINI_UNITS],
  );
});

test("a wrapped model records a stream the app stops reading early, once", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const wrapped = wrapGenerativeModel(model, { tally, feature: "chat" });

  const result = await wrapped.generateContentStream("Hi");
  for await (const chunk of result.stream) {
    assert.equal(chunk.text(), "Bon");
    break;
  }
  await result.response;
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [GEMINI_UNITS],
  );
});

test("a wrapped model records a stream the app neither reads nor awaits, once it ends", async (t) => {
  const { fake, tally } = await setup(t);
  let end = (): void => undefined;
  const gate = new Promise<void>((resolve) => (end = () => resolve()));
  async function* chunks(): AsyncGenerator<unknown> {
    yield geminiResponse("Bon", undefined);
    await gate;
    yield geminiResponse("jour", USAGE_METADATA);
  }
  const model = { model: "models/gemini-2.5-flash", generateContentStream: async () => ({ stream: chunks(), response: gate.then(() => ({})) }) };
  const wrapped = wrapGenerativeModel(model, { tally, feature: "chat" });

  await wrapped.generateContentStream();
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(tally.pending, 0);
  end();
  await waitFor(() => tally.pending > 0, 2000);
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [GEMINI_UNITS],
  );
});

test("re-wrapping a wrapped model (or chat) wraps the original with updated options: each call is recorded once", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const wrapped = wrapGenerativeModel(model, { tally, feature: "chat", userId: "user-1" });
  const twice = wrapGenerativeModel(wrapped, { tally, feature: "assistant" });

  await twice.generateContent("Hi");
  await twice.startChat().sendMessage("Hi");
  await (await twice.startChat().sendMessageStream("Hi")).response;
  await wrapGenerativeModel(wrapped.startChat(), { tally, feature: "assistant" }).sendMessage("Hi");
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => step.feature),
    ["assistant", "assistant", "assistant", "assistant"],
  );
  assert.ok(fake.bodies().every((body) => body.userId === "user-1"));
});

test("two wrappers of one chat each record with their own options", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const chat = wrapGenerativeModel(model, { tally, feature: "base" }).startChat();
  const first = wrapGenerativeModel(chat, { tally, feature: "request1", metadata: { request: 1 } });
  const second = wrapGenerativeModel(chat, { tally, feature: "request2", metadata: { request: 2 } });

  await first.sendMessage("Hi");
  await (await second.sendMessageStream("Hi")).response;
  await first.sendMessage("Again");
  await chat.sendMessage("And the chat itself");
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => [step.feature, (step["metadata"] as Record<string, unknown>)["request"]]),
    [
      ["request1", 1],
      ["request2", 2],
      ["request1", 1],
      ["base", undefined],
    ],
  );
  assert.equal((await chat.getHistory()).length, 8); // one conversation: every wrapper's turns are the chat's
});

test("a raw chat records nothing after it was wrapped", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const raw = model.startChat();
  wrapGenerativeModel(raw, { tally, feature: "wrapped-once" });

  await raw.sendMessage("Hi");
  await (await raw.sendMessageStream("Hi")).response;
  await tally.flush();

  assert.deepEqual(fake.steps(), []);
  assert.equal(tally.pending, 0);
});

const TOOL_USAGE = { promptTokenCount: 100, candidatesTokenCount: 10, totalTokenCount: 110 };
const TOOL_UNITS = { model: "gemini-2.5-flash", inputTokens: 100, outputTokens: 10, cacheReadTokens: 0, cacheWriteTokens: 0, requests: 1 };

/** A model with a callable `weather` tool whose server answers a function call, then (given its result) text. */
async function toolModel(t: TestContext) {
  const base = await firebaseAI(t);
  const called: unknown[] = [];
  const answer = (body: unknown): Record<string, unknown> => {
    const contents = (body as { contents: { parts: Record<string, unknown>[] }[] }).contents;
    if (contents.at(-1)?.parts.some((part) => part["functionResponse"] !== undefined)) return geminiResponse("Sunny, 20°C", USAGE_METADATA);
    const call = { functionCall: { name: "weather", args: { city: "Paris" } } };
    return { ...geminiResponse("", TOOL_USAGE), candidates: [{ content: { role: "model", parts: [call] }, finishReason: "STOP", index: 0 }] };
  };
  base.server.route(`${base.path}:generateContent`, (request, res) => sendJson(res, 200, answer(request.body)));
  base.server.route(`${base.path}:streamGenerateContent`, (request, res) => sendEvents(res, [answer(request.body)], { done: false }));
  const weather = { name: "weather", description: "The weather of a city", functionReference: (args: unknown) => (called.push(args), { sky: "sunny" }) };
  const model = getGenerativeModel(base.ai, { model: "gemini-2.5-flash", tools: [{ functionDeclarations: [weather] }] }, { baseUrl: base.server.url });
  return { ...base, model, called };
}

test("a chat with automatic function calling records every model call of a sendMessage, with its usage", async (t) => {
  const { fake, tally, model, called } = await toolModel(t);
  const chat = wrapGenerativeModel(model, { tally, feature: "agent" }).startChat();

  const result = await chat.sendMessage("Weather in Paris?");
  await tally.flush();

  assert.equal(result.response.text(), "Sunny, 20°C");
  assert.deepEqual(called, [{ city: "Paris" }]);
  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [TOOL_UNITS, GEMINI_UNITS],
  );
});

test("a chat with automatic function calling records every model call of a sendMessageStream", async (t) => {
  const { fake, tally, model, called } = await toolModel(t);
  const chat = wrapGenerativeModel(wrapGenerativeModel(model, { tally, feature: "agent" }), { tally }).startChat();

  const result = await chat.sendMessageStream("Weather in Paris?");
  let text = "";
  for await (const chunk of result.stream) text += chunk.text();
  await result.response;
  await tally.flush();

  assert.equal(text, "Sunny, 20°C");
  assert.deepEqual(called, [{ city: "Paris" }]);
  assert.deepEqual(
    fake.steps().map((step) => step["units"]),
    [TOOL_UNITS, GEMINI_UNITS],
  );
});

test("a plain chat records one step per message; a chat without the SDK's internals is recorded at sendMessage", async (t) => {
  const { fake, tally, model } = await firebaseAI(t);
  const chat = wrapGenerativeModel(model, { tally, feature: "chat" }).startChat();
  const plain = { model: "gemini-2.5-flash", startChat: () => ({ sendMessage: async () => ({ response: geminiResponse("Hi", USAGE_METADATA) }) }) };

  await chat.sendMessage("Hi");
  await chat.sendMessage("Again");
  await (await chat.sendMessageStream("Once more")).response;
  await wrapGenerativeModel(plain, { tally, feature: "fake" }).startChat().sendMessage();
  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => [step.feature, step["units"]]),
    [
      ["chat", GEMINI_UNITS],
      ["chat", GEMINI_UNITS],
      ["chat", GEMINI_UNITS],
      ["fake", GEMINI_UNITS],
    ],
  );
});

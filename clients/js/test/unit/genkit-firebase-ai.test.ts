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
import { setup } from "../helpers/setup.js";

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
  return { ...base, model };
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

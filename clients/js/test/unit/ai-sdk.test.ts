/** tallyMiddleware with the real `ai` and `@ai-sdk/openai` packages against a local server that answers like OpenAI. */

import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { test } from "node:test";

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, wrapLanguageModel } from "ai";

import { aiSdkUnits, tallyMiddleware } from "../../src/ai-sdk.js";
import { FakeOpenAI, OPENAI_UNITS, RESPONSE_UNITS, TEXT_PIECES } from "../helpers/fake-providers.js";
import { setup } from "../helpers/setup.js";

async function fixture(t: TestContext) {
  const base = await setup(t);
  const api = await FakeOpenAI.start();
  t.after(() => api.close());
  const provider = createOpenAI({ apiKey: "sk-test", baseURL: api.baseURL });
  return { ...base, api, provider };
}

test("generateText is recorded with the answering model and its usage", async (t) => {
  const { fake, tally, provider } = await fixture(t);
  const model = wrapLanguageModel({ model: provider.chat("gpt-4o"), middleware: tallyMiddleware({ tally, feature: "chat", userId: "user-1" }) });

  const result = await generateText({ model, prompt: "Hi" });
  await tally.flush();

  assert.equal(result.text, "Bonjour !");
  const [body] = fake.bodies();
  assert.equal(body?.userId, "user-1");
  const step = body?.steps[0];
  assert.deepEqual([step?.provider, step?.feature, step?.["usageType"]], ["openai", "chat", "AI"]);
  assert.deepEqual(step?.["units"], OPENAI_UNITS);
  assert.deepEqual(step?.["metadata"], { api: "ai-sdk", stream: false, responseId: "chatcmpl-abc123" });
});

test("streamText is recorded once its stream finishes", async (t) => {
  const { fake, tally, api, provider } = await fixture(t);
  const model = wrapLanguageModel({ model: provider.chat("gpt-4o"), middleware: tallyMiddleware({ tally, feature: "chat" }) });

  const result = streamText({ model, prompt: "Hi" });
  let text = "";
  for await (const piece of result.textStream) text += piece;
  await tally.flush();

  assert.equal(text, TEXT_PIECES.join(""));
  assert.deepEqual(api.bodies[0]?.["stream_options"], { include_usage: true });
  const [step, ...rest] = fake.steps();
  assert.equal(rest.length, 0);
  assert.deepEqual(step?.["units"], OPENAI_UNITS);
  assert.equal((step?.["metadata"] as { stream: boolean }).stream, true);
});

test("the Responses API model is recorded too", async (t) => {
  const { fake, tally, provider } = await fixture(t);
  const model = wrapLanguageModel({ model: provider.responses("gpt-4.1"), middleware: tallyMiddleware({ tally, feature: "agent" }) });

  const result = await generateText({ model, prompt: "Hi" });
  await tally.flush();

  assert.equal(result.text, "Salut");
  assert.deepEqual(fake.steps()[0]?.["units"], RESPONSE_UNITS);
});

test("a call may name its own feature and user in providerOptions.tally", async (t) => {
  const { fake, tally, provider } = await fixture(t);
  const model = wrapLanguageModel({ model: provider.chat("gpt-4o"), middleware: tallyMiddleware({ tally, feature: "chat" }) });

  await generateText({ model, prompt: "Hi", providerOptions: { tally: { feature: "summarize", userId: "user-2", isBillableRun: true } } });
  await tally.flush();

  const [body] = fake.bodies();
  assert.equal(body?.userId, "user-2");
  assert.deepEqual([body?.steps[0]?.feature, body?.steps[0]?.["isBillableRun"]], ["summarize", true]);
});

test("a middleware given a session records into it", async (t) => {
  const { fake, tally, provider } = await fixture(t);
  const session = tally.session({ feature: "assistant", userId: "user-1" });
  const model = wrapLanguageModel({ model: provider.chat("gpt-4o"), middleware: tallyMiddleware({ tally, session }) });

  await generateText({ model, prompt: "Hi" });
  await session.complete();

  const [body] = fake.bodies();
  assert.equal(body?.session?.id, session.id);
  assert.equal(body?.steps[0]?.feature, "assistant");
});

test("AI SDK usage shapes map to Tally units (v6 objects, v5 numbers, Anthropic's 1-hour writes)", () => {
  assert.deepEqual(
    aiSdkUnits("claude-sonnet-4-5", {
      inputTokens: { total: 1600, noCache: 100, cacheRead: 0, cacheWrite: 1500 },
      outputTokens: { total: 50, text: 50, reasoning: undefined },
      raw: { cache_creation: { ephemeral_5m_input_tokens: 500, ephemeral_1h_input_tokens: 1000 } },
    }),
    { model: "claude-sonnet-4-5", inputTokens: 100, outputTokens: 50, cacheReadTokens: 0, cacheWriteTokens: 500, cacheWrite1hTokens: 1000, requests: 1 },
  );
  assert.deepEqual(aiSdkUnits("gpt-4o", { inputTokens: 1200, outputTokens: 350, cachedInputTokens: 200 }), OPENAI_UNITS_OF("gpt-4o"));
  assert.deepEqual(
    aiSdkUnits("gemini-2.5-flash", { inputTokens: { total: 10, noCache: undefined, cacheRead: 4, cacheWrite: undefined }, outputTokens: { total: undefined, text: 3, reasoning: 7 } }),
    { model: "gemini-2.5-flash", inputTokens: 6, outputTokens: 10, cacheReadTokens: 4, cacheWriteTokens: 0, requests: 1 },
  );
});

function OPENAI_UNITS_OF(model: string) {
  return { ...OPENAI_UNITS, model };
}

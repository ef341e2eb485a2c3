// The acceptance check of @tally/client, run by scripts/pack-check.sh from an empty project where the
// packed tarball, the real `openai` package and `firebase-admin` were installed. Against the emulators
// (TALLY_FUNCTIONS_URL, FIREBASE_AUTH_EMULATOR_HOST, GCLOUD_PROJECT): a wrapped chat completion, a
// stream, a session and a gated call, priced by an admin's catalog price, must make the user's
// my_usage equal, to the nano, to a price computed here; then a backend with only the Admin SDK and
// recorderToken records for that user. Without the emulators it only checks that every export loads.
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";

import OpenAI from "openai";
import { BudgetExceeded, Tally } from "@tally/client";
import { wrapOpenAI } from "@tally/client/openai";
import { wrapAnthropic } from "@tally/client/anthropic";
import { tallyMiddleware } from "@tally/client/ai-sdk";
import { recordGenkit } from "@tally/client/genkit";
import { wrapGenerativeModel } from "@tally/client/firebase-ai";
import { recorderToken } from "@tally/client/admin";

const loaded = [Tally, BudgetExceeded, wrapOpenAI, wrapAnthropic, tallyMiddleware, recordGenkit, wrapGenerativeModel, recorderToken];
if (!loaded.every((value) => typeof value === "function")) throw new Error("an export did not load");

const FUNCTIONS_URL = (process.env.TALLY_FUNCTIONS_URL ?? "").replace(/\/+$/, "");
const AUTH_HOST = process.env.FIREBASE_AUTH_EMULATOR_HOST ?? "";
const PROJECT = process.env.GCLOUD_PROJECT ?? "demo-tally";
if (!FUNCTIONS_URL || !AUTH_HOST) {
  console.log("smoke: every export loads; the emulators are not running (TALLY_FUNCTIONS_URL unset): nothing recorded");
  process.exit(0);
}

const unique = () => randomBytes(6).toString("hex");
const USAGE = { prompt_tokens: 1200, completion_tokens: 350, total_tokens: 1550, prompt_tokens_details: { cached_tokens: 200 } };
const PRICES = { inputMTok: "2.5", outputMTok: "10", cacheReadMTok: "0.0012345" };

async function post(url, body, headers = {}) {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify(body) });
  const text = await response.text();
  if (!response.ok) throw new Error(`${url} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

async function makeUser(claims) {
  const uid = `smoke-${unique()}`;
  const email = `${uid}@example.com`;
  const password = "correct-horse-battery";
  const toolkit = `http://${AUTH_HOST}/identitytoolkit.googleapis.com/v1`;
  const owner = { Authorization: "Bearer owner" };
  await post(`${toolkit}/projects/${PROJECT}/accounts`, { localId: uid, email, password }, owner);
  if (claims) await post(`${toolkit}/projects/${PROJECT}/accounts:update`, { localId: uid, customAttributes: JSON.stringify(claims) }, owner);
  const { idToken } = await post(`${toolkit}/accounts:signInWithPassword?key=fake-api-key`, { email, password, returnSecureToken: true });
  return { uid, token: idToken };
}

const callable = async (name, user, data = {}) =>
  (await post(`${FUNCTIONS_URL}/${name}`, { data }, { Authorization: `Bearer ${user.token}` })).result;

/** Nano-USD of one step at PRICES: every count times its price, summed exactly, rounded once half-even. */
function stepNanos(counts) {
  let numerator = 0n;
  let denominator = 1n;
  for (const [key, count] of Object.entries(counts)) {
    const [whole, fraction = ""] = PRICES[key].split(".");
    const scale = 10n ** BigInt(fraction.length);
    numerator = numerator * scale + BigInt(count) * BigInt(whole + fraction) * 1000n * denominator;
    denominator *= scale;
  }
  const quotient = numerator / denominator;
  const twice = (numerator % denominator) * 2n;
  return twice > denominator || (twice === denominator && quotient % 2n === 1n) ? quotient + 1n : quotient;
}

/** A local server that answers chat completions like OpenAI, with the given model. */
async function fakeOpenAI(model) {
  const chunk = (delta, extra = {}) => ({ id: "chatcmpl-smoke", object: "chat.completion.chunk", created: 1, model, choices: [{ index: 0, delta, finish_reason: null }], ...extra });
  const server = createServer(async (req, res) => {
    let raw = "";
    for await (const piece of req) raw += piece;
    const body = JSON.parse(raw);
    if (!body.stream) {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ id: "chatcmpl-smoke", object: "chat.completion", created: 1, model, choices: [{ index: 0, message: { role: "assistant", content: "Bonjour" }, finish_reason: "stop" }], usage: USAGE }));
      return;
    }
    res.writeHead(200, { "Content-Type": "text/event-stream" });
    for (const event of [chunk({ role: "assistant", content: "Bon" }), chunk({ content: "jour" }), { ...chunk({}), choices: [], usage: body.stream_options?.include_usage ? USAGE : null }]) {
      res.write(`data: ${JSON.stringify(event)}\n\n`);
    }
    res.end("data: [DONE]\n\n");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { baseURL: `http://127.0.0.1:${server.address().port}/v1`, close: () => new Promise((resolve) => server.close(resolve)) };
}

const [admin, user] = await Promise.all([makeUser({ admin: true }), makeUser()]);
const base = `smoke-model-${unique()}`;
await callable("set_price", admin, { provider: "openai", model: base, prices: Object.fromEntries(Object.entries(PRICES).map(([k, v]) => [k, Number(v)])) });
const api = await fakeOpenAI(`${base}-2024-08-06`);
const tally = new Tally({ functionsUrl: FUNCTIONS_URL, idToken: () => user.token, flushIntervalMs: null });
const openai = wrapOpenAI(new OpenAI({ apiKey: "sk-smoke", baseURL: api.baseURL, maxRetries: 0 }), { tally, feature: "chat" });
const messages = [{ role: "user", content: "Hi" }];

await openai.chat.completions.create({ model: base, messages }); // a wrapped chat completion
let streamed = "";
for await (const part of await openai.chat.completions.create({ model: base, messages, stream: true })) streamed += part.choices[0]?.delta?.content ?? ""; // a stream
const session = tally.session({ feature: "assistant" }); // a session
await wrapOpenAI(openai, { tally, session }).chat.completions.create({ model: base, messages });
session.step({ provider: "google_maps", feature: "google_maps_autocomplete", cost: "0.00283" });
await session.complete();
const reservation = await tally.reserve({ estimate: { units: { model: base, inputTokens: 2000, outputTokens: 500 }, provider: "openai", isBillableRun: true } }); // a gated call
await wrapOpenAI(openai, { tally, reservation, isBillableRun: true }).chat.completions.create({ model: base, messages });
await tally.close();
await api.close();

const call = stepNanos({ inputMTok: 1000, outputMTok: 350, cacheReadMTok: 200 });
const expected = 4n * call + 2_830_000n;
const usage = await callable("my_usage", user);
const got = BigInt(Math.round(usage.totalCost * 1e9));
console.log(`smoke: ${usage.apiCalls} steps, my_usage ${got} nano-USD, computed ${expected} (${call} per call), stream "${streamed}"`);
if (got !== expected || usage.apiCalls !== 5 || streamed !== "Bonjour" || tally.refused.length > 0) {
  console.error("smoke: FAILED: my_usage does not match the independent computation");
  process.exit(1);
}

// A backend with only the Admin SDK and recorderToken records for that user.
const { initializeApp, deleteApp } = await import("firebase-admin/app");
const app = initializeApp({ projectId: PROJECT }, `smoke-${unique()}`);
const backend = new Tally({ functionsUrl: FUNCTIONS_URL, idToken: recorderToken({ app, uid: `smoke-backend-${unique()}` }), flushIntervalMs: null });
backend.record({ feature: "chat", provider: "openai", cost: "0.125", userId: user.uid });
await backend.close();
await deleteApp(app);
const after = BigInt(Math.round((await callable("my_usage", user)).totalCost * 1e9));
console.log(`smoke: after the backend's step: ${after} nano-USD (expected ${expected + 125_000_000n})`);
if (after !== expected + 125_000_000n || backend.refused.length > 0) {
  console.error("smoke: FAILED: the backend's step was not recorded for the user");
  process.exit(1);
}
console.log("smoke: passed");

/**
 * `@tally/client/firebase-ai`: record a Firebase AI Logic response's `usageMetadata` as one AI step,
 * by hand (`recordFirebaseAI`) or for every call of a wrapped `GenerativeModel`
 * (`generateContent`, `generateContentStream`, and the chats of `startChat`).
 * The `firebase` package is never imported.
 */

import { checkOptions, count, field, modelName, recordCall, unwrap, type RecordOptions } from "./recording.js";
import { resource } from "./resource.js";
import type { Units } from "./values.js";

export type { RecordOptions } from "./recording.js";

/** Options of the Firebase AI Logic helpers: where calls are recorded, and the model and provider. */
export interface FirebaseAIRecordOptions extends RecordOptions {
  /** The model name (default: the response's `modelVersion`, else the wrapped model's). */
  model?: string | undefined;
  /** The provider's name in Tally (`google`). */
  provider?: string | undefined;
}

/** Tally units of a Gemini `usageMetadata`: cached input apart, tool-use prompts as input, thoughts as output. */
export function usageMetadataUnits(model: unknown, usageMetadata: unknown): Units {
  const prompt = count(field(usageMetadata, "promptTokenCount")) + count(field(usageMetadata, "toolUsePromptTokenCount"));
  const cached = Math.min(count(field(usageMetadata, "cachedContentTokenCount")), prompt);
  return {
    model: modelName(model),
    inputTokens: prompt - cached,
    outputTokens: count(field(usageMetadata, "candidatesTokenCount")) + count(field(usageMetadata, "thoughtsTokenCount")),
    cacheReadTokens: cached,
    cacheWriteTokens: 0,
    requests: 1,
  };
}

/** Return a model name without its path (`publishers/google/models/gemini-2.5-flash` → `gemini-2.5-flash`). */
export function shortModelName(name: string): string {
  const cut = name.lastIndexOf("/");
  return cut < 0 ? name : name.slice(cut + 1);
}

function recordResponse(response: unknown, options: FirebaseAIRecordOptions, fallbackModel: unknown, stream: boolean): void {
  try {
    const usage = field(response, "usageMetadata");
    if (typeof usage !== "object" || usage === null) {
      options.tally.logger.warn("tally: a Firebase AI response carried no usageMetadata; nothing recorded");
      return;
    }
    const answered = field(response, "modelVersion");
    const model = options.model ?? (typeof answered === "string" && answered !== "" ? answered : fallbackModel);
    const name = typeof model === "string" ? shortModelName(model) : undefined;
    recordCall(checkOptions(options), options.provider ?? "google", "firebase-ai", usageMetadataUnits(name, usage), {
      api: "firebase-ai",
      stream,
    });
  } catch (error) {
    options.tally.logger.error(`tally: recording a Firebase AI response failed: ${String(error)}`);
  }
}

/** Record a `generateContent` result (or its `response`) as one AI step; never throws (a failure is logged). */
export function recordFirebaseAI(result: unknown, options: FirebaseAIRecordOptions): void {
  const response = field(result, "response") ?? result;
  recordResponse(response, options, options.model, false);
}

type Method = (...args: unknown[]) => Promise<unknown>;

/**
 * Return a `generateContentStream` result whose `stream` the wrapper drains itself, so a call is
 * recorded once when its stream ends whether or not the app reads it: from the last chunk's
 * `usageMetadata` (the aggregated `response` carries none in current SDKs), else the `response`'s.
 * The app's `stream` replays the chunks; its `response` resolves once the step is recorded.
 */
function recordStreamResult(result: unknown, options: FirebaseAIRecordOptions, fallbackModel: unknown): unknown {
  const stream = field(result, "stream") as AsyncIterable<unknown> | undefined;
  if (typeof result !== "object" || result === null || typeof stream?.[Symbol.asyncIterator] !== "function") return result;
  const response = field(result, "response");
  const chunks: unknown[] = [];
  const last: Record<string, unknown> = {};
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake = (): void => undefined;
  const drained = (async () => {
    try {
      for await (const chunk of stream) {
        for (const key of ["usageMetadata", "modelVersion"]) if (field(chunk, key) !== undefined) last[key] = field(chunk, key);
        chunks.push(chunk);
        wake();
      }
    } catch (error) {
      failure = { error };
    }
    ended = true;
    wake();
    const answered = last["usageMetadata"] === undefined ? await Promise.resolve(response).catch(() => undefined) : last;
    recordResponse(answered, options, fallbackModel, true);
  })();
  async function* replay(): AsyncGenerator<unknown, void, undefined> {
    for (;;) {
      if (chunks.length > 0) yield chunks.shift();
      else if (failure !== undefined) throw failure.error;
      else if (ended) return;
      else await new Promise<void>((resolve) => (wake = () => resolve()));
    }
  }
  return { ...result, stream: replay(), response: drained.then(() => response) };
}

function recording(call: Method, stream: boolean, options: FirebaseAIRecordOptions, modelOf: () => unknown): Method {
  return async (...args: unknown[]) => {
    const result = await call(...args);
    if (stream) return recordStreamResult(result, options, modelOf());
    recordResponse(field(result, "response"), options, modelOf(), false);
    return result;
  };
}

/** Each method, whether it streams, and for a chat the SDK's per-turn call that its `this` makes. */
const METHODS = [
  ["generateContent", false],
  ["generateContentStream", true],
  ["sendMessage", false, "_callGenerateContent"],
  ["sendMessageStream", true, "_callGenerateContentStream"],
] as const;

/** A chat's methods that reach its per-turn calls through `this`. */
const SENDS = ["sendMessage", "sendMessageStream", "_sendMessage", "_sendMessageStream"];

/**
 * Return this wrapper's own stand-in for `target` (a model or a chat), recording its calls with
 * `options`. A chat's `sendMessage` loops over several model calls with automatic function
 * calling: when the chat has the SDK's per-turn `_callGenerateContent(Stream)`, those are
 * overridden on the stand-in and its `sendMessage(Stream)` run with the stand-in as `this`, so
 * every call is recorded with this wrapper's options (another wrapper of the chat, or the chat
 * itself, is left alone); else `sendMessage(Stream)` is recorded.
 */
function standIn<T extends object>(
  target: T,
  options: FirebaseAIRecordOptions,
  modelOf: () => unknown,
  more: Record<string, () => unknown> = {},
): T {
  const own = target as Record<string, unknown>;
  const overrides = { ...more };
  for (const [name, stream, internal] of METHODS) {
    const method = internal !== undefined && typeof own[internal] === "function" ? internal : name;
    const call = own[method];
    if (typeof call === "function") overrides[method] = () => recording((call as Method).bind(target), stream, options, modelOf);
  }
  const helpers = SENDS.filter((name) => !(name in overrides));
  return resource(target, overrides, helpers, { client: target, options });
}

/**
 * Return `model` (a Firebase AI Logic `GenerativeModel`) recording `generateContent`,
 * `generateContentStream` and the model calls of its chats (each turn of a `sendMessage` or
 * `sendMessageStream`, automatic function calling included).
 *
 * A stream is recorded when it ends, read by the app or not (the wrapper drains it and the app's
 * `stream` replays its chunks). Wrapping a wrapped model (or chat) again wraps the original with
 * the options updated: a call is never recorded twice.
 */
export function wrapGenerativeModel<M extends object>(model: M, options: FirebaseAIRecordOptions): M {
  const { client, options: merged } = unwrap(model, options);
  const checked = checkOptions(merged);
  const modelOf = (): unknown => field(client, "model");
  const startChat = field(client, "startChat");
  const more: Record<string, () => unknown> = {};
  if (typeof startChat === "function") {
    more["startChat"] = () => (...args: unknown[]) =>
      standIn((startChat as (...a: unknown[]) => object).apply(client, args), checked, modelOf);
  }
  return standIn(client as M, checked, modelOf, more);
}

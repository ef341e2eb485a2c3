/**
 * `@tally/client/firebase-ai`: record a Firebase AI Logic response's `usageMetadata` as one AI step,
 * by hand (`recordFirebaseAI`) or for every call of a wrapped `GenerativeModel`
 * (`generateContent`, `generateContentStream`, and the chats of `startChat`).
 * The `firebase` package is never imported.
 */

import { checkOptions, count, field, modelName, proxy, recordCall, recording, type RecordOptions } from "./recording.js";
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
 * Record a `generateContentStream` result: the last chunk's `usageMetadata` when the app has read
 * the stream (the aggregated `response` carries none in current SDKs), else the `response`'s if
 * it has one; once.
 */
function recordStreamResult(result: unknown, options: FirebaseAIRecordOptions, fallbackModel: unknown): unknown {
  const stream = field(result, "stream") as AsyncIterable<unknown> | undefined;
  if (typeof result !== "object" || result === null || typeof stream?.[Symbol.asyncIterator] !== "function") return result;
  let done = false;
  let last: Record<string, unknown> = {};
  const finish = (response: unknown): void => {
    if (done || typeof field(response, "usageMetadata") !== "object") return;
    done = true;
    recordResponse(response, options, fallbackModel, true);
  };
  const pending = field(result, "response");
  if (pending instanceof Promise) pending.then(finish, () => undefined);
  const accumulator = {
    observe(chunk: unknown) {
      if (field(chunk, "usageMetadata") !== undefined) last = { ...last, usageMetadata: field(chunk, "usageMetadata") };
      if (field(chunk, "modelVersion") !== undefined) last = { ...last, modelVersion: field(chunk, "modelVersion") };
      return false;
    },
    finish() {
      if (!done && last["usageMetadata"] === undefined) options.tally.logger.warn("tally: a Firebase AI stream ended without usageMetadata; nothing recorded");
      finish(last);
    },
  };
  return { ...result, stream: recording(stream[Symbol.asyncIterator](), accumulator) };
}

function recordingMethods(target: object, options: FirebaseAIRecordOptions, modelOf: () => unknown): Record<string, () => unknown> {
  const wrap = (name: string, stream: boolean) => () => {
    const original = (target as Record<string, unknown>)[name] as Method;
    return async (...args: unknown[]) => {
      const result = await original.apply(target, args);
      if (stream) return recordStreamResult(result, options, modelOf());
      recordResponse(field(result, "response"), options, modelOf(), false);
      return result;
    };
  };
  const overrides: Record<string, () => unknown> = {};
  for (const [name, stream] of [
    ["generateContent", false],
    ["sendMessage", false],
    ["generateContentStream", true],
    ["sendMessageStream", true],
  ] as const) {
    if (typeof (target as Record<string, unknown>)[name] === "function") overrides[name] = wrap(name, stream);
  }
  return overrides;
}

/**
 * Return `model` (a Firebase AI Logic `GenerativeModel`) recording `generateContent`,
 * `generateContentStream` and the `sendMessage`/`sendMessageStream` calls of its chats.
 *
 * A stream is recorded when the app has read it to its end (its last chunk carries the usage).
 */
export function wrapGenerativeModel<M extends object>(model: M, options: FirebaseAIRecordOptions): M {
  checkOptions(options);
  const modelOf = (): unknown => field(model, "model");
  const overrides = recordingMethods(model, options, modelOf);
  const startChat = (model as Record<string, unknown>)["startChat"];
  if (typeof startChat === "function") {
    overrides["startChat"] = () => (...args: unknown[]) => {
      const chat = (startChat as (...a: unknown[]) => object).apply(model, args);
      return proxy(chat, recordingMethods(chat, options, modelOf));
    };
  }
  return proxy(model, overrides);
}

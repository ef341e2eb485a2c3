/**
 * `@tally/client/ai-sdk`: a language model middleware for the Vercel AI SDK's `wrapLanguageModel`
 * that records every generate and stream call as one AI step. The `ai` package is never imported.
 */

import { checkOptions, count, field, mergeOptions, modelName, recordCall, type CallOptions, type RecordOptions } from "./recording.js";
import { checkName, type Units } from "./values.js";

export type { CallOptions, RecordOptions } from "./recording.js";

/** Options of `tallyMiddleware`: where calls are recorded; `provider` defaults to the model's (`openai.chat` → `openai`). */
export interface TallyMiddlewareOptions extends RecordOptions {
  provider?: string | undefined;
}

/** The middleware object `wrapLanguageModel({ model, middleware })` takes (AI SDK 5 and 6). */
export interface TallyLanguageModelMiddleware {
  readonly specificationVersion: "v3";
  readonly middlewareVersion: "v2";
  wrapGenerate<R>(options: { doGenerate: () => PromiseLike<R>; params: unknown; model: unknown }): Promise<R>;
  wrapStream<R extends { stream: ReadableStream<unknown> }>(options: {
    doStream: () => PromiseLike<R>;
    params: unknown;
    model: unknown;
  }): Promise<R>;
}

/**
 * Tally units of an AI SDK usage object: `inputTokens` is the uncached input.
 *
 * AI SDK 6 (`{inputTokens: {total, noCache, cacheRead, cacheWrite}, outputTokens: {total, ...}, raw}`)
 * and AI SDK 5 (`{inputTokens, outputTokens, cachedInputTokens}`). Anthropic's 1-hour cache
 * writes are read from `raw.cache_creation` when the provider passes its raw usage.
 */
export function aiSdkUnits(model: unknown, usage: unknown): Units {
  const input = field(usage, "inputTokens");
  const output = field(usage, "outputTokens");
  let uncached: number;
  let cacheRead: number;
  let cacheWrite: number;
  if (typeof input === "object" && input !== null) {
    const total = count(field(input, "total"));
    cacheRead = count(field(input, "cacheRead"));
    cacheWrite = count(field(input, "cacheWrite"));
    const noCache = field(input, "noCache");
    uncached = noCache === undefined ? Math.max(0, total - cacheRead - cacheWrite) : count(noCache);
  } else {
    const total = count(input);
    cacheRead = Math.min(count(field(usage, "cachedInputTokens")), total);
    cacheWrite = 0;
    uncached = total - cacheRead;
  }
  let outputTokens: number;
  if (typeof output === "object" && output !== null) {
    const total = field(output, "total");
    outputTokens = total === undefined ? count(field(output, "text")) + count(field(output, "reasoning")) : count(total);
  } else {
    outputTokens = count(output);
  }
  const oneHour = Math.min(count(field(field(field(usage, "raw"), "cache_creation"), "ephemeral_1h_input_tokens")), cacheWrite);
  const units: Units = {
    model: modelName(model),
    inputTokens: uncached,
    outputTokens,
    cacheReadTokens: cacheRead,
    cacheWriteTokens: cacheWrite - oneHour,
    requests: 1,
  };
  if (oneHour > 0) units.cacheWrite1hTokens = oneHour;
  return units;
}

function providerOf(options: TallyMiddlewareOptions, model: unknown): string {
  if (options.provider !== undefined) return options.provider;
  const name = field(model, "provider");
  const first = typeof name === "string" ? name.split(".")[0] : undefined;
  return modelName(first);
}

function callOptions(params: unknown): CallOptions | undefined {
  const found = field(field(params, "providerOptions"), "tally");
  return typeof found === "object" && found !== null ? (found as CallOptions) : undefined;
}

function record(base: TallyMiddlewareOptions, params: unknown, model: unknown, usage: unknown, modelId: unknown, id: unknown, stream: boolean): void {
  try {
    const options = mergeOptions(base, callOptions(params));
    const metadata: Record<string, unknown> = { api: "ai-sdk", stream };
    if (typeof id === "string" && id !== "") metadata["responseId"] = id.slice(0, 200);
    const answered = typeof modelId === "string" && modelId !== "" ? modelId : field(model, "modelId");
    recordCall(options, providerOf(base, model), "ai-sdk", aiSdkUnits(answered, usage), metadata);
  } catch (error) {
    base.tally.logger.error(`tally: recording an AI SDK call failed: ${String(error)}`);
  }
}

/**
 * Return a middleware for `wrapLanguageModel` that records each call's usage and answering model.
 *
 * A call may name its own `feature`, `userId`, `isBillableRun` or `metadata` in
 * `providerOptions: { tally: {...} }`. A stream is recorded when its `finish` part arrives.
 */
export function tallyMiddleware(options: TallyMiddlewareOptions): TallyLanguageModelMiddleware {
  const base: TallyMiddlewareOptions = { ...checkOptions(options) };
  if (base.provider !== undefined) checkName("provider", base.provider);
  return {
    specificationVersion: "v3",
    middlewareVersion: "v2",
    async wrapGenerate({ doGenerate, params, model }) {
      const result = await doGenerate();
      const response = field(result, "response");
      record(base, params, model, field(result, "usage"), field(response, "modelId"), field(response, "id"), false);
      return result;
    },
    async wrapStream({ doStream, params, model }) {
      const result = await doStream();
      let usage: unknown;
      let modelId: unknown;
      let id: unknown;
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        if (usage === undefined) base.tally.logger.warn("tally: an AI SDK stream ended without usage; nothing recorded");
        else record(base, params, model, usage, modelId, id, true);
      };
      const recorder = new TransformStream<unknown, unknown>({
        transform(part, controller) {
          const kind = field(part, "type");
          if (kind === "response-metadata") {
            modelId = field(part, "modelId") ?? modelId;
            id = field(part, "id") ?? id;
          } else if (kind === "finish") {
            usage = field(part, "usage");
          }
          controller.enqueue(part);
        },
        flush: finish,
        cancel: finish,
      } as Transformer<unknown, unknown>);
      return { ...result, stream: result.stream.pipeThrough(recorder) };
    },
  };
}

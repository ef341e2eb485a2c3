/**
 * `@tally/client/openai`: record every chat completion and Responses API request of an OpenAI
 * client (`create`, streams included, and the SDK's `parse`, `stream` and `runTools` helpers) as
 * one AI step. The `openai` package is never imported.
 */

import {
  checkOptions,
  count,
  field,
  mergeOptions,
  modelName,
  proxy,
  readRaw,
  recordCall,
  recordRaw,
  recordStream,
  thenUnwrap,
  unwrap,
  wrapper,
  type Accumulator,
  type CallOptions,
  type RecordOptions,
} from "./recording.js";
import { resource } from "./resource.js";
import { checkName, type Units } from "./values.js";

export type { CallOptions, RecordOptions } from "./recording.js";

/** Options of `wrapOpenAI`: where calls are recorded, plus the provider name (`openai`). */
export interface OpenAIWrapOptions extends RecordOptions {
  /** The provider's name in Tally (`openai`; e.g. `azure_openai` for Azure). */
  provider?: string | undefined;
}

type Api = "chat.completions" | "responses";

/** Tally units of an OpenAI usage object: `inputTokens` excludes the cached tokens. */
export function openaiUnits(model: unknown, usage: unknown, api: Api): Units {
  const chat = api === "chat.completions";
  const totalIn = count(field(usage, chat ? "prompt_tokens" : "input_tokens"));
  const out = count(field(usage, chat ? "completion_tokens" : "output_tokens"));
  const cached = Math.min(count(field(field(usage, chat ? "prompt_tokens_details" : "input_tokens_details"), "cached_tokens")), totalIn);
  return {
    model: modelName(model),
    inputTokens: totalIn - cached,
    outputTokens: out,
    cacheReadTokens: cached,
    cacheWriteTokens: 0,
    requests: 1,
  };
}

interface Call {
  options: RecordOptions;
  provider: string;
  api: Api;
  stream: boolean;
}

function record(call: Call, units: Units, responseId: unknown): void {
  const metadata: Record<string, unknown> = { api: call.api, stream: call.stream };
  if (typeof responseId === "string" && responseId !== "") metadata["responseId"] = responseId.slice(0, 200);
  recordCall(call.options, call.provider, call.api, units, metadata);
}

function recordResponse(call: Call, response: unknown): void {
  const usage = field(response, "usage");
  if (usage === undefined || usage === null) {
    call.options.tally.logger.warn(`tally: a ${call.api} response carried no usage; nothing recorded`);
    return;
  }
  record(call, openaiUnits(field(response, "model"), usage, call.api), field(response, "id"));
}

/** Usage of a chat completion stream: the last chunk's `usage` (needs `include_usage`). */
function chatAccumulator(call: Call, hideUsageChunk: boolean): Accumulator {
  let model: unknown;
  let id: unknown;
  let usage: unknown;
  let done = false;
  return {
    observe(item) {
      model = field(item, "model") || model;
      id = field(item, "id") || id;
      const found = field(item, "usage");
      if (found === undefined || found === null) return false;
      usage = found;
      const choices = field(item, "choices");
      return hideUsageChunk && (!Array.isArray(choices) || choices.length === 0);
    },
    finish() {
      if (done) return;
      done = true;
      if (usage === undefined) {
        call.options.tally.logger.warn(
          "tally: a chat completion stream ended without usage (closed early, or the API sent none); nothing recorded",
        );
        return;
      }
      record(call, openaiUnits(model, usage, call.api), id);
    },
  };
}

const FINAL_EVENTS = new Set(["response.completed", "response.incomplete", "response.failed"]);

/** Usage of a Responses stream: the `response` of its final event. */
function responsesAccumulator(call: Call): Accumulator {
  let response: unknown;
  let done = false;
  return {
    observe(item) {
      if (FINAL_EVENTS.has(String(field(item, "type")))) response = field(item, "response");
      return false;
    },
    finish() {
      if (done) return;
      done = true;
      const usage = field(response, "usage");
      if (usage === undefined || usage === null) {
        call.options.tally.logger.warn("tally: a responses stream ended without a final response; nothing recorded");
        return;
      }
      record(call, openaiUnits(field(response, "model"), usage, call.api), field(response, "id"));
    },
  };
}

/** Ask a chat stream for its usage chunk; return the body and whether to hide that chunk (the caller did not ask for it). */
function withIncludeUsage(body: Record<string, unknown>): [Record<string, unknown>, boolean] {
  const options = field(body, "stream_options");
  const own = typeof options === "object" && options !== null ? options : {};
  return [{ ...body, stream_options: { ...own, include_usage: true } }, field(own, "include_usage") !== true];
}

type Create = (body: Record<string, unknown>, ...rest: unknown[]) => PromiseLike<unknown>;

function intercept(owner: object, base: OpenAIWrapOptions, api: Api): Create {
  const original = (owner as { create: Create }).create;
  return (rawBody, ...rest) => {
    const { tally: perCall, ...apiBody } = rawBody;
    const options = mergeOptions(base, perCall as CallOptions | undefined);
    const stream = apiBody["stream"] === true;
    let body = apiBody;
    let hide = false;
    if (stream && api === "chat.completions") [body, hide] = withIncludeUsage(apiBody);
    const call: Call = { options, provider: base.provider ?? "openai", api, stream };
    const result = original.call(owner, body, ...rest);
    let claimed = false; // the parsed result or the raw response records the call, whichever comes first
    const claim = (): boolean => !claimed && (claimed = true);
    const promise = thenUnwrap(result, (value) => {
      if (!claim()) return value;
      if (stream) {
        if (typeof value !== "object" || value === null) return value;
        const accumulator = api === "responses" ? responsesAccumulator(call) : chatAccumulator(call, hide);
        return recordStream(value, accumulator);
      }
      try {
        recordResponse(call, value);
      } catch (error) {
        call.options.tally.logger.error(`tally: reading the usage of a ${api} response failed: ${String(error)}`);
      }
      return value;
    });
    recordRaw(promise, claim, (response) =>
      readRaw(
        response,
        stream ? (api === "responses" ? responsesAccumulator(call) : chatAccumulator(call, hide)) : undefined,
        (value) => recordResponse(call, value),
        call.options.tally.logger,
      ),
    );
    return promise;
  };
}

function openaiProxy<C extends object>(client: C, options: OpenAIWrapOptions): C {
  const target = client as Record<string, unknown>;
  // The helpers call `this._client.<resource>.create` (or hand `this._client` to a runner): make that the wrapper.
  const wrap = (owner: object, api: Api, helpers: readonly string[]): object =>
    resource(owner, { create: () => intercept(owner, options, api), _client: () => wrapped }, helpers);
  const overrides: Record<string, () => unknown> = {
    chat: () => {
      const chat = target["chat"] as Record<string, unknown>;
      return proxy(chat, { completions: () => wrap(chat["completions"] as object, "chat.completions", ["parse", "stream", "runTools"]) });
    },
    responses: () => wrap(target["responses"] as object, "responses", ["parse", "stream"]),
  };
  const factory = target["withOptions"];
  if (typeof factory === "function") {
    overrides["withOptions"] = () => (...args: unknown[]) =>
      openaiProxy((factory as (...a: unknown[]) => object).apply(client, args), options);
  }
  const wrapped = wrapper(client, options, overrides);
  return wrapped;
}

/**
 * Return `client` (an `OpenAI` instance) recording `chat.completions.create`, `.parse`, `.stream`
 * and `.runTools`, and `responses.create`, `.parse` and `.stream`.
 *
 * Each API request is one AI step (a `runTools` run makes one per request) with `units` from the
 * response's usage and model; the result (or stream) is the API's own. A call read raw
 * (`.asResponse()`) is recorded from its body: a copy of a JSON one, a stream's SSE events as
 * they pass. A chat stream always gets
 * `stream_options: {include_usage: true}`; unless the caller set it true, the extra usage-only
 * chunk is kept from the app. A call's body may carry `tally: {feature, userId, isBillableRun,
 * metadata, session, reservation}`, removed before the API sees it. Wrapping a wrapped client
 * again (e.g. per request, with a `session`) wraps the original with the options updated: a call
 * is never recorded twice.
 */
export function wrapOpenAI<C extends object>(client: C, options: OpenAIWrapOptions): C {
  const { client: original, options: merged } = unwrap(client, options);
  const checked = checkOptions(merged);
  const provider = checkName("provider", checked.provider ?? "openai");
  return openaiProxy(original as C, { ...checked, provider });
}

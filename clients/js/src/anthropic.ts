/**
 * `@tally/client/anthropic`: record every `messages` and `beta.messages` request of an Anthropic
 * client (`create`, streams included, `parse`, `stream`, and the requests of tool runners and
 * message threads) as one AI step, cache reads and 5-minute and 1-hour cache writes apart. The
 * `@anthropic-ai/sdk` package is never imported.
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

/** Options of `wrapAnthropic`: where calls are recorded, plus the provider name (`anthropic`). */
export interface AnthropicWrapOptions extends RecordOptions {
  /** The provider's name in Tally (`anthropic`). */
  provider?: string | undefined;
}

/** The usage counts Anthropic reported (only those set), the cache writes' TTL breakdown under its own keys. */
export type AnthropicUsage = Partial<
  Record<
    | "input_tokens"
    | "output_tokens"
    | "cache_read_input_tokens"
    | "cache_creation_input_tokens"
    | "ephemeral_5m_input_tokens"
    | "ephemeral_1h_input_tokens",
    number
  >
>;

const FIELDS = ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"] as const;
const CACHE_TTLS = ["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"] as const;

/** Return the usage fields that are set, as integers (`cache_creation`'s breakdown by TTL as its own keys). */
export function anthropicUsage(usage: unknown): AnthropicUsage {
  const found: AnthropicUsage = {};
  for (const name of FIELDS) {
    const value = field(usage, name);
    if (typeof value === "number" && Number.isInteger(value)) found[name] = value;
  }
  const creation = field(usage, "cache_creation");
  for (const name of CACHE_TTLS) {
    const value = field(creation, name);
    if (typeof value === "number" && Number.isInteger(value)) found[name] = value;
  }
  return found;
}

/**
 * Tally units of Anthropic usage (`input_tokens` already excludes cache tokens).
 *
 * `cache_creation_input_tokens` counts every cache write; `cache_creation` (newer API versions)
 * splits it by TTL: the 1-hour writes go to `cacheWrite1hTokens` (sent only when there are some),
 * the rest to `cacheWriteTokens`, so the two add up to the total.
 */
export function anthropicUnits(model: unknown, usage: AnthropicUsage): Units {
  let oneHour = count(usage.ephemeral_1h_input_tokens);
  let fiveMinutes: number;
  if (usage.cache_creation_input_tokens !== undefined) {
    const total = count(usage.cache_creation_input_tokens);
    oneHour = Math.min(oneHour, total);
    fiveMinutes = total - oneHour;
  } else {
    fiveMinutes = count(usage.ephemeral_5m_input_tokens);
  }
  const units: Units = {
    model: modelName(model),
    inputTokens: count(usage.input_tokens),
    outputTokens: count(usage.output_tokens),
    cacheReadTokens: count(usage.cache_read_input_tokens),
    cacheWriteTokens: fiveMinutes,
    requests: 1,
  };
  if (oneHour > 0) units.cacheWrite1hTokens = oneHour;
  return units;
}

interface Call {
  options: RecordOptions;
  provider: string;
  stream: boolean;
}

function record(call: Call, units: Units, responseId: unknown): void {
  const metadata: Record<string, unknown> = { api: "messages", stream: call.stream };
  if (typeof responseId === "string" && responseId !== "") metadata["responseId"] = responseId.slice(0, 200);
  recordCall(call.options, call.provider, "messages", units, metadata);
}

/** Usage of a message stream: `message_start`'s usage, updated by the cumulative `message_delta` usage. */
function streamAccumulator(call: Call): Accumulator {
  let model: unknown;
  let id: unknown;
  let usage: AnthropicUsage = {};
  let started = false;
  let done = false;
  return {
    observe(item) {
      const kind = field(item, "type");
      if (kind === "message_start") {
        const message = field(item, "message");
        model = field(message, "model");
        id = field(message, "id");
        usage = { ...usage, ...anthropicUsage(field(message, "usage")) };
        started = true;
      } else if (kind === "message_delta") {
        usage = { ...usage, ...anthropicUsage(field(item, "usage")) };
      }
      return false;
    },
    finish() {
      if (done) return;
      done = true;
      if (!started) {
        call.options.tally.logger.warn("tally: an Anthropic stream ended before message_start; nothing recorded");
        return;
      }
      record(call, anthropicUnits(model, usage), id);
    },
  };
}

type Create = (body: Record<string, unknown>, ...rest: unknown[]) => PromiseLike<unknown>;

function recordMessage(call: Call, value: unknown): void {
  const usage = field(value, "usage");
  if (usage === undefined || usage === null) {
    call.options.tally.logger.warn("tally: a messages response carried no usage; nothing recorded");
  } else {
    record(call, anthropicUnits(field(value, "model"), anthropicUsage(usage)), field(value, "id"));
  }
}

function intercept(messages: object, base: AnthropicWrapOptions): Create {
  const original = (messages as { create: Create }).create;
  return (rawBody, ...rest) => {
    const { tally: perCall, ...body } = rawBody;
    const options = mergeOptions(base, perCall as CallOptions | undefined);
    const call: Call = { options, provider: base.provider ?? "anthropic", stream: body["stream"] === true };
    let claimed = false; // the parsed result or the raw response records the call, whichever comes first
    const claim = (): boolean => !claimed && (claimed = true);
    const promise = thenUnwrap(original.call(messages, body, ...rest), (value) => {
      if (!claim()) return value;
      if (call.stream) return typeof value === "object" && value !== null ? recordStream(value, streamAccumulator(call)) : value;
      recordMessage(call, value);
      return value;
    });
    recordRaw(promise, claim, (response) =>
      readRaw(response, call.stream ? streamAccumulator(call) : undefined, (value) => recordMessage(call, value), options.tally.logger),
    );
    return promise;
  };
}

/** The helpers that call `this.create(...)`, or hand `this._client` to a tool runner or thread that calls `beta.messages.create`. */
const HELPERS = ["parse", "stream", "toolRunner", "_toolRunnerThread", "thread"];

function anthropicProxy<C extends object>(client: C, options: AnthropicWrapOptions): C {
  const target = client as Record<string, unknown>;
  // The helpers run on the stand-in, whose `create` records and whose `_client` is the wrapper: their requests are recorded too.
  const wrap = (messages: object): object =>
    resource(messages, { create: () => intercept(messages, options), _client: () => wrapped }, HELPERS);
  const overrides: Record<string, () => unknown> = {
    messages: () => wrap(target["messages"] as object),
  };
  const beta = target["beta"];
  if (typeof beta === "object" && beta !== null) {
    overrides["beta"] = () => proxy(beta, { messages: () => wrap((beta as Record<string, unknown>)["messages"] as object) });
  }
  const factory = target["withOptions"];
  if (typeof factory === "function") {
    overrides["withOptions"] = () => (...args: unknown[]) =>
      anthropicProxy((factory as (...a: unknown[]) => object).apply(client, args), options);
  }
  const wrapped = wrapper(client, options, overrides);
  return wrapped;
}

/**
 * Return `client` (an `Anthropic` instance) recording `messages.create`, `.parse` and `.stream`,
 * the same of `beta.messages`, and the requests of `beta.messages.toolRunner()` and message
 * threads, streams and `.asResponse()` included: one AI step per request.
 *
 * Usage is read from the message (or, with `stream: true`, from the `message_start` and
 * `message_delta` events); a call's body may carry `tally: {...}` as in wrapOpenAI. Wrapping a
 * wrapped client again wraps the original with the options updated: a call is never recorded twice.
 */
export function wrapAnthropic<C extends object>(client: C, options: AnthropicWrapOptions): C {
  const { client: original, options: merged } = unwrap(client, options);
  const checked = checkOptions(merged);
  const provider = checkName("provider", checked.provider ?? "anthropic");
  return anthropicProxy(original as C, { ...checked, provider });
}

/** What the provider wrappers share: where a call's step goes, and reading counts from usage objects. */

import type { Tally } from "./client.js";
import { TallyError, Unavailable, isRecord } from "./errors.js";
import type { Logger } from "./log.js";
import type { Reservation } from "./reservation.js";
import type { Session } from "./session.js";
import { describe } from "./transport.js";
import type { Mode } from "./types.js";
import { checkName, checkUserId, metadataBody, type JsonObject, type Units } from "./values.js";

/** Where and how a wrapped client records its calls; every field but `tally` is optional. */
export interface RecordOptions {
  /** The client that records. */
  tally: Tally<Mode>;
  /** The steps' feature (default: the reservation's, the session's, else `<provider>.<api>`). */
  feature?: string | undefined;
  /** Whose usage (recorder/admin callers); a session's or reservation's user wins when they agree. */
  userId?: string | undefined;
  /** Whether each call counts as a billable run (false). */
  isBillableRun?: boolean | undefined;
  /** Extra metadata for each step. */
  metadata?: JsonObject | undefined;
  /** Record the calls into this session. */
  session?: Session<Mode> | undefined;
  /** Record the calls against this reservation (the first settles it). */
  reservation?: Reservation<Mode> | undefined;
}

/** Per-call options (the `tally` key of a wrapped call's body, removed before the API sees it). */
export type CallOptions = Omit<RecordOptions, "tally">;

/** Return a wrapper's options, checked (a bad name throws when wrapping, never during a call). */
export function checkOptions<O extends RecordOptions>(options: O): O {
  if (typeof options?.tally?.record !== "function") throw new TypeError("options.tally must be a Tally client");
  if (options.feature !== undefined) checkName("feature", options.feature);
  if (options.userId !== undefined) checkUserId("userId", options.userId);
  return { ...options };
}

/** Return the wrapper's options merged with a call's own (a bad value there is logged when recording). */
export function mergeOptions(base: RecordOptions, call: CallOptions | undefined): RecordOptions {
  const merged: RecordOptions = { ...base };
  if (typeof call === "object" && call !== null) {
    for (const [key, value] of Object.entries(call)) {
      if (value !== undefined) (merged as unknown as Record<string, unknown>)[key] = value;
    }
  }
  return merged;
}

/** Record one AI call as a step: into the reservation, else the session, else standalone. Never throws. */
export function recordCall(
  options: RecordOptions,
  provider: string,
  api: string,
  units: Units,
  metadata: JsonObject,
): void {
  const { tally } = options;
  const log = (error: unknown): void => tally.logger.error(`tally: recording a ${provider} ${api} call failed: ${describe(error)}`);
  // Refused before anything was queued (a bad name, a closed client, a full queue): kept in `refused`.
  // What the server refused is there already, and what could not be sent stays queued: both only logged.
  const fail = (error: unknown): void => {
    log(error);
    if (error instanceof TallyError && error.httpStatus === undefined && !(error instanceof Unavailable)) {
      tally._refuseLocally(step, error, userId ?? reservation?.userId ?? session?.userId, undefined);
    }
  };
  const fallback = `${provider}.${api}`;
  const common = { provider, units, usageType: "AI", isBillableRun: options.isBillableRun ?? false, metadata };
  try {
    common.metadata = metadataBody("metadata", { ...metadata, ...(options.metadata ?? {}) });
  } catch (error) {
    log(error); // the call happened: record it without the app's metadata
  }
  const { reservation, session, userId } = options;
  let step: Record<string, unknown> = { ...common, feature: options.feature ?? fallback, userId };
  try {
    if (reservation && reservation.tally === tally && !reservation.released && (userId === undefined || userId === reservation.userId)) {
      step = { ...common, feature: options.feature ?? reservation.feature ?? reservation.session?.feature ?? fallback };
      reservation.record(step as typeof common & { feature: string }).catch(fail);
      return;
    }
    if (session && session.tally === tally && !session.completed && (userId === undefined || userId === session.userId)) {
      step = { ...common, feature: options.feature ?? session.feature ?? fallback };
      settle(session.step(step as typeof common & { feature: string }), fail);
      return;
    }
    settle(tally.record(step as typeof common & { feature: string }), fail);
  } catch (error) {
    fail(error);
  }
}

function settle(result: string | Promise<string>, fail: (error: unknown) => void): void {
  if (typeof result !== "string") result.catch(fail);
}

const INVALID_NAME_CHARS = /[^A-Za-z0-9_\-.:/]/g;

/** Return a model name as a Tally name (other characters become `_`; `unknown` if none). */
export function modelName(value: unknown): string {
  const text = typeof value === "string" ? value.replace(INVALID_NAME_CHARS, "_").slice(0, 100) : "";
  return text === "" || /^__[\s\S]*__$/.test(text) ? "unknown" : text;
}

/** Return a positive integer count, else 0. */
export function count(value: unknown): number {
  return typeof value === "number" && Number.isInteger(value) && value > 0 ? Math.min(value, 1_000_000_000) : 0;
}

/** Return `obj[name]` for any object (undefined for anything else). */
export function field(obj: unknown, name: string): unknown {
  return typeof obj === "object" && obj !== null ? (obj as Record<string, unknown>)[name] : undefined;
}

/** Return `obj` if it is a plain object, else undefined. */
export function record(obj: unknown): Record<string, unknown> | undefined {
  return isRecord(obj) ? obj : undefined;
}

/** A stream's usage gatherer: `observe` returns true to hold an item back from the app. */
export interface Accumulator {
  observe(item: unknown): boolean;
  finish(): void;
}

/** Yield a stream's items (but the held-back ones) and record once when it ends, fails or is closed early. */
export async function* recording<T>(source: AsyncIterator<T>, accumulator: Accumulator): AsyncGenerator<T, void, undefined> {
  try {
    for (;;) {
      const next = await source.next();
      if (next.done) return;
      if (!accumulator.observe(next.value)) yield next.value;
    }
  } finally {
    try {
      await source.return?.();
    } finally {
      accumulator.finish();
    }
  }
}

/**
 * Make a provider SDK's stream record its usage, keeping the object the app gets.
 *
 * The Stainless SDKs (openai, @anthropic-ai/sdk) iterate through the stream's own `iterator`
 * function (also in `tee()` and `toReadableStream()`): it is replaced by a recording one. Any
 * other async iterable gets a stand-in whose `Symbol.asyncIterator` records.
 */
export function recordStream<S extends object>(stream: S, accumulator: Accumulator): S {
  const own = stream as { iterator?: unknown };
  if (typeof own.iterator === "function") {
    const original = own.iterator as () => AsyncIterator<unknown>;
    own.iterator = () => recording(original.call(stream), accumulator);
    return stream;
  }
  const iterate = (stream as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator];
  if (typeof iterate !== "function") return stream;
  return new Proxy(stream, {
    get(target, property, receiver) {
      if (property === Symbol.asyncIterator) return () => recording(iterate.call(target), accumulator);
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** The end of an SSE event: a line ending, then an empty line (a lone `\r` ends a line too). */
const EVENT_END = /(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)/;

/**
 * Return a stream that passes an SSE body's bytes on as they are, event by event, and shows each
 * event's JSON `data` to `accumulator` (an event it holds back is dropped); it finishes at the end.
 */
function sseRecorder(accumulator: Accumulator): TransformStream<Uint8Array, Uint8Array> {
  const utf8 = new TextDecoder();
  const bytes = new TextDecoder("latin1"); // one character per byte: event ends are found at byte offsets
  let held = new Uint8Array(0);
  const pass = (event: Uint8Array, controller: TransformStreamDefaultController<Uint8Array>): void => {
    const data = utf8
      .decode(event)
      .split(/\r\n|\r|\n/)
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(line[5] === " " ? 6 : 5))
      .join("\n");
    let item: unknown;
    try {
      item = JSON.parse(data);
    } catch {
      item = undefined; // `[DONE]`, a comment, no data
    }
    if (item === undefined || !accumulator.observe(item)) controller.enqueue(event);
  };
  // `cancel` (not in TypeScript's DOM types yet): runtimes that support it say when the app stopped reading.
  const transformer: Transformer<Uint8Array, Uint8Array> & { cancel(): void } = {
    transform(chunk, controller) {
      const joined = new Uint8Array(held.length + chunk.length);
      joined.set(held);
      joined.set(chunk, held.length);
      const text = bytes.decode(joined);
      let start = 0;
      for (let found = EVENT_END.exec(text); found !== null; found = EVENT_END.exec(text.slice(start))) {
        const end = start + found.index + found[0].length;
        pass(joined.subarray(start, end), controller);
        start = end;
      }
      held = joined.slice(start);
    },
    flush(controller) {
      if (held.length > 0) pass(held, controller);
      accumulator.finish();
    },
    cancel() {
      accumulator.finish();
    },
  };
  return new TransformStream(transformer);
}

/**
 * Return a raw `Response` of a call, recording the call: a stream's SSE events are shown to
 * `accumulator` as they pass (the events it holds back are dropped), else `json` gets the body of
 * a copy. Never throws (a failure is logged).
 */
export function readRaw(response: Response, accumulator: Accumulator | undefined, json: (value: unknown) => void, logger: Logger): Response {
  const fail = (error: unknown): void => logger.error(`tally: reading the usage of a raw response failed: ${describe(error)}`);
  try {
    if (accumulator === undefined) {
      response.clone().json().then(json, fail);
      return response;
    }
    if (response.body === null) {
      accumulator.finish();
      return response;
    }
    const headers = new Headers(response.headers);
    headers.delete("content-length"); // a held-back event is not passed on
    const { status, statusText } = response;
    return new Response(response.body.pipeThrough(sseRecorder(accumulator)), { status, statusText, headers });
  } catch (error) {
    fail(error);
    return response;
  }
}

interface RawApi {
  asResponse?: () => Promise<Response>;
  withResponse?: (...args: unknown[]) => unknown;
  _responseProps?: () => Promise<{ response: Response }>;
  _thenUnwrap?: (...args: unknown[]) => unknown;
}

/**
 * Make a Stainless SDK's call promise record its call when read raw: `.asResponse()`, and
 * `_responseProps()` (which the Anthropic SDK's message threads read instead of parsing the
 * call), here and on the promises its helpers derive with `_thenUnwrap`. `claim()` says whether
 * the call is still to be recorded (its parsed result records it otherwise); `raw` records from
 * a raw `Response` and returns the one to hand on. `withResponse()` parses: its raw read is left alone.
 */
export function recordRaw(promise: unknown, claim: () => boolean, raw: (response: Response) => Response): void {
  const api = promise as RawApi;
  const { asResponse, withResponse, _responseProps, _thenUnwrap } = api;
  let parsing = false;
  const read = (response: Response): Response => (!parsing && claim() ? raw(response) : response);
  if (typeof asResponse === "function") api.asResponse = () => asResponse.call(api).then(read);
  if (typeof _responseProps === "function") {
    api._responseProps = () =>
      _responseProps.call(api).then((props) => {
        props.response = read(props.response); // in place: every promise of the call holds these props
        return props;
      });
  }
  if (typeof withResponse === "function") {
    api.withResponse = (...args) => {
      parsing = true;
      return withResponse.apply(api, args);
    };
  }
  if (typeof _thenUnwrap === "function") {
    api._thenUnwrap = (...args) => {
      const derived = _thenUnwrap.apply(api, args);
      recordRaw(derived, claim, raw);
      return derived;
    };
  }
}

/** Apply `transform` to what a provider SDK's call promise resolves to, keeping its extra methods. */
export function thenUnwrap<T, U>(promise: PromiseLike<T>, transform: (value: T) => U): PromiseLike<U> {
  const api = promise as { _thenUnwrap?: (fn: (value: T) => U) => PromiseLike<U> };
  if (typeof api._thenUnwrap === "function") return api._thenUnwrap((value) => transform(value));
  return Promise.resolve(promise).then(transform);
}

const WRAPPED = Symbol("tally.wrapped");

/** A wrapped client's original and options (undefined for a client that is not a Tally wrapper). */
export interface Wrapped<O> {
  client: object;
  options: O;
}

/**
 * Return the client to wrap and the options to wrap it with: wrapping a wrapper wraps its original
 * with its options updated by the new ones (defined values win), so calls are never recorded twice.
 */
export function unwrap<O extends object>(client: object, options: O): Wrapped<O> {
  const inner = (client as { [WRAPPED]?: Wrapped<O> })[WRAPPED];
  if (inner === undefined) return { client, options };
  const merged = { ...inner.options } as Record<string, unknown>;
  for (const [key, value] of Object.entries(options)) if (value !== undefined) merged[key] = value;
  return { client: inner.client, options: merged as O };
}

/** A wrapper of a client: `proxy` that also remembers the original and the wrapper's options. */
export function wrapper<T extends object, O>(client: T, options: O, overrides: Record<string, () => unknown>): T {
  const wrapped: Wrapped<O> = { client, options };
  return proxy(client, overrides, wrapped);
}

/** A stand-in for an object: the names in `overrides` are intercepted, everything else is the target's. */
export function proxy<T extends object>(target: T, overrides: Record<string, () => unknown>, wrapped?: Wrapped<unknown>): T {
  return new Proxy(target, {
    get(object, property) {
      if (property === WRAPPED) return wrapped;
      if (typeof property === "string" && Object.prototype.hasOwnProperty.call(overrides, property)) {
        return (overrides[property] as () => unknown)();
      }
      // A getter runs on the object itself: the SDKs' getters read private (#) fields, which a proxy lacks.
      const value: unknown = Reflect.get(object, property);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(object) : value;
    },
  });
}

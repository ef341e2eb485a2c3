/** Check step values against the SPEC's rules and give their wire form (money never as a binary float). */

import { InvalidArgument, isRecord } from "./errors.js";

/** A USD amount: a decimal string, a number (converted through its shortest form), or a bigint. */
export type Money = string | number | bigint;

/** An instant: a Date, an ISO-8601 string with offset or `Z`, or epoch milliseconds. */
export type Timestamp = Date | string | number;

/** Token and request counts priced by Tally (`inputTokens` is the uncached input). */
export interface Units {
  model: string;
  inputTokens?: number;
  outputTokens?: number;
  cacheReadTokens?: number;
  cacheWriteTokens?: number;
  cacheWrite1hTokens?: number;
  requests?: number;
}

/** A JSON object (step metadata). */
export type JsonObject = Record<string, unknown>;

export const MAX_STEPS = 100;
export const MAX_NAMES = 20;
export const MAX_METADATA_BYTES = 4096;
export const MAX_METADATA_DEPTH = 10;
export const MAX_COUNT = 1_000_000_000;
export const UNIT_COUNTS = [
  "inputTokens",
  "outputTokens",
  "cacheReadTokens",
  "cacheWriteTokens",
  "cacheWrite1hTokens",
  "requests",
] as const;

const NAME_RE = /^[A-Za-z0-9_\-.:/]{1,100}$/;
const ID_RE = /^[A-Za-z0-9_\-.]{1,128}$/;
const USER_ID_RE = /^[A-Za-z0-9_\-.:@+]{1,128}$/;
const RESERVED_RE = /^__[\s\S]*__$/;
const DECIMAL_RE = /^([+-]?)(?:(\d+)(?:\.(\d*))?|\.(\d+))(?:[eE]([+-]?\d{1,4}))?$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)$/;
const MAX_DECIMAL_TEXT = 64;
const USAGE_TYPES: Record<string, "AI" | "API"> = { ai: "AI", aiusage: "AI", api: "API", apiusage: "API" };
const encoder = new TextEncoder();

/** Return a feature, provider or model name, or throw InvalidArgument. */
export function checkName(field: string, value: unknown): string {
  if (typeof value !== "string" || !NAME_RE.test(value)) {
    throw InvalidArgument.field(field, "must be 1-100 characters of letters, digits and _ - . : /");
  }
  if (RESERVED_RE.test(value)) throw InvalidArgument.field(field, "must not be of the form __name__ (reserved)");
  return value;
}

/** Return an operation, session or reservation id, or throw InvalidArgument. */
export function checkId(field: string, value: unknown): string {
  if (typeof value !== "string" || !ID_RE.test(value)) {
    throw InvalidArgument.field(field, "must be 1-128 characters of letters, digits and _ - .");
  }
  if (value === "." || value === ".." || RESERVED_RE.test(value)) throw InvalidArgument.field(field, "is a reserved id");
  return value;
}

/** Return a Firebase Auth uid, or throw InvalidArgument. */
export function checkUserId(field: string, value: unknown): string {
  if (
    typeof value !== "string" ||
    !USER_ID_RE.test(value) ||
    value === "." ||
    value === ".." ||
    RESERVED_RE.test(value)
  ) {
    throw InvalidArgument.field(field, "must be a Firebase Auth uid (1-128 characters, no / or spaces)");
  }
  return value;
}

/** Return `AI` or `API` for any accepted spelling, or throw InvalidArgument. */
export function usageType(field: string, value: unknown): "AI" | "API" {
  const found = typeof value === "string" ? USAGE_TYPES[value.toLowerCase()] : undefined;
  if (found === undefined) {
    throw InvalidArgument.field(field, "must be AI or API (also: ai, AIUsage, api, Api, ApiUsage, APIUsage)");
  }
  return found;
}

/** An exact decimal: `digits` (no leading zeros, "" for zero) times 10^`exponent`. */
interface Decimal {
  negative: boolean;
  digits: string;
  exponent: number;
}

function parseDecimal(field: string, text: string): Decimal {
  const match = DECIMAL_RE.exec(text.trim());
  if (match === null) throw InvalidArgument.field(field, 'must be a number or a decimal string like "0.017"');
  const [, sign, whole, fraction, bareFraction, exponent] = match;
  const intPart = whole ?? "";
  const fracPart = fraction ?? bareFraction ?? "";
  const digits = (intPart + fracPart).replace(/^0+/, "");
  return { negative: sign === "-", digits, exponent: Number(exponent ?? 0) - fracPart.length };
}

function plain(decimal: Decimal, fractionDigits: number): string {
  // `fractionDigits`: how many digits follow the point (Decimal's 'f' format keeps the exponent's).
  const { digits, exponent } = decimal;
  if (exponent >= 0) return (digits + "0".repeat(exponent)).replace(/^0+(?=\d)/, "") || "0";
  const padded = digits.padStart(fractionDigits + 1, "0");
  const cut = padded.length - fractionDigits;
  return `${padded.slice(0, cut).replace(/^0+(?=\d)/, "")}.${padded.slice(cut)}`;
}

function roundToNanos(text: string): string {
  const [whole = "0", fraction = ""] = text.split(".");
  const scaled = BigInt(whole + fraction.padEnd(9, "0").slice(0, 9)); // nano-USD, truncated
  const rest = fraction.slice(9);
  const first = rest[0] ?? "0";
  const up = first > "5" || (first === "5" && (/[1-9]/.test(rest.slice(1)) || scaled % 2n === 1n)); // half-even
  const digits = (scaled + (up ? 1n : 0n)).toString().padStart(10, "0");
  return `${digits.slice(0, -9)}.${digits.slice(-9)}`;
}

/**
 * Return a USD amount as a plain decimal string (`"0.00283"`), exact unless longer than 64
 * characters (then rounded to nano-USD, half-even, as the server does).
 *
 * A number goes through its shortest decimal form (`0.1` → `"0.1"`), never its binary value.
 */
export function costText(field: string, value: unknown): string {
  let text: string;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw InvalidArgument.field(field, "must be finite");
    text = String(value);
  } else if (typeof value === "bigint") {
    text = value.toString();
  } else if (typeof value === "string") {
    text = value;
  } else {
    throw InvalidArgument.field(field, 'must be a number or a decimal string like "0.017"');
  }
  const decimal = parseDecimal(field, text);
  if (decimal.digits === "") return "0";
  if (decimal.negative) throw InvalidArgument.field(field, "must be >= 0");
  const integerDigits = decimal.digits.length + decimal.exponent;
  const tooBig = () => InvalidArgument.field(field, "must be <= 1000");
  if (integerDigits > 4) throw tooBig();
  const out = plain(decimal, Math.max(0, -decimal.exponent));
  const [whole = "0", fraction = ""] = out.split(".");
  if (Number(whole) > 1000 || (Number(whole) === 1000 && /[1-9]/.test(fraction))) throw tooBig();
  return out.length > MAX_DECIMAL_TEXT ? roundToNanos(out) : out;
}

/** Return a checked `units` object: `model` and at least one count in [0, 10^9]. */
export function unitsBody(field: string, value: unknown): Units {
  if (!isRecord(value)) throw InvalidArgument.field(field, "must be an object with model and token counts");
  const known = new Set<string>(["model", ...UNIT_COUNTS]);
  const unknown = Object.keys(value).filter((key) => !known.has(key)).sort();
  if (unknown.length > 0) {
    throw InvalidArgument.field(`${field}.${unknown[0]}`, `is not a units field (model, ${UNIT_COUNTS.join(", ")})`);
  }
  const body: Units = { model: checkName(`${field}.model`, value["model"]) };
  let counts = 0;
  for (const key of UNIT_COUNTS) {
    const count = value[key];
    if (count === undefined || count === null) continue;
    if (typeof count !== "number" || !Number.isInteger(count) || count < 0 || count > MAX_COUNT) {
      throw InvalidArgument.field(`${field}.${key}`, `must be an integer from 0 to ${MAX_COUNT}`);
    }
    body[key] = count;
    counts += 1;
  }
  if (counts === 0) throw InvalidArgument.field(field, `needs at least one count (${UNIT_COUNTS.join(", ")})`);
  return body;
}

/** Return a step timestamp for the wire: ISO-8601 UTC `...Z` with milliseconds, or epoch milliseconds as given. */
export function timestampValue(field: string, value: unknown): string | number {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value < 0) throw InvalidArgument.field(field, "epoch milliseconds must be an integer >= 0");
    return value;
  }
  let instant: Date;
  if (value instanceof Date) {
    instant = value;
  } else if (typeof value === "string") {
    if (!ISO_RE.test(value)) throw InvalidArgument.field(field, "must be ISO-8601 with an offset or Z");
    instant = new Date(value.replace(" ", "T").replace(",", "."));
  } else {
    throw InvalidArgument.field(field, "must be a Date, an ISO-8601 string or epoch milliseconds");
  }
  if (Number.isNaN(instant.getTime())) throw InvalidArgument.field(field, "must be a valid date and time");
  return instant.toISOString();
}

/**
 * Return metadata as plain JSON (a Date becomes its ISO string) that the server accepts as it is:
 * at most 4 KiB as the server measures it (Python writes `1e-07` where JavaScript writes `1e-7`),
 * integers within 64 bits, no unpaired surrogates, keys 1-256 characters and not `__name__`.
 */
export function metadataBody(field: string, value: unknown): JsonObject {
  if (!isRecord(value)) throw InvalidArgument.field(field, "must be a JSON object");
  let text: string;
  try {
    text = JSON.stringify(value, (_key, item: unknown) => {
      if (typeof item === "number" && !Number.isFinite(item)) throw new TypeError("NaN and Infinity are not JSON");
      return item;
    });
  } catch (error) {
    throw InvalidArgument.field(field, `must hold only JSON values (${(error as Error).message})`);
  }
  const loaded = JSON.parse(text) as JsonObject;
  const size = metadataSize(loaded, field);
  if (size > MAX_METADATA_BYTES) {
    throw InvalidArgument.field(field, `must be at most ${MAX_METADATA_BYTES} bytes as JSON (got ${size})`);
  }
  return loaded;
}

/** Return the UTF-8 size of metadata's JSON as the server writes it; throw InvalidArgument if the server refuses its values. */
export function metadataSize(value: JsonObject, field = "metadata"): number {
  return byteLength(encode(value)) + checkJson(field, value, 1, false);
}

const LONE_SURROGATE = /[\uD800-\uDFFF]/u;
const INT64 = 2n ** 63n;

/** Check a JSON value as the server does; return how many more bytes the server's JSON of it has. */
function checkJson(field: string, value: unknown, depth: number, inArray: boolean): number {
  if (depth > MAX_METADATA_DEPTH) throw InvalidArgument.field(field, `must not nest deeper than ${MAX_METADATA_DEPTH} levels`);
  let extra = 0;
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw InvalidArgument.field(field, "must not contain unpaired surrogates");
  } else if (typeof value === "number") {
    const written = String(value);
    // The server reads the digits written (-2**63 is written -9223372036854776000: past the bound).
    const integer = /[.e]/.test(written) ? 0n : BigInt(written);
    if (integer >= INT64 || integer < -INT64) throw InvalidArgument.field(field, "integers must fit in 64 bits");
    extra += pythonFloat(written).length - written.length;
  } else if (Array.isArray(value)) {
    if (inArray) throw InvalidArgument.field(field, "arrays must not directly contain arrays");
    for (const item of value) extra += checkJson(field, item, depth + 1, true);
  } else if (isRecord(value)) {
    for (const [key, item] of Object.entries(value)) {
      const length = [...key].length; // code points, as Python counts
      if (length === 0 || length > 256 || RESERVED_RE.test(key)) {
        throw InvalidArgument.field(field, "keys must be 1-256 characters and not of the form __name__");
      }
      extra += checkJson(field, key, depth, false) + checkJson(field, item, depth + 1, false);
    }
  }
  return extra;
}

/** Return how Python writes a number JavaScript wrote as `written` (the same but for exponents). */
function pythonFloat(written: string): string {
  if (!/[.e]/.test(written)) return written; // an integer: the same digits
  const [mantissa, exponent] = Number(written).toExponential().split("e") as [string, string];
  const power = Number(exponent);
  if (power >= -4 && power < 16) return written;
  return `${mantissa}e${power < 0 ? "-" : "+"}${String(Math.abs(power)).padStart(2, "0")}`;
}

/** Return the compact JSON text sent (encoded once per request, so a retry resends it exactly). */
export function encode(body: unknown): string {
  return JSON.stringify(body);
}

/** Return the UTF-8 size of a string. */
export function byteLength(text: string): number {
  return encoder.encode(text).length;
}

function randomHex(bytes: number): string {
  const buffer = new Uint8Array(bytes);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (array: Uint8Array) => Uint8Array } }).crypto;
  if (crypto?.getRandomValues) crypto.getRandomValues(buffer);
  else for (let i = 0; i < bytes; i++) buffer[i] = Math.floor(Math.random() * 256);
  return Array.from(buffer, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Return a fresh operation id, `usage_<epoch ms>_<16 random hex>`. */
export function newOperationId(): string {
  return `usage_${Date.now()}_${randomHex(8)}`;
}

/** Return a fresh session id, `session_<epoch ms>_<16 random hex>`. */
export function newSessionId(): string {
  return `session_${Date.now()}_${randomHex(8)}`;
}

/** Return a fresh reservation id, `res_<epoch ms>_<16 random hex>`. */
export function newReservationId(): string {
  return `res_${Date.now()}_${randomHex(8)}`;
}

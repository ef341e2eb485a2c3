/** The emulator suite `scripts/with-emulators` started: fresh Auth users, callables, and a skip when it is absent. */

import { randomBytes } from "node:crypto";

import { Tally, type TallyOptions } from "../../src/index.js";
import type { Mode } from "../../src/types.js";
import { CaptureLogger } from "./logger.js";

export const FUNCTIONS_URL = (process.env["TALLY_FUNCTIONS_URL"] ?? "").replace(/\/+$/, "");
export const AUTH_HOST = process.env["FIREBASE_AUTH_EMULATOR_HOST"] ?? "";
export const FIRESTORE_HOST = process.env["FIRESTORE_EMULATOR_HOST"] ?? "";
export const PROJECT = process.env["GCLOUD_PROJECT"] ?? "demo-tally";

/** `skip` for node:test: a reason when the emulators are not up, else false. */
export const SKIP: string | false =
  FUNCTIONS_URL && AUTH_HOST
    ? false
    : "needs TALLY_FUNCTIONS_URL and FIREBASE_AUTH_EMULATOR_HOST (run under ./scripts/with-emulators)";

/** A unique suffix for ids and names of one test. */
export function unique(): string {
  return randomBytes(6).toString("hex");
}

/** An Auth emulator user with a current ID token. */
export interface User {
  uid: string;
  email: string;
  password: string;
  token: string;
}

async function identityToolkit(path: string, body: unknown, owner = false): Promise<Record<string, unknown>> {
  const response = await fetch(`http://${AUTH_HOST}/identitytoolkit.googleapis.com/v1/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(owner ? { Authorization: "Bearer owner" } : {}) },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${path} answered ${response.status}: ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** Create a fresh user (with custom claims) in the Auth emulator and sign in for an ID token. */
export async function makeUser(claims?: Record<string, unknown>): Promise<User> {
  const uid = `js-${unique()}`;
  const email = `${uid}@example.com`;
  const password = "correct-horse-battery";
  await identityToolkit(`projects/${PROJECT}/accounts`, { localId: uid, email, password }, true);
  if (claims) {
    await identityToolkit(`projects/${PROJECT}/accounts:update`, { localId: uid, customAttributes: JSON.stringify(claims) }, true);
  }
  const signedIn = await identityToolkit("accounts:signInWithPassword?key=fake-api-key", { email, password, returnSecureToken: true });
  return { uid, email, password, token: String(signedIn["idToken"]) };
}

/** Call a callable function as `user` and return its result (fail on an error). */
export async function call(name: string, user: User, data: unknown = {}): Promise<Record<string, unknown>> {
  const response = await fetch(`${FUNCTIONS_URL}/${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${user.token}` },
    body: JSON.stringify({ data }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${name} answered ${response.status}: ${text}`);
  return (JSON.parse(text) as { result: Record<string, unknown> }).result;
}

/** POST a raw body to an HTTPS function as `user`. */
export async function post(name: string, user: User, body: unknown): Promise<Response> {
  return fetch(`${FUNCTIONS_URL}/${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${user.token}` },
    body: JSON.stringify(body),
  });
}

/** The user's current month through `my_usage`. */
export function myUsage(user: User): Promise<Record<string, unknown>> {
  return call("my_usage", user, {});
}

/** USD (rounded to 9 decimals) as nano-USD. */
export function nanos(usd: unknown): number {
  return Math.round(Number(usd) * 1e9);
}

/** Poll until `predicate()` holds (30 s at most). */
export async function waitUntil(predicate: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** A client for `user` against the real functions (no timer; the test flushes). */
export function tallyFor<M extends Mode = "batched">(user: User, options: Partial<TallyOptions<M>> = {}): Tally<M> {
  return new Tally<M>({
    functionsUrl: FUNCTIONS_URL,
    idToken: () => user.token,
    flushIntervalMs: null,
    backoffBaseMs: 50,
    timeoutMs: 60_000,
    logger: new CaptureLogger(),
    closeAtExit: false,
    ...options,
  });
}

/** Nano-USD of `count` tokens at `perMillion` USD per million tokens, as an exact fraction: [numerator, 10^scale]. */
function exact(count: number, perMillion: string): [bigint, bigint] {
  const [whole = "0", fraction = ""] = perMillion.split(".");
  const scale = 10n ** BigInt(fraction.length);
  const price = BigInt(whole + fraction); // perMillion * scale
  return [BigInt(count) * price * 1000n, scale]; // USD/MTok * 1e9 nanos / 1e6 tokens = * 1000
}

/**
 * What one step costs at a catalog price, computed apart from Tally: each count times its price,
 * summed exactly, rounded once to nano-USD half-even.
 */
export function stepNanos(counts: Record<string, number>, prices: Record<string, string>): bigint {
  let numerator = 0n;
  let denominator = 1n;
  for (const [key, count] of Object.entries(counts)) {
    const price = prices[key];
    if (price === undefined || count === 0) continue;
    const [n, d] = exact(count, price);
    numerator = numerator * d + n * denominator;
    denominator *= d;
  }
  const quotient = numerator / denominator;
  const remainder = numerator % denominator;
  const twice = remainder * 2n;
  if (twice > denominator || (twice === denominator && quotient % 2n === 1n)) return quotient + 1n;
  return quotient;
}

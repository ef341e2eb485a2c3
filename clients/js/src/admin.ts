/**
 * `@tally/client/admin`: an `idToken` for a backend that has the Firebase Admin SDK: it signs in as
 * an account with the `recorder` claim (which may record for any user) and keeps the token fresh.
 * `firebase-admin` is an optional peer dependency, imported only when no `auth` is given.
 */

import { TallyError, Unavailable } from "./errors.js";
import type { FetchLike } from "./transport.js";
import { describe } from "./transport.js";
import { checkUserId } from "./values.js";

/** The part of the Admin SDK's `Auth` that `recorderToken` uses (`getAuth(app)` fits). */
export interface AdminAuth {
  getUser(uid: string): Promise<{ customClaims?: Record<string, unknown> | undefined }>;
  createUser(properties: { uid: string }): Promise<unknown>;
  setCustomUserClaims(uid: string, claims: Record<string, unknown> | null): Promise<void>;
  createCustomToken(uid: string, claims?: Record<string, unknown>): Promise<string>;
}

/** Options of `recorderToken`. */
export interface RecorderTokenOptions {
  /** The Admin SDK app (`initializeApp()`); `getAuth(app)` is used unless `auth` is given. */
  app?: unknown;
  /** An Admin SDK `Auth` (or anything shaped like it) to use instead of `getAuth(app)`. */
  auth?: AdminAuth | undefined;
  /** The recorder account's uid (created if missing, given the `recorder` claim if it lacks it). */
  uid: string;
  /** The project's Web API key (default: `FIREBASE_API_KEY`); not needed with the Auth emulator. */
  apiKey?: string | undefined;
  /** The Auth emulator's `host:port` (default: `FIREBASE_AUTH_EMULATOR_HOST`; `null`: never the emulator). */
  emulatorHost?: string | null | undefined;
  /** Refresh this long before the token expires (5 minutes). */
  refreshMarginMs?: number | undefined;
  /** The `fetch` to use (default: the global one). */
  fetch?: FetchLike | undefined;
  /** The Identity Toolkit base URL (tests; default: Google's, or the emulator's). */
  identityToolkitUrl?: string | undefined;
}

function env(name: string): string | undefined {
  const value = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
  return value === "" ? undefined : value;
}

async function adminAuth(options: RecorderTokenOptions): Promise<AdminAuth> {
  if (options.auth !== undefined) return options.auth;
  const specifier = "firebase-admin/auth";
  const module = (await import(specifier)) as { getAuth: (app?: unknown) => AdminAuth };
  return module.getAuth(options.app as never);
}

function isAlreadyExists(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /already-exists|uid-already-exists/.test(code);
}

function isNotFound(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.includes("user-not-found");
}

/** Make sure the account exists and has `recorder: true`, keeping its other claims. */
async function ensureRecorder(auth: AdminAuth, uid: string): Promise<void> {
  let claims: Record<string, unknown> = {};
  try {
    claims = (await auth.getUser(uid)).customClaims ?? {};
  } catch (error) {
    if (!isNotFound(error)) throw error;
    try {
      await auth.createUser({ uid });
    } catch (created) {
      if (!isAlreadyExists(created)) throw created;
      claims = (await auth.getUser(uid)).customClaims ?? {};
    }
  }
  if (claims["recorder"] !== true) await auth.setCustomUserClaims(uid, { ...claims, recorder: true });
}

/**
 * Return an `idToken` function for `new Tally({ idToken })` that signs in as the recorder `uid`.
 *
 * On first use it makes sure the account exists with the `recorder` claim (Admin SDK), signs in
 * with a custom token (Identity Toolkit `accounts:signInWithCustomToken`, which the Auth emulator
 * serves too), caches the ID token and signs in again `refreshMarginMs` before it expires, or
 * when called with `forceRefresh` (as the client does after a 401).
 * Concurrent calls share one sign-in.
 */
export function recorderToken(options: RecorderTokenOptions): (forceRefresh?: boolean) => Promise<string> {
  const uid = checkUserId("uid", options.uid);
  const margin = options.refreshMarginMs ?? 5 * 60_000;
  const emulator = options.emulatorHost === null ? undefined : (options.emulatorHost ?? env("FIREBASE_AUTH_EMULATOR_HOST"));
  const apiKey = options.apiKey ?? env("FIREBASE_API_KEY") ?? (emulator !== undefined ? "fake-api-key" : undefined);
  const base =
    options.identityToolkitUrl ??
    (emulator !== undefined ? `http://${emulator}/identitytoolkit.googleapis.com/v1` : "https://identitytoolkit.googleapis.com/v1");
  let cached: { token: string; refreshAt: number } | undefined;
  let inFlight: Promise<string> | undefined;
  let ensured = false;

  const signIn = async (): Promise<string> => {
    if (apiKey === undefined) {
      throw new TallyError("recorderToken needs the project's Web API key: pass apiKey or set FIREBASE_API_KEY", {
        status: "FAILED_PRECONDITION",
      });
    }
    const auth = await adminAuth(options);
    if (!ensured) {
      await ensureRecorder(auth, uid);
      ensured = true;
    }
    const customToken = await auth.createCustomToken(uid, { recorder: true });
    const fetchImpl = options.fetch ?? (globalThis.fetch as FetchLike);
    let response: Response;
    try {
      response = await fetchImpl(`${base}/accounts:signInWithCustomToken?key=${encodeURIComponent(apiKey)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: customToken, returnSecureToken: true }),
      });
    } catch (error) {
      throw new Unavailable(`signInWithCustomToken: ${describe(error)}`, { cause: error });
    }
    const text = await response.text();
    if (!response.ok) {
      const make = response.status >= 500 ? Unavailable : TallyError;
      throw new make(`signInWithCustomToken answered ${response.status}: ${text.slice(0, 300)}`, { httpStatus: response.status });
    }
    const body = JSON.parse(text) as { idToken?: unknown; expiresIn?: unknown };
    if (typeof body.idToken !== "string") throw new Unavailable("signInWithCustomToken answered without an idToken");
    const lifetimeMs = (Number(body.expiresIn) || 3600) * 1000;
    cached = { token: body.idToken, refreshAt: Date.now() + Math.max(0, lifetimeMs - margin) };
    return body.idToken;
  };

  return async (forceRefresh) => {
    if (forceRefresh === true && inFlight === undefined) cached = undefined;
    if (cached !== undefined && Date.now() < cached.refreshAt) return cached.token;
    inFlight ??= signIn().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };
}

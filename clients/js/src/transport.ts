/** POST JSON to Tally's functions with auth headers, retries, backoff and jitter. */

import { TallyError, Unauthenticated, Unavailable, errorFromBody, isRecord, retriableStatus } from "./errors.js";
import type { Logger } from "./log.js";
import { encode } from "./values.js";

/** Returns a current token; called before every request, and once more after a 401 with `forceRefresh` true. */
export type TokenSource = (forceRefresh?: boolean) => string | Promise<string>;

/** The `fetch` the client uses (the global one by default). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** How the transport sends. */
export interface TransportOptions {
  functionsUrl: string;
  idToken: TokenSource;
  appCheckToken?: TokenSource | undefined;
  timeoutMs: number;
  maxRetries: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  fetch: FetchLike;
  sleep: (ms: number) => Promise<void>;
  logger: Logger;
}

export const APP_CHECK_HEADER = "X-Firebase-AppCheck";

/** Send one JSON body to a function, retrying transient failures with the same text. */
export class Transport {
  /** The base URL of the functions, without a trailing slash. */
  readonly baseUrl: string;
  /** Milliseconds the server's clock is ahead of this machine's, from the last readable `Date` header. */
  serverClockOffsetMs: number | undefined = undefined;
  private readonly options: TransportOptions;

  constructor(options: TransportOptions) {
    if (!Number.isInteger(options.maxRetries) || options.maxRetries < 0) throw new RangeError("maxRetries must be an integer >= 0");
    const url = new URL(options.functionsUrl); // throws at once on a bad URL
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new RangeError("functionsUrl must be http(s)");
    this.baseUrl = options.functionsUrl.replace(/\/+$/, "");
    this.options = options;
  }

  /** POST `body` to the HTTPS function `name`; return its 200 JSON object or throw a TallyError. */
  async post(name: string, body: unknown): Promise<Record<string, unknown>> {
    const result = await this.send(name, encode(body));
    if (!isRecord(result)) throw new Unavailable(`${name} answered 200 with a body that is not a JSON object`, { httpStatus: 200 });
    return result;
  }

  /** Call the callable function `name` with `data` (callable protocol) and return its `result`. */
  async call(name: string, data: unknown): Promise<unknown> {
    const response = await this.send(name, encode({ data }));
    if (!isRecord(response) || !("result" in response)) throw new Unavailable(`${name} answered 200 without a result`, { httpStatus: 200 });
    return response["result"];
  }

  private async headers(refresh: boolean): Promise<Record<string, string>> {
    let token: string;
    let appCheck: string | undefined;
    try {
      token = await (refresh ? this.options.idToken(true) : this.options.idToken());
      appCheck = this.options.appCheckToken ? await this.options.appCheckToken() : undefined;
    } catch (error) {
      throw new Unavailable(`the token callable failed: ${describe(error)}`, { cause: error });
    }
    const headers: Record<string, string> = {
      "Content-Type": "application/json; charset=utf-8",
      Authorization: `Bearer ${token}`,
    };
    if (appCheck !== undefined) headers[APP_CHECK_HEADER] = appCheck;
    return headers;
  }

  private async send(name: string, data: string): Promise<unknown> {
    const url = `${this.baseUrl}/${name}`;
    let refreshed = false;
    let refresh = false; // only the attempt right after the 401 forces a refresh
    for (let attempt = 0; ; ) {
      const headers = await this.headers(refresh);
      refresh = false;
      let error: TallyError;
      let retryAfterMs: number | undefined;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), this.options.timeoutMs);
      try {
        const response = await this.options.fetch(url, { method: "POST", headers, body: data, signal: controller.signal });
        this.noteServerClock(response);
        const text = await response.text();
        if (response.status >= 200 && response.status < 300) {
          try {
            return JSON.parse(text) as unknown;
          } catch {
            error = new Unavailable(`${name} answered ${response.status} with a body that is not JSON`, { httpStatus: response.status });
          }
        } else {
          error = errorFromBody(response.status, parseOrNull(text), `HTTP ${response.status} ${response.statusText}`.trim());
          if (response.status === 401 && !refreshed) {
            refreshed = refresh = true; // the next token is asked for with forceRefresh
            this.options.logger.info(`tally: ${name} answered 401; retrying once with a fresh token`);
            continue;
          }
          if (error instanceof Unauthenticated || !retriableStatus(response.status)) throw error;
          retryAfterMs = retryAfter(response);
        }
      } catch (caught) {
        if (caught instanceof TallyError) throw caught;
        error = new Unavailable(`${name}: ${describe(caught)}`, { cause: caught });
      } finally {
        clearTimeout(timer);
      }
      if (attempt >= this.options.maxRetries) throw error;
      const delay = this.delay(attempt, retryAfterMs);
      this.options.logger.info(`tally: ${name} failed (${error}); retry ${attempt + 1}/${this.options.maxRetries} in ${delay} ms`);
      await this.options.sleep(delay);
      attempt += 1;
    }
  }

  /** Learn the server's clock from the response's `Date` header (1 s resolution: add half a second). */
  private noteServerClock(response: Response): void {
    const value = response.headers.get("Date");
    if (!value) return;
    const serverTime = Date.parse(value);
    if (Number.isNaN(serverTime)) return;
    this.serverClockOffsetMs = serverTime + 500 - Date.now();
  }

  private delay(attempt: number, retryAfterMs: number | undefined): number {
    let delay = Math.min(this.options.backoffMaxMs, this.options.backoffBaseMs * 2 ** attempt);
    delay *= 0.5 + Math.random() / 2; // jitter
    if (retryAfterMs !== undefined) delay = Math.max(delay, Math.min(retryAfterMs, this.options.backoffMaxMs));
    return Math.round(delay);
  }
}

function parseOrNull(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

function retryAfter(response: Response): number | undefined {
  const value = response.headers.get("Retry-After");
  if (value === null || value.trim() === "") return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** Return `Name: message` for any thrown value. */
export function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? ` (${error.cause.message})` : "";
    return `${error.name}: ${error.message}${cause}`;
  }
  return String(error);
}

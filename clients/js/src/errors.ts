/** Errors raised by the Tally client, named after the server's canonical statuses. */

/** One `{field, problem}` item of an error's `details`. */
export interface ErrorDetail {
  field?: string;
  problem?: string;
  [key: string]: unknown;
}

/** The fields of a Tally error besides its message. */
export interface TallyErrorInit {
  status?: string | undefined;
  details?: readonly ErrorDetail[] | undefined;
  httpStatus?: number | undefined;
  cause?: unknown;
}

/**
 * Base of every error the client raises.
 *
 * `status` is the canonical status (`INVALID_ARGUMENT`, ...), `details` the server's
 * `{field, problem}` list, `httpStatus` the HTTP status (undefined for errors found before
 * anything was sent), `steps` the steps of a `record_steps` request the server refused,
 * `userId` and `sessionId` that request's `userId` and session id.
 */
export class TallyError extends Error {
  /** The status used when the server gave none. */
  static readonly defaultStatus: string = "UNKNOWN";
  /** The canonical status, e.g. `INVALID_ARGUMENT`. */
  readonly status: string;
  /** The server's `{field, problem}` details. */
  readonly details: ErrorDetail[];
  /** The HTTP status, if a response was received. */
  readonly httpStatus: number | undefined;
  /** The refused steps (as sent), for a refused `record_steps` request. */
  steps: Record<string, unknown>[] = [];
  /** The refused request's `userId` (undefined: the caller). */
  userId: string | undefined = undefined;
  /** The refused request's session id, if any. */
  sessionId: string | undefined = undefined;

  constructor(message: string, init: TallyErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status ?? (new.target as typeof TallyError).defaultStatus;
    this.details = [...(init.details ?? [])];
    this.httpStatus = init.httpStatus;
  }

  /** Return `STATUS: message`. */
  override toString(): string {
    return `${this.status}: ${this.message}`;
  }
}

/** A request or value the server (or the client, before sending) refuses: 400. */
export class InvalidArgument extends TallyError {
  static override readonly defaultStatus: string = "INVALID_ARGUMENT";

  /** Return the error for one bad field, shaped like the server's. */
  static field(field: string, problem: string): InvalidArgument {
    return new InvalidArgument(`${field}: ${problem}`, { details: [{ field, problem }] });
  }
}

/** No valid ID token (or App Check token) even after one refresh: 401. */
export class Unauthenticated extends TallyError {
  static override readonly defaultStatus: string = "UNAUTHENTICATED";
}

/** The caller may not do this (e.g. record for another user without `recorder`): 403. */
export class PermissionDenied extends TallyError {
  static override readonly defaultStatus: string = "PERMISSION_DENIED";
}

/** The server knows no such thing (e.g. completing an unknown session): 404. */
export class NotFound extends TallyError {
  static override readonly defaultStatus: string = "NOT_FOUND";
}

/** The request conflicts with the current state (e.g. a step for a completed session): 409. */
export class FailedPrecondition extends TallyError {
  static override readonly defaultStatus: string = "FAILED_PRECONDITION";
}

/** Tally could not be reached or kept failing (network, 5xx, 429) after every retry. */
export class Unavailable extends TallyError {
  static override readonly defaultStatus: string = "UNAVAILABLE";
}

/** The client holds `maxQueuedSteps` unsent steps already and refuses more. */
export class QueueFull extends TallyError {
  static override readonly defaultStatus: string = "RESOURCE_EXHAUSTED";
}

/**
 * `reserve_spend` answered `allowed: false`: the user's budget does not admit the estimate.
 *
 * `reason` names what refused (`MONTHLY_COST_LIMIT`, `FREE_RUNS`, `UNPRICED`, ...), `usage`
 * the user's month as the server sent it, `response` the whole response body.
 */
export class BudgetExceeded extends TallyError {
  static override readonly defaultStatus: string = "RESOURCE_EXHAUSTED";
  /** What refused the reservation, e.g. `MONTHLY_COST_LIMIT`. */
  readonly reason: string | null;
  /** The user's month as `reserve_spend` answered it. */
  readonly usage: Record<string, unknown>;
  /** The whole `reserve_spend` response. */
  readonly response: Record<string, unknown>;
  /** The refused reservation's id. */
  readonly reservationId: string;

  constructor(response: Record<string, unknown>, reservationId: string) {
    const reason = typeof response["reason"] === "string" ? response["reason"] : null;
    super(`budget exceeded (${reason ?? "no reason given"})`, { httpStatus: 200 });
    this.reason = reason;
    const usage = response["usage"];
    this.usage = isRecord(usage) ? { ...usage } : {};
    this.response = { ...response };
    this.reservationId = reservationId;
  }
}

/** Return whether a value is a plain JSON-like object (not an array, not null). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

type ErrorClass = new (message: string, init?: TallyErrorInit) => TallyError;

const BY_STATUS: Record<string, ErrorClass> = {
  INVALID_ARGUMENT: InvalidArgument,
  UNAUTHENTICATED: Unauthenticated,
  PERMISSION_DENIED: PermissionDenied,
  NOT_FOUND: NotFound,
  FAILED_PRECONDITION: FailedPrecondition,
  UNAVAILABLE: Unavailable,
};
const BY_HTTP: Record<number, ErrorClass> = {
  400: InvalidArgument,
  401: Unauthenticated,
  403: PermissionDenied,
  404: NotFound,
  409: FailedPrecondition,
};
const OTHER_HTTP: Record<number, string> = {
  405: "METHOD_NOT_ALLOWED",
  413: "PAYLOAD_TOO_LARGE",
  415: "UNSUPPORTED_MEDIA_TYPE",
};

/** Return whether an HTTP status is worth retrying (5xx, 408, 429). */
export function retriableStatus(httpStatus: number): boolean {
  return httpStatus >= 500 || httpStatus === 408 || httpStatus === 429;
}

/** Return the TallyError for an error response (`{"error": {status, message, details}}`). */
export function errorFromBody(httpStatus: number, body: unknown, fallbackMessage = ""): TallyError {
  const error = isRecord(body) ? body["error"] : undefined;
  let status: string | undefined;
  let message = fallbackMessage || `HTTP ${httpStatus}`;
  let details: ErrorDetail[] = [];
  if (isRecord(error)) {
    if (typeof error["status"] === "string") status = error["status"];
    if (typeof error["message"] === "string") message = error["message"];
    const raw = error["details"];
    if (Array.isArray(raw)) details = raw.filter(isRecord).map((item) => ({ ...item }));
  }
  let cls: ErrorClass;
  if (status !== undefined && status in BY_STATUS) cls = BY_STATUS[status] as ErrorClass;
  else if (retriableStatus(httpStatus)) cls = Unavailable;
  else cls = BY_HTTP[httpStatus] ?? TallyError;
  const defaultStatus =
    cls === TallyError ? (OTHER_HTTP[httpStatus] ?? `HTTP_${httpStatus}`) : (cls as unknown as typeof TallyError).defaultStatus;
  return new cls(message, { status: status ?? defaultStatus, details, httpStatus });
}

/**
 * `@tally/client`: record what each user's paid API and AI calls cost, from JavaScript/TypeScript.
 *
 * No runtime dependency: the global `fetch` (Node 18+, browsers, workers).
 */

export { Tally, type TallyOptions, type MyUsageOptions } from "./client.js";
export { Session } from "./session.js";
export { Reservation } from "./reservation.js";
export {
  BudgetExceeded,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  QueueFull,
  TallyError,
  Unauthenticated,
  Unavailable,
  type ErrorDetail,
} from "./errors.js";
export type { Logger } from "./log.js";
export type { FetchLike, TokenSource } from "./transport.js";
export type {
  Estimate,
  Mode,
  OnRefused,
  RecordResponse,
  RecordResult,
  Refusal,
  ReservationStepInput,
  ReserveOptions,
  SessionOptions,
  SessionReserveOptions,
  SessionStepInput,
  StepInput,
  UsageAnswer,
} from "./types.js";
export type { JsonObject, Money, Timestamp, Units } from "./values.js";

/** This package's version. */
export const VERSION = "0.1.0";

/** The public shapes of the client's inputs and of the server's answers. */

import type { TallyError } from "./errors.js";
import type { JsonObject, Money, Timestamp, Units } from "./values.js";

/** `batched` (default): `record()` queues and returns the id; `immediate`: it sends at once and returns a promise. */
export type Mode = "batched" | "immediate";

/** What `record()` and `Session.step()` return: the operation id, or in `immediate` mode a promise of it. */
export type RecordResult<M extends Mode> = M extends "immediate" ? Promise<string> : string;

/** One step (a paid call) to record. Give `cost`, `units`, or both. */
export interface StepInput {
  /** What the user did (`google_maps_autocomplete`, `chat`): 1-100 of letters, digits, `_ - . : /`. */
  feature: string;
  /** Who was paid (`openai`, `google_maps`). */
  provider: string;
  /** USD, as a decimal string (`"0.00283"`), a number, or a bigint. */
  cost?: Money | undefined;
  /** Token counts priced by Tally. */
  units?: Units | undefined;
  /** `AI` or `API` (any legacy spelling); default `AI` with units, else `API`. */
  usageType?: string | undefined;
  /** Whether the call counts as a billable run (default false). */
  isBillableRun?: boolean | undefined;
  /** When it happened (default: now, by the client's clock corrected by the server's). */
  timestamp?: Timestamp | undefined;
  /** A JSON object of at most 4 KiB. */
  metadata?: JsonObject | undefined;
  /** For `recorder`/`admin` callers recording for someone else. */
  userId?: string | undefined;
  /** Your own idempotency key (default: `usage_<ms>_<hex>`). */
  operationId?: string | undefined;
  /** Settles this reservation (use `Reservation.record` rather than setting it yourself). */
  reservationId?: string | undefined;
}

/** A step of a session: the feature defaults to the session's; the user is the session's. */
export type SessionStepInput = Omit<StepInput, "feature" | "userId"> & { feature?: string | undefined };

/** A step of a reservation: provider and feature default to the reservation's. */
export type ReservationStepInput = Omit<StepInput, "feature" | "provider" | "userId" | "reservationId"> & {
  feature?: string | undefined;
  provider?: string | undefined;
};

/** What a reservation holds: a `cost` or `units` (priced by Tally), with the provider and feature. */
export interface Estimate {
  cost?: Money | undefined;
  units?: Units | undefined;
  /** Needed to price `units` (without it Tally refuses the estimate as `UNPRICED`). */
  provider?: string | undefined;
  /** Lets the gate check the user's limits for this feature. */
  feature?: string | undefined;
  isBillableRun?: boolean | undefined;
}

/** Options of `tally.reserve()`. */
export interface ReserveOptions {
  estimate: Estimate;
  /** For `recorder`/`admin` callers reserving for someone else. */
  userId?: string | undefined;
  /** 10-3600 (default 300). */
  ttlSeconds?: number | undefined;
  reservationId?: string | undefined;
}

/** Options of `session.reserve()`: the user is the session's; the feature defaults to the session's. */
export type SessionReserveOptions = Omit<ReserveOptions, "userId">;

/** Options of `tally.session()`. */
export interface SessionOptions {
  feature?: string | undefined;
  userId?: string | undefined;
  sessionId?: string | undefined;
}

/** The user's month as the server reports it (`usage` in `record_steps`, `reserve_spend`, `my_usage`). */
export interface UsageAnswer {
  month: string;
  totalCost: number;
  apiCalls?: number;
  billableRuns?: number;
  limits?: Record<string, unknown>;
  [key: string]: unknown;
}

/** A `record_steps` response. */
export interface RecordResponse {
  recorded: number;
  duplicates: number;
  session: { id: string; status: string; stepCount?: number; totalCost?: number } | null;
  usage: UsageAnswer;
  warnings: { field: string; problem: string }[];
  [key: string]: unknown;
}

/** Steps the server refused for good: what was sent (`steps`), why (`error`), and for whom. */
export interface Refusal {
  steps: Record<string, unknown>[];
  error: TallyError;
  userId: string | undefined;
  sessionId: string | undefined;
}

/** The `onRefused` callback: the refused steps (as sent) and the server's error. */
export type OnRefused = (steps: Record<string, unknown>[], error: TallyError) => void;

/**
 * `@tally/client/web`: the signed-in user's live usage, for an app's own page, from their own
 * `TallyUsers/{uid}` document (Tally's true count; the user may read it). Needs the modular
 * `firebase/firestore` SDK (an optional peer dependency of this package).
 */

import { doc, onSnapshot, type Firestore, type FirestoreError, type Unsubscribe } from "firebase/firestore";

/** Cost, calls and billable runs (USD as a number rounded to 9 decimals, and exact nano-USD). */
export interface Counts {
  cost: number;
  costNanos: number;
  apiCalls: number;
  billableRuns: number;
}

/** A user's usage as `watchUsage` reports it: the month, limits, holds, lifetime and sessions. */
export interface LiveUsage extends Counts {
  uid: string;
  /** `YYYY-MM` (UTC). */
  month: string;
  /** Whether Tally has counted anything for this user yet. */
  exists: boolean;
  limits: {
    monthlyCostLimit: number;
    monthlyCostLimitNanos: number;
    monthlyFreeRuns: number;
    costRemaining: number;
    freeRunsRemaining: number;
    /** Past either limit. */
    exceeded: boolean;
    /** At 80% of either limit or more. */
    warning: boolean;
  };
  /** Active reservations (current month only). */
  held: { cost: number; costNanos: number; runs: number };
  lifetime: Counts;
  sessions: { active: number; completed: number };
}

/** The limits of a user who has none of their own (Tally's defaults: $5 and 100 runs). */
export interface UsageDefaults {
  monthlyCostLimitNanos: number;
  monthlyFreeRuns: number;
}

/** Options of `watchUsage`. */
export interface WatchUsageOptions {
  /** `YYYY-MM` (default: the current UTC month, re-read at every change). */
  month?: string | undefined;
  /** The limits of a user without their own (default $5 and 100, as Tally's defaults). */
  defaults?: Partial<UsageDefaults> | undefined;
  /** Called if the listener fails (e.g. signed out: permission denied). */
  onError?: ((error: FirestoreError) => void) | undefined;
}

const DEFAULTS: UsageDefaults = { monthlyCostLimitNanos: 5_000_000_000, monthlyFreeRuns: 100 };

function num(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

function obj(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}

/** Return nano-USD as USD rounded to 9 decimals. */
export function nanosToUsd(nanos: number): number {
  return Math.round(nanos) / 1e9;
}

function counts(fields: unknown): Counts {
  const f = obj(fields);
  const costNanos = num(f["costNanos"]);
  return { cost: nanosToUsd(costNanos), costNanos, apiCalls: num(f["apiCalls"]), billableRuns: num(f["billableRuns"]) };
}

/** Return the current UTC month, `YYYY-MM`. */
export function currentMonth(now: Date = new Date()): string {
  return now.toISOString().slice(0, 7);
}

/** Return the usage a `TallyUsers/{uid}` document's data shows for `month`, as `my_usage` computes it. */
export function usageFromDocument(
  uid: string,
  data: Record<string, unknown> | undefined,
  month: string = currentMonth(),
  defaults: Partial<UsageDefaults> = {},
): LiveUsage {
  const usage = obj(data?.["usage"]);
  const used = counts(obj(usage["months"])[month]);
  const stored = obj(usage["limits"]);
  const costLimit = num(stored["monthlyCostLimitNanos"] ?? defaults.monthlyCostLimitNanos ?? DEFAULTS.monthlyCostLimitNanos);
  const freeRuns = num(stored["monthlyFreeRuns"] ?? defaults.monthlyFreeRuns ?? DEFAULTS.monthlyFreeRuns);
  const heldFields = obj(usage["held"]);
  const current = month === currentMonth();
  const heldNanos = current ? Math.max(0, num(heldFields["costNanos"])) : 0;
  const heldRuns = current ? Math.max(0, num(heldFields["runs"])) : 0;
  const warning = (value: number, max: number): boolean => (max > 0 ? value * 5 >= max * 4 : value > 0);
  const sessions = obj(usage["sessions"]);
  return {
    uid,
    month,
    exists: data !== undefined && Object.keys(usage).length > 0,
    ...used,
    limits: {
      monthlyCostLimit: nanosToUsd(costLimit),
      monthlyCostLimitNanos: costLimit,
      monthlyFreeRuns: freeRuns,
      costRemaining: nanosToUsd(Math.max(0, costLimit - used.costNanos - heldNanos)),
      freeRunsRemaining: Math.max(0, freeRuns - used.billableRuns - heldRuns),
      exceeded: used.costNanos > costLimit || used.billableRuns > freeRuns,
      warning: warning(used.costNanos, costLimit) || warning(used.billableRuns, freeRuns),
    },
    held: { cost: nanosToUsd(heldNanos), costNanos: heldNanos, runs: heldRuns },
    lifetime: counts(usage["lifetime"]),
    sessions: { active: Math.max(0, num(sessions["active"])), completed: num(sessions["completed"]) },
  };
}

/**
 * Call `callback` with the signed-in user's usage now and at every change of their
 * `TallyUsers/{uid}` document; return the function that stops listening.
 *
 * `firestore` is the app's `getFirestore()`; `uid` must be the signed-in user's own (the rules let
 * a user read only their own document).
 */
export function watchUsage(
  firestore: Firestore,
  uid: string,
  callback: (usage: LiveUsage) => void,
  options: WatchUsageOptions = {},
): Unsubscribe {
  return onSnapshot(
    doc(firestore, "TallyUsers", uid),
    (snapshot) => {
      const data = snapshot.exists() ? (snapshot.data() as Record<string, unknown>) : undefined;
      callback(usageFromDocument(uid, data, options.month ?? currentMonth(), options.defaults));
    },
    (error) => {
      if (options.onError) options.onError(error);
      else console.error(`tally: watching the usage of ${uid} failed: ${error.message}`);
    },
  );
}

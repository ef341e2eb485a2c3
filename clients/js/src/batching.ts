/** Steps queued per user and session, and their split into requests within every per-request bound. */

import { InvalidArgument, type TallyError } from "./errors.js";
import type { Logger } from "./log.js";
import { MAX_METADATA_BYTES, MAX_NAMES, MAX_STEPS, byteLength, encode, metadataSize, type JsonObject } from "./values.js";

/** Bytes of JSON a `record_steps` request may hold (the server refuses more); bodies are measured exactly. */
export const MAX_BODY_BYTES = 256 * 1024;

/** One step as sent on the wire. */
export type StepBody = Record<string, unknown> & { operationId: string; feature: string; provider: string };

/** What happened to a step sent in `immediate` mode (undefined while unsent). */
export type Outcome = { ok: true } | { ok: false; error: TallyError };

/** One checked step; `stampedAt`: this machine's clock (ms) when the client stamped it, else undefined. */
export class Pending {
  readonly size: number;
  outcome: Outcome | undefined = undefined;

  constructor(
    readonly body: StepBody,
    readonly stampedAt: number | undefined = undefined,
    readonly clockFixes = 0,
  ) {
    this.size = byteLength(encode(body));
  }

  /** Return a step with another body that keeps this one's stamp and stands for the same original. */
  withBody(body: StepBody, clockFixes = this.clockFixes): Pending {
    const next = new Pending(body, this.stampedAt, clockFixes);
    next.link = this.link ?? this;
    return next;
  }

  /** The step this one replaces (a re-record or a restamp), whose outcome an `immediate` caller waits for. */
  link: Pending | undefined = undefined;

  /** Settle this step's outcome (and the original's it replaces). */
  settle(outcome: Outcome): void {
    this.outcome = outcome;
    if (this.link) this.link.outcome = outcome;
  }
}

/** Group key: `${userId}\u0000${sessionId}` ("" for none). */
export type GroupKey = string;

/** Return the key of a user's session (or standalone) group. */
export function groupKey(userId: string | undefined, sessionId: string | undefined): GroupKey {
  return `${userId ?? ""}\u0000${sessionId ?? ""}`;
}

/** Unsent steps of one user in one session (or standalone), oldest first. */
export class Group {
  constructor(
    readonly userId: string | undefined,
    readonly sessionId: string | undefined,
    readonly sessionFeature: string | undefined,
    public steps: Pending[] = [],
    public complete = false,
  ) {}

  get key(): GroupKey {
    return groupKey(this.userId, this.sessionId);
  }
}

/** One `record_steps` request within every per-request bound (steps, names, models, bytes). */
export class Batch {
  constructor(
    readonly group: Group,
    readonly steps: Pending[],
    public complete: boolean,
  ) {}

  get key(): GroupKey {
    return this.group.key;
  }

  /** Return the request body. */
  body(): Record<string, unknown> {
    const body: Record<string, unknown> = {};
    if (this.group.userId !== undefined) body["userId"] = this.group.userId;
    if (this.group.sessionId !== undefined) {
      const session: Record<string, unknown> = { id: this.group.sessionId, complete: this.complete };
      if (this.group.sessionFeature !== undefined) session["feature"] = this.group.sessionFeature;
      body["session"] = session;
    }
    body["steps"] = this.steps.map((step) => step.body);
    return body;
  }
}

function modelOf(step: Pending): string | undefined {
  const units = step.body["units"];
  const model = typeof units === "object" && units !== null ? (units as Record<string, unknown>)["model"] : undefined;
  return typeof model === "string" ? model : undefined;
}

/**
 * Split a group's steps into requests within every per-request bound; the last one carries `complete`.
 *
 * A request holds at most 100 steps, 20 distinct features, 20 distinct providers, 20 distinct
 * `units.model`, one step per operation id, and MAX_BODY_BYTES of JSON (measured exactly: the
 * envelope, each step's JSON and the commas between them).
 */
export function splitBatches(group: Group): Batch[] {
  const envelope = byteLength(encode(new Batch(group, [], false).body())); // "false" outweighs "true"
  const batches: Batch[] = [];
  let current: Pending[] = [];
  let features = new Set<string>();
  let providers = new Set<string>();
  let models = new Set<string>();
  let operations = new Set<string>();
  let size = envelope;
  for (const step of group.steps) {
    const { feature, provider, operationId } = step.body;
    const model = modelOf(step);
    const full =
      current.length >= MAX_STEPS ||
      (!features.has(feature) && features.size >= MAX_NAMES) ||
      (!providers.has(provider) && providers.size >= MAX_NAMES) ||
      (model !== undefined && !models.has(model) && models.size >= MAX_NAMES) ||
      operations.has(operationId) ||
      size + 1 + step.size > MAX_BODY_BYTES;
    if (current.length > 0 && full) {
      batches.push(new Batch(group, current, false));
      current = [];
      features = new Set();
      providers = new Set();
      models = new Set();
      operations = new Set();
      size = envelope;
    }
    size += step.size + (current.length > 0 ? 1 : 0);
    current.push(step);
    operations.add(operationId);
    features.add(feature);
    providers.add(provider);
    if (model !== undefined) models.add(model);
  }
  if (current.length > 0 || group.complete) batches.push(new Batch(group, current, false));
  const last = batches[batches.length - 1];
  if (last && group.complete) last.complete = true;
  return batches;
}

/**
 * Return metadata holding `sessionId` (as `sessionId`, or `tallySessionId` beside an app's own),
 * within 4 KiB as the server measures it; if the rest does not fit, only the session id (`drop` is told).
 */
export function metadataWithSession(metadata: JsonObject, sessionId: string, drop?: () => void): JsonObject {
  const existing = metadata["sessionId"];
  const key = existing === undefined || existing === null || existing === sessionId ? "sessionId" : "tallySessionId";
  const rest = { ...metadata };
  delete rest[key];
  const merged: JsonObject = { [key]: sessionId, ...rest };
  if (metadataSize(merged) <= MAX_METADATA_BYTES) return merged;
  drop?.();
  return { [key]: sessionId };
}

/** Return a session batch's steps as standalone requests (same operation ids, session id in metadata). */
export function standaloneBatches(batch: Batch, logger: Logger): Batch[] {
  const sessionId = batch.group.sessionId;
  if (sessionId === undefined) return [batch];
  const steps = batch.steps.map((step) => {
    const metadata = (step.body["metadata"] as JsonObject | undefined) ?? {};
    const drop = (): void =>
      logger.error(`tally: step ${step.body.operationId}: no room for its session id in its metadata; re-recorded without the rest: ${encode(metadata)}`);
    return step.withBody({ ...step.body, metadata: metadataWithSession(metadata, sessionId, drop) });
  });
  return splitBatches(new Group(batch.group.userId, undefined, undefined, steps));
}

const STEP_FIELD = /^steps\[(\d+)\](?:\.(.+))?$/;
const BOUND_PROBLEM = /distinct|at most \d+ steps/i;
const COMPLETED_SESSION = /\bcompleted\b|accepts no new steps/i;

/** Return the fields a 400 names per step index, or undefined if it names no step or anything else too. */
export function badSteps(error: TallyError, count: number): Map<number, Set<string>> | undefined {
  if (!(error instanceof InvalidArgument) || error.details.length === 0) return undefined;
  const bad = new Map<number, Set<string>>();
  for (const detail of error.details) {
    const match = STEP_FIELD.exec(String(detail.field ?? ""));
    if (match === null || Number(match[1]) >= count) return undefined;
    const index = Number(match[1]);
    const fields = bad.get(index) ?? new Set<string>();
    fields.add(match[2] ?? "");
    bad.set(index, fields);
  }
  return bad;
}

/** Return whether the server refused a request for its size or its number of steps or names. */
export function overABound(error: TallyError): boolean {
  if (error.httpStatus === 413) return true;
  return (
    error instanceof InvalidArgument &&
    error.details.length > 0 &&
    error.details.every((detail) => BOUND_PROBLEM.test(String(detail.problem ?? "")))
  );
}

/** Return whether a session batch was refused because its session was completed meanwhile (409). */
export function sessionWasCompleted(batch: Batch, error: TallyError): boolean {
  return (
    error.httpStatus === 409 &&
    error.status === "FAILED_PRECONDITION" &&
    batch.group.sessionId !== undefined &&
    batch.steps.length > 0 &&
    COMPLETED_SESSION.test(error.message)
  );
}

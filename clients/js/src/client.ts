/** The Tally client: a queue of steps, batched within the SPEC's limits, sent with retries; sessions and the gate. */

import {
  Batch,
  Group,
  MAX_BODY_BYTES,
  Pending,
  badSteps,
  groupKey,
  overABound,
  sessionWasCompleted,
  splitBatches,
  standaloneBatches,
  type GroupKey,
  type StepBody,
} from "./batching.js";
import { InvalidArgument, QueueFull, TallyError, Unavailable, isRecord } from "./errors.js";
import { closeAtExit, forgetAtExit } from "./exit.js";
import { defaultLogger, type Logger } from "./log.js";
import { Reservation } from "./reservation.js";
import { Session } from "./session.js";
import { Transport, describe, type FetchLike, type TokenSource } from "./transport.js";
import type {
  Mode,
  OnRefused,
  RecordResponse,
  RecordResult,
  Refusal,
  ReserveOptions,
  SessionOptions,
  StepInput,
} from "./types.js";
import * as v from "./values.js";

export { MAX_BODY_BYTES };

/** Milliseconds this machine's clock may be off the server's before the client stamps steps by the server's. */
export const CLOCK_SKEW_TOLERANCE_MS = 60_000;
/** Resends of a step whose client-made timestamp was refused (by the server's clock, then without one). */
export const MAX_CLOCK_FIXES = 2;
/** Sessions the server said were completed meanwhile that the client remembers (their steps go standalone). */
export const MAX_COMPLETED_SESSIONS = 1024;

/** Options of `new Tally(...)`; every one but `functionsUrl` and `idToken` has the Python client's default. */
export interface TallyOptions<M extends Mode = "batched"> {
  /** The base of the functions: `https://us-central1-PROJECT.cloudfunctions.net`, or the emulator's. */
  functionsUrl: string;
  /** Returns a current Firebase ID token; called before every request and once more after a 401. */
  idToken: TokenSource;
  /** Returns an App Check token, sent as `X-Firebase-AppCheck`. */
  appCheckToken?: TokenSource | undefined;
  /** `batched` (default) or `immediate` (serverless: each record is sent at once and awaited). */
  mode?: M | undefined;
  /** Per HTTP request (10,000 ms). */
  timeoutMs?: number | undefined;
  /** Retries of network errors, 5xx and 429 (5). */
  maxRetries?: number | undefined;
  /** First backoff (500 ms), doubled per retry, jittered. */
  backoffBaseMs?: number | undefined;
  /** Longest backoff (30,000 ms). */
  backoffMaxMs?: number | undefined;
  /** The background timer's period (5,000 ms); `null` sends only full batches and on `flush()`/`close()`. */
  flushIntervalMs?: number | null | undefined;
  /** Unsent steps the client keeps (100,000); past that `record()` throws QueueFull. */
  maxQueuedSteps?: number | undefined;
  /** Called with the steps the server refused for good and its error. */
  onRefused?: OnRefused | undefined;
  /** Refused steps kept in `refused` until read (10,000); the oldest go first, logged. */
  maxRefusedSteps?: number | undefined;
  /** Where the client logs (default: the console's error and warn; info dropped). */
  logger?: Logger | undefined;
  /** The `fetch` to use (default: the global one). */
  fetch?: FetchLike | undefined;
  /** How to wait between retries (tests). */
  sleep?: ((ms: number) => Promise<void>) | undefined;
  /** In Node, close the client (sending what is queued) when the process runs out of work (true). */
  closeAtExit?: boolean | undefined;
}

/** Options of `tally.myUsage()`. */
export interface MyUsageOptions {
  /** `YYYY-MM` (default: the current month). */
  month?: string | undefined;
  /** Admins only: whose usage. */
  userId?: string | undefined;
}

interface EnqueueInput extends Omit<StepInput, "userId"> {
  userId: string | undefined;
  session: Session<Mode> | undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function unref(timer: ReturnType<typeof setTimeout>): void {
  (timer as { unref?: () => void }).unref?.();
}

/**
 * Records paid calls to Tally's functions; use one per process (or per caller identity).
 *
 * `record()` and `Session.step()` only queue a step (no network I/O); a background timer sends
 * the queue every `flushIntervalMs` and as soon as 100 steps wait; `flush()`, `close()`, the end
 * of a session and a reservation's `record()` send at once. Each step gets its `operationId`
 * when it is queued, and a retried request resends the very same text, so nothing is counted
 * twice. With `mode: "immediate"`, `record()` and `step()` send at once and return a promise.
 *
 * No step is dropped silently: a step whose session was completed meanwhile (409) is recorded
 * again as a standalone step; a step the server refuses for good is logged at error level,
 * handed to `onRefused` and kept in `refused` until `takeRefused()`; the other steps of its
 * request are still recorded.
 */
export class Tally<M extends Mode = "batched"> {
  /** `batched` or `immediate`. */
  readonly mode: Mode;
  /** Where the client logs. */
  readonly logger: Logger;
  private readonly transport: Transport;
  private readonly flushIntervalMs: number | null;
  private readonly maxQueued: number;
  private readonly onRefused: OnRefused | undefined;
  private readonly maxRefused: number;
  private readonly groups = new Map<GroupKey, Group>();
  private queued = 0;
  private closed = false;
  private closing: Promise<void> | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private refusals: Refusal[] = [];
  private refusedSteps = 0;
  private readonly completedSessions = new Map<GroupKey, true>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerDue = 0;
  private pauseUntil = 0;
  private backgroundBusy = false;
  private readonly atExit: ((busy: boolean) => void) | undefined;

  constructor(options: TallyOptions<M>) {
    if (options.flushIntervalMs !== undefined && options.flushIntervalMs !== null && !(options.flushIntervalMs > 0)) {
      throw new RangeError("flushIntervalMs must be > 0 or null");
    }
    if (typeof options.idToken !== "function") throw new TypeError("idToken must be a function returning an ID token");
    const fetchImpl = options.fetch ?? (globalThis.fetch as FetchLike | undefined);
    if (fetchImpl === undefined) throw new TypeError("no global fetch: pass options.fetch");
    this.mode = options.mode ?? "batched";
    if (this.mode !== "batched" && this.mode !== "immediate") throw new RangeError('mode must be "batched" or "immediate"');
    this.logger = options.logger ?? defaultLogger;
    this.transport = new Transport({
      functionsUrl: options.functionsUrl,
      idToken: options.idToken,
      appCheckToken: options.appCheckToken,
      timeoutMs: options.timeoutMs ?? 10_000,
      maxRetries: options.maxRetries ?? 5,
      backoffBaseMs: options.backoffBaseMs ?? 500,
      backoffMaxMs: options.backoffMaxMs ?? 30_000,
      fetch: (input, init) => fetchImpl(input, init),
      sleep: options.sleep ?? sleep,
      logger: this.logger,
    });
    this.flushIntervalMs = options.flushIntervalMs === undefined ? 5_000 : options.flushIntervalMs;
    this.maxQueued = options.maxQueuedSteps ?? 100_000;
    this.onRefused = options.onRefused;
    this.maxRefused = options.maxRefusedSteps ?? 10_000;
    this.atExit = options.closeAtExit ?? true ? closeAtExit(this) : undefined;
  }

  /** The base URL of the functions. */
  get functionsUrl(): string {
    return this.transport.baseUrl;
  }

  /** How many steps are queued and not yet acknowledged by the server. */
  get pending(): number {
    return this.queued;
  }

  /** What the server refused for good, oldest first; kept until `takeRefused()`. */
  get refused(): Refusal[] {
    return [...this.refusals];
  }

  /** Return what the server refused for good, oldest first, and forget it. */
  takeRefused(): Refusal[] {
    const taken = this.refusals;
    this.refusals = [];
    this.refusedSteps = 0;
    return taken;
  }

  // --- recording ---------------------------------------------------------------

  /**
   * Queue one standalone step and return its operation id (in `immediate` mode: send it now and
   * return a promise of the id, rejected if the step was refused or could not be sent).
   *
   * Invalid values throw InvalidArgument here, before anything is queued.
   */
  record(step: StepInput): RecordResult<M> {
    const { userId, ...rest } = step;
    return this._emit({ ...rest, userId, session: undefined });
  }

  /** Return a new session (its steps are sent with it; `complete()` ends it). */
  session(options: SessionOptions = {}): Session<M> {
    return new Session<M>(this, options);
  }

  /** Hold `estimate` on the user's budget now, or throw BudgetExceeded (Unavailable if Tally cannot be reached). */
  reserve(options: ReserveOptions): Promise<Reservation<M>> {
    return Reservation._open(this, undefined, options);
  }

  /** Return the caller's usage for a month (the `my_usage` callable; `userId` for admins only). */
  async myUsage(options: MyUsageOptions = {}): Promise<Record<string, unknown>> {
    const data: Record<string, unknown> = {};
    if (options.month !== undefined) data["month"] = options.month;
    if (options.userId !== undefined) data["userId"] = v.checkUserId("userId", options.userId);
    const result = await this.transport.call("my_usage", data);
    if (!isRecord(result)) throw new Unavailable("my_usage returned something that is not an object");
    return result;
  }

  // --- sending -----------------------------------------------------------------

  /**
   * Send every queued step now and return the server's responses, one per request.
   *
   * A transient failure (Unavailable, after the retries) keeps the unsent steps queued and is
   * thrown at once. A refusal removes only the refused steps (logged, handed to `onRefused`, kept
   * in `refused`, and on the error as `.steps`); the other steps are still sent, and then the first
   * refusal's error is thrown. It also waits for sends in progress (`immediate` records included).
   */
  flush(): Promise<RecordResponse[]> {
    return this._flush(undefined);
  }

  /** Stop the timer and send what is queued; log (never throw) what could not be sent. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.closed = true;
    this.clearTimer();
    try {
      await this._flush(undefined);
    } catch (error) {
      if (error instanceof Unavailable || !(error instanceof TallyError)) {
        this.logger.error(`tally: close() could not send every step: ${describe(error)}`);
      } // refused steps are logged, handed to onRefused and kept in `refused` already
    }
    forgetAtExit(this); // only now: a `process.exit()` during the flush still logs what it loses
    if (this.queued > 0) this.logger.error(`tally: ${this.queued} step(s) were never acknowledged by the server and are lost`);
  }

  // --- internals (used by Session and Reservation) ------------------------------

  /** @internal Queue a step and, in `immediate` mode, send its group now. */
  _emit(input: EnqueueInput): RecordResult<M> {
    const step = this._enqueue(input);
    if (this.mode !== "immediate") return step.body.operationId as RecordResult<M>;
    return this._sendNow(step, groupKey(input.userId, input.session?.id)) as RecordResult<M>;
  }

  /** @internal Send a queued step's group now; resolve with its id once acknowledged. */
  async _sendNow(step: Pending, key: GroupKey): Promise<string> {
    let failure: unknown;
    try {
      await this._flush(new Set([key]));
    } catch (error) {
      failure = error;
    }
    const outcome = step.outcome;
    if (outcome?.ok) return step.body.operationId;
    if (outcome) throw outcome.error;
    const queued = `step ${step.body.operationId} stays queued for the next flush: do not record it again`;
    if (failure instanceof Unavailable) throw new Unavailable(`${failure.message}; ${queued}`, { cause: failure, httpStatus: failure.httpStatus });
    throw failure instanceof Error ? failure : new Unavailable(queued);
  }

  /** @internal POST to an HTTPS function. */
  _post(name: string, body: unknown): Promise<Record<string, unknown>> {
    return this.transport.post(name, body);
  }

  /** @internal Check and queue one step. */
  _enqueue(input: EnqueueInput): Pending {
    const stampedAt = input.timestamp === undefined ? Date.now() : undefined;
    const body = stepBody(input, stampedAt === undefined ? undefined : new Date(stampedAt + this.clockSkewMs()));
    if (input.userId !== undefined) v.checkUserId("userId", input.userId);
    const session = input.session;
    if (this.closed) throw new TallyError("this Tally client is closed", { status: "FAILED_PRECONDITION" });
    if (session?.completed) throw new TallyError(`session ${session.id} is already completed`, { status: "FAILED_PRECONDITION" });
    if (this.queued >= this.maxQueued) throw new QueueFull(`${this.queued} steps are waiting to be sent (maxQueuedSteps)`);
    const key = groupKey(input.userId, session?.id);
    let group = this.groups.get(key);
    if (group === undefined) {
      group = new Group(input.userId, session?.id, session?.feature);
      this.groups.set(key, group);
    }
    const step = new Pending(body, stampedAt);
    group.steps.push(step);
    this.queued += 1;
    this.atExit?.(true);
    if (session) session._stepCount += 1;
    this.schedule();
    return step;
  }

  /** @internal Mark a session's group to be completed by its next request. */
  _requestCompletion(session: Session<Mode>): void {
    const key = groupKey(session.userId, session.id);
    let group = this.groups.get(key);
    if (group === undefined) {
      group = new Group(session.userId, session.id, session.feature);
      this.groups.set(key, group);
    }
    group.complete = true;
  }

  /** @internal Send the groups named by `keys` (every group if undefined); then hand refusals to onRefused. */
  async _flush(keys: Set<GroupKey> | undefined): Promise<RecordResponse[]> {
    const handed: Refusal[] = [];
    try {
      return await this.exclusive(() => this.send(keys, handed));
    } finally {
      this.atExit?.(this.queued > 0);
      for (const refusal of handed) this.callOnRefused(refusal);
    }
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work, work);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private clockSkewMs(): number {
    const offset = this.transport.serverClockOffsetMs;
    return offset === undefined || Math.abs(offset) <= CLOCK_SKEW_TOLERANCE_MS ? 0 : offset;
  }

  /** Send the groups' batches in order, recovering what a refusal allows; throw the first refusal. */
  private async send(keys: Set<GroupKey> | undefined, handed: Refusal[]): Promise<RecordResponse[]> {
    const taken: Group[] = [];
    for (const [key, group] of this.groups) {
      if (keys === undefined || keys.has(key)) taken.push(group);
    }
    for (const group of taken) this.groups.delete(group.key);
    const work: Batch[] = taken.flatMap((group) => splitBatches(group));
    const responses: RecordResponse[] = [];
    const errors: TallyError[] = [];
    while (work.length > 0) {
      const batch = work.shift() as Batch;
      if (batch.group.sessionId !== undefined && this.completedSessions.has(batch.key)) {
        work.unshift(...standaloneBatches(batch, this.logger));
        continue;
      }
      let response: Record<string, unknown>;
      try {
        response = await this.transport.post("record_steps", batch.body());
      } catch (error) {
        if (error instanceof TallyError && !(error instanceof Unavailable)) {
          work.unshift(...this.afterRefusal(batch, error, handed, errors));
          continue;
        }
        this.requeue([batch, ...work]);
        throw error;
      }
      this.queued -= batch.steps.length;
      for (const step of batch.steps) step.settle({ ok: true });
      const warnings = response["warnings"];
      if (Array.isArray(warnings) && warnings.length > 0) {
        this.logger.warn(`tally: record_steps warnings: ${JSON.stringify(warnings)}`);
      }
      responses.push(response as RecordResponse);
    }
    if (errors.length > 0) throw errors[0];
    return responses;
  }

  /** Handle a refused batch (nothing of it was written); return the batches to send instead. */
  private afterRefusal(batch: Batch, error: TallyError, handed: Refusal[], errors: TallyError[]): Batch[] {
    if (sessionWasCompleted(batch, error)) {
      this.completedSessions.set(batch.key, true); // for good: its later steps go standalone at once
      while (this.completedSessions.size > MAX_COMPLETED_SESSIONS) {
        this.completedSessions.delete(this.completedSessions.keys().next().value as GroupKey);
      }
      this.logger.warn(
        `tally: session ${batch.group.sessionId} was completed meanwhile (${error}); recording its ${batch.steps.length} step(s) as standalone`,
      );
      return standaloneBatches(batch, this.logger);
    }
    if (batch.steps.length > 1 && overABound(error)) {
      this.logger.warn(`tally: record_steps refused a batch of ${batch.steps.length} steps (${error}); splitting it`);
      const half = Math.floor(batch.steps.length / 2);
      return [new Batch(batch.group, batch.steps.slice(0, half), false), new Batch(batch.group, batch.steps.slice(half), batch.complete)];
    }
    const bad = badSteps(error, batch.steps.length);
    if (bad === undefined) {
      this.refuse(batch, batch.steps, error, handed, errors);
      return [];
    }
    const kept: Pending[] = [];
    const refused: Pending[] = [];
    batch.steps.forEach((step, index) => {
      const fields = bad.get(index);
      if (fields === undefined) kept.push(step);
      else if (fields.size === 1 && fields.has("timestamp") && step.stampedAt !== undefined && step.clockFixes < MAX_CLOCK_FIXES) {
        kept.push(this.restamp(step, error));
      } else if (fields.size === 1 && fields.has("metadata") && "metadata" in step.body) {
        const { metadata, ...body } = step.body;
        // Its session id (an app's, or a 409 re-record's) is kept, unless it is all there was.
        const ids = Object.entries(metadata as v.JsonObject).filter(([name]) => name === "sessionId" || name === "tallySessionId");
        if (ids.length > 0 && ids.length < Object.keys(metadata as v.JsonObject).length) body["metadata"] = Object.fromEntries(ids);
        this.logger.error(
          `tally: step ${body.operationId}: metadata refused (${error}); resent without it${"metadata" in body ? " but its session id" : ""}: ${JSON.stringify(metadata)}`,
        );
        kept.push(step.withBody(body as StepBody));
      } else refused.push(step);
    });
    if (refused.length > 0) this.refuse(batch, refused, error, handed, errors);
    if (kept.length === 0 && !batch.complete) return [];
    const group = batch.group;
    return splitBatches(new Group(group.userId, group.sessionId, group.sessionFeature, kept, batch.complete));
  }

  /** Return a step the client stamped, stamped by the server's clock (`Date`), or else unstamped. */
  private restamp(step: Pending, error: TallyError): Pending {
    const offset = this.transport.serverClockOffsetMs;
    const body: StepBody = { ...step.body };
    if (step.clockFixes === 0 && offset !== undefined && step.stampedAt !== undefined) {
      body["timestamp"] = new Date(step.stampedAt + offset).toISOString();
      this.logger.warn(`tally: step ${body.operationId}: timestamp refused (${error}); resent by the server's clock`);
    } else {
      delete body["timestamp"];
      this.logger.warn(`tally: step ${body.operationId}: timestamp refused (${error}); resent without one`);
    }
    return step.withBody(body, step.clockFixes + 1);
  }

  /** Give up on `steps`: log them, keep them in `refused`, and queue them for onRefused. */
  private refuse(batch: Batch, steps: Pending[], error: TallyError, handed: Refusal[], errors: TallyError[]): void {
    const { userId, sessionId } = batch.group;
    error.steps = steps.map((step) => step.body);
    error.userId = userId;
    error.sessionId = sessionId;
    errors.push(error);
    this.queued -= steps.length;
    for (const step of steps) step.settle({ ok: false, error });
    if (steps.length === 0) {
      this.logger.error(`tally: record_steps refused to complete session ${sessionId}: ${error}`);
      return;
    }
    this.logger.error(
      `tally: record_steps refused ${steps.length} step(s) (user ${userId ?? "(caller)"}, session ${sessionId ?? "(none)"}): ${error}; ${listIds(error.steps)}`,
    );
    const refusal: Refusal = { steps: [...error.steps], error, userId, sessionId };
    handed.push(refusal);
    this.keep(refusal);
  }

  /** @internal Hand a step the client could not queue (a wrapper's, which must not throw) to `refused` and onRefused. */
  _refuseLocally(step: Record<string, unknown>, error: TallyError, userId: string | undefined, sessionId: string | undefined): void {
    Object.assign(error, { steps: [step], userId, sessionId });
    const refusal: Refusal = { steps: [step], error, userId, sessionId };
    this.keep(refusal);
    this.callOnRefused(refusal);
  }

  private keep(refusal: Refusal): void {
    this.refusals.push(refusal);
    this.refusedSteps += refusal.steps.length;
    while (this.refusals.length > 0 && this.refusedSteps > this.maxRefused) {
      const oldest = this.refusals.shift() as Refusal;
      this.refusedSteps -= oldest.steps.length;
      this.logger.error(`tally: refused steps forgotten (maxRefusedSteps): ${listIds(oldest.steps)}`);
    }
  }

  private callOnRefused(refusal: Refusal): void {
    if (this.onRefused === undefined) return;
    const fail = (error: unknown): void =>
      this.logger.error(`tally: the onRefused callback threw (the refusal stays in \`refused\`): ${describe(error)}`);
    try {
      Promise.resolve(this.onRefused([...refusal.steps], refusal.error) as unknown).catch(fail); // an async callback's rejection too
    } catch (error) {
      fail(error);
    }
  }

  /** Put unsent batches back at the front of their groups, keeping their order and `complete`. */
  private requeue(batches: Batch[]): void {
    for (const batch of [...batches].reverse()) {
      let group = this.groups.get(batch.key);
      if (group === undefined) {
        group = batch.group;
        group.steps = [];
        group.complete = false;
        this.groups.set(batch.key, group);
      }
      group.steps.unshift(...batch.steps);
      group.complete = group.complete || batch.complete;
    }
    this.schedule();
  }

  // --- the background timer ----------------------------------------------------

  /** Arm the timer: at once when a full batch waits (unless paused), else after the flush interval. */
  private schedule(): void {
    if (this.closed || this.queued === 0) return;
    const now = Date.now();
    if (this.queued >= v.MAX_STEPS) this.arm(Math.max(0, this.pauseUntil - now));
    else if (this.flushIntervalMs !== null) this.arm(Math.max(this.flushIntervalMs, this.pauseUntil - now));
  }

  private arm(delayMs: number): void {
    const due = Date.now() + delayMs;
    if (this.timer !== undefined && this.timerDue <= due) return;
    this.clearTimer();
    this.timerDue = due;
    this.timer = setTimeout(() => void this.onTimer(), delayMs);
    unref(this.timer);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async onTimer(): Promise<void> {
    this.timer = undefined;
    if (this.closed || this.backgroundBusy || this.groups.size === 0) return;
    this.backgroundBusy = true;
    try {
      await this._flush(undefined);
    } catch (error) {
      if (error instanceof Unavailable) {
        this.logger.warn(`tally: background flush failed, steps kept for the next one: ${error}`);
        this.pauseUntil = Date.now() + (this.flushIntervalMs ?? 1_000);
      } else if (!(error instanceof TallyError)) {
        this.logger.error(`tally: background flush failed unexpectedly: ${describe(error)}`);
        this.pauseUntil = Date.now() + (this.flushIntervalMs ?? 1_000);
      } // refused steps are logged, handed to onRefused and kept in `refused` already
    } finally {
      this.backgroundBusy = false;
      this.schedule();
    }
  }
}

/** Return `operation ids: a, b, ...` (the first 10) for a log line. */
function listIds(steps: Record<string, unknown>[]): string {
  const more = steps.length > 10 ? ` and ${steps.length - 10} more` : "";
  return `operation ids: ${steps.slice(0, 10).map((step) => String(step["operationId"])).join(", ")}${more}`;
}

/** Check one step's values and return its wire form. */
function stepBody(input: EnqueueInput, stamp: Date | undefined): StepBody {
  const { cost, units } = input;
  if (cost === undefined && units === undefined) throw InvalidArgument.field("cost", "give cost, units, or both");
  const billable = input.isBillableRun ?? false;
  if (typeof billable !== "boolean") throw InvalidArgument.field("isBillableRun", "must be true or false");
  const body: StepBody = {
    operationId: input.operationId !== undefined ? v.checkId("operationId", input.operationId) : v.newOperationId(),
    usageType: v.usageType("usageType", input.usageType ?? (units !== undefined ? "AI" : "API")),
    feature: v.checkName("feature", input.feature),
    provider: v.checkName("provider", input.provider),
  };
  if (cost !== undefined) body["cost"] = v.costText("cost", cost);
  if (units !== undefined) body["units"] = v.unitsBody("units", units);
  body["isBillableRun"] = billable;
  body["timestamp"] = v.timestampValue("timestamp", input.timestamp ?? stamp);
  if (input.metadata !== undefined) body["metadata"] = v.metadataBody("metadata", input.metadata);
  if (input.reservationId !== undefined) body["reservationId"] = v.checkId("reservationId", input.reservationId);
  return body;
}

/** A session: a group of steps of one user, sent with its `session` object and completed by `complete()`. */

import { groupKey } from "./batching.js";
import type { Tally } from "./client.js";
import { InvalidArgument, Unavailable } from "./errors.js";
import { Reservation } from "./reservation.js";
import type { Mode, RecordResponse, RecordResult, SessionOptions, SessionReserveOptions, SessionStepInput } from "./types.js";
import * as v from "./values.js";

/** A group of steps of one user: created by its first step, completed by `complete()`. */
export class Session<M extends Mode = "batched"> {
  /** The session id (`session_<ms>_<hex>` unless given). */
  readonly id: string;
  /** The session's feature (the default of its steps). */
  readonly feature: string | undefined;
  /** Whose session (undefined: the caller's). */
  readonly userId: string | undefined;
  /** Whether `complete()` was called. */
  completed = false;
  /** @internal Steps queued in this session. */
  _stepCount = 0;

  /** Make a session (use `tally.session()`); nothing is sent yet. */
  constructor(
    readonly tally: Tally<M>,
    options: SessionOptions = {},
  ) {
    this.id = options.sessionId !== undefined ? v.checkId("session.id", options.sessionId) : v.newSessionId();
    this.feature = options.feature !== undefined ? v.checkName("session.feature", options.feature) : undefined;
    this.userId = options.userId !== undefined ? v.checkUserId("userId", options.userId) : undefined;
  }

  /** Queue a step of this session (feature defaults to the session's) and return its operation id. */
  step(input: SessionStepInput): RecordResult<M> {
    const feature = input.feature ?? this.feature;
    if (feature === undefined) throw InvalidArgument.field("feature", "is required (the session has no feature)");
    return this.tally._emit({ ...input, feature, userId: this.userId, session: this as Session<Mode> });
  }

  /** Same as `step()`. */
  record(input: SessionStepInput): RecordResult<M> {
    return this.step(input);
  }

  /** Hold an estimate for this session's user; what the reservation records goes into this session. */
  reserve(options: SessionReserveOptions): Promise<Reservation<M>> {
    return Reservation._open(this.tally, this, { ...options, userId: this.userId });
  }

  /** Send this session's queued steps now, without completing it. */
  flush(): Promise<RecordResponse[]> {
    return this.tally._flush(new Set([groupKey(this.userId, this.id)]));
  }

  /**
   * Send the remaining steps with `"complete": true` and return the last response.
   *
   * A session that never had a step is not sent at all (null). A refusal rejects (after the other
   * steps were sent; steps refused because the session was completed meanwhile are recorded as
   * standalone steps instead); a transient failure is logged and the completion stays queued for
   * the next flush (null). Completing twice is a no-op.
   */
  async complete(): Promise<RecordResponse | null> {
    if (this.completed) return null;
    this.completed = true;
    if (this._stepCount === 0) return null;
    this.tally._requestCompletion(this as Session<Mode>);
    try {
      const responses = await this.tally._flush(new Set([groupKey(this.userId, this.id)]));
      return responses[responses.length - 1] ?? null;
    } catch (error) {
      if (!(error instanceof Unavailable)) throw error;
      this.tally.logger.warn(`tally: session ${this.id} completion kept queued for the next flush: ${error}`);
      return null;
    }
  }
}

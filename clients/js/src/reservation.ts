/** The gate: a hold on a user's budget (`reserve_spend`), settled by the first step it records, else released. */

import { groupKey, type GroupKey } from "./batching.js";
import type { Tally } from "./client.js";
import { BudgetExceeded, InvalidArgument, TallyError, Unavailable, isRecord } from "./errors.js";
import type { Session } from "./session.js";
import type { Mode, ReservationStepInput, ReserveOptions } from "./types.js";
import * as v from "./values.js";

/** A hold on a user's budget, made by `tally.reserve()` or `session.reserve()` (allowed: else BudgetExceeded). */
export class Reservation<M extends Mode = "batched"> {
  /** Always true: a refused reservation throws BudgetExceeded instead. */
  readonly allowed: boolean;
  /** The USD held, as the server answered. */
  readonly reserved: unknown;
  /** When the hold lapses (ISO-8601). */
  readonly expiresAt: string | undefined;
  /** The user's month as `reserve_spend` answered it. */
  readonly usage: Record<string, unknown>;
  /** The whole `reserve_spend` response. */
  readonly response: Record<string, unknown>;
  /** Whether a recorded step settled (or will settle) the hold. */
  settled = false;
  /** Whether `release()` freed the hold. */
  released = false;

  private constructor(
    readonly tally: Tally<M>,
    readonly session: Session<M> | undefined,
    readonly userId: string | undefined,
    readonly reservationId: string,
    response: Record<string, unknown>,
    /** The default provider of `record()` (the estimate's). */
    readonly provider: string | undefined,
    /** The default feature of `record()` (the estimate's, else the session's). */
    readonly feature: string | undefined,
  ) {
    this.response = { ...response };
    this.allowed = response["allowed"] === true;
    this.reserved = response["reserved"];
    this.expiresAt = typeof response["expiresAt"] === "string" ? response["expiresAt"] : undefined;
    this.usage = isRecord(response["usage"]) ? { ...response["usage"] } : {};
  }

  /** @internal Post `reserve_spend` and return the reservation, or throw BudgetExceeded. */
  static async _open<M extends Mode>(
    tally: Tally<M>,
    session: Session<M> | undefined,
    options: ReserveOptions,
  ): Promise<Reservation<M>> {
    const rid = options.reservationId !== undefined ? v.checkId("reservationId", options.reservationId) : v.newReservationId();
    const ttlSeconds = options.ttlSeconds ?? 300;
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 10 || ttlSeconds > 3600) {
      throw InvalidArgument.field("ttlSeconds", "must be an integer from 10 to 3600");
    }
    const estimate = options.estimate;
    if (typeof estimate !== "object" || estimate === null) throw InvalidArgument.field("estimate", "must be an object with cost or units");
    const billable = estimate.isBillableRun ?? false;
    if (typeof billable !== "boolean") throw InvalidArgument.field("estimate.isBillableRun", "must be true or false");
    const body: Record<string, unknown> = {};
    if ((estimate.cost === undefined) === (estimate.units === undefined)) {
      throw InvalidArgument.field("estimate", "give cost or units (one of them)");
    }
    if (estimate.units !== undefined) body["units"] = v.unitsBody("estimate.units", estimate.units);
    else body["cost"] = v.costText("estimate.cost", estimate.cost);
    const provider = estimate.provider;
    if (provider !== undefined) body["provider"] = v.checkName("estimate.provider", provider);
    else if (estimate.units !== undefined) {
      tally.logger.warn(
        "tally: a units estimate without provider cannot be priced (Tally refuses it as UNPRICED); give estimate.provider",
      );
    }
    const feature = estimate.feature ?? session?.feature;
    if (feature !== undefined) body["feature"] = v.checkName("estimate.feature", feature);
    body["isBillableRun"] = billable;
    const request: Record<string, unknown> = {};
    const userId = options.userId;
    if (userId !== undefined) request["userId"] = v.checkUserId("userId", userId);
    Object.assign(request, { reservationId: rid, estimate: body, ttlSeconds });
    const response = await tally._post("reserve_spend", request);
    if (response["allowed"] !== true) throw new BudgetExceeded(response, rid);
    return new Reservation(tally, session, userId, rid, response, provider, feature);
  }

  /**
   * Record the actual usage and send it now; the first step carries `reservationId`, which settles
   * the hold in the same commit (as a standalone step if its session was completed meanwhile). Resolves with the operation id; rejects if the server refused the
   * step (it is then in `tally.refused` too). If Tally cannot be reached the step stays queued
   * (logged) and the promise still resolves: usage that happened is never dropped.
   */
  async record(input: ReservationStepInput): Promise<string> {
    if (this.released) {
      throw new TallyError(`reservation ${this.reservationId} was released`, { status: "FAILED_PRECONDITION" });
    }
    const provider = input.provider ?? this.provider;
    if (provider === undefined) throw InvalidArgument.field("provider", "is required (the reservation has no provider)");
    const feature = input.feature ?? this.feature ?? this.session?.feature;
    if (feature === undefined) throw InvalidArgument.field("feature", "is required");
    const reservationId = this.settled ? undefined : this.reservationId;
    // A session completed meanwhile takes no more steps: the usage is recorded standalone instead.
    const session = this.session?.completed === false ? (this.session as Session<Mode>) : undefined;
    const userId = this.session ? this.session.userId : this.userId;
    const step = this.tally._enqueue({ ...input, feature, provider, reservationId, userId, session });
    this.settled = true;
    const key: GroupKey = groupKey(userId, session?.id);
    try {
      return await this.tally._sendNow(step, key);
    } catch (error) {
      if (!(error instanceof Unavailable)) throw error;
      this.tally.logger.warn(`tally: reservation ${this.reservationId}: usage kept queued for the next flush: ${error}`);
      return step.body.operationId;
    }
  }

  /** Same as `record()`. */
  step(input: ReservationStepInput): Promise<string> {
    return this.record(input);
  }

  /** Release the hold without recording (`release_spend`; idempotent on the server). */
  async release(): Promise<void> {
    const body: Record<string, unknown> = {};
    if (this.userId !== undefined) body["userId"] = this.userId;
    body["reservationId"] = this.reservationId;
    await this.tally._post("release_spend", body);
    this.released = true;
  }
}

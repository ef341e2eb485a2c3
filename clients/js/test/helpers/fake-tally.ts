/** A fake of Tally's functions on a real local HTTP server, refusing what the server refuses. */

import type { ServerResponse } from "node:http";

import { Tally, type TallyOptions } from "../../src/index.js";
import type { Mode } from "../../src/types.js";
import { LocalServer, sendJson, type Request } from "./http.js";
import { CaptureLogger } from "./logger.js";

const MAX_BODY_BYTES = 256 * 1024;
const MAX_STEPS = 100;
const MAX_NAMES = 20;

type Step = Record<string, unknown> & { operationId: string; feature: string; provider: string };
type Body = { userId?: string; session?: { id: string; complete?: boolean; feature?: string }; steps: Step[] };
type Detail = { field: string; problem: string };

export function errorBody(status: string, message: string, details: Detail[] = []): unknown {
  return { error: { status, message, details } };
}

/**
 * Answers like Tally's functions; keeps every request; can inject failures.
 *
 * Like the server, `record_steps` refuses a request over a per-request bound (413 over 256 KiB;
 * 400 over 100 steps, 20 distinct features, providers or `units.model`, or a repeated operation
 * id), a step named in `badOperations` (400 naming `steps[i]`; a bad `metadata` only while it has some), with `checkTimestamps` a step
 * more than 5 minutes ahead of its clock (`clockOffsetMs` ahead of the real one, also in `Date`),
 * and new steps for a session in `completedSessions` (409). A refused request records nothing.
 */
export class FakeTally {
  readonly injected = new Map<string, [number, unknown][]>();
  readonly seen = new Set<string>();
  readonly recorded = new Map<string, Step & { _session: string | null }>();
  readonly completedSessions = new Set<string>();
  readonly badOperations = new Map<string, [string, string]>();
  validTokens: Set<string> | undefined;
  reserveAnswer: Record<string, unknown> | undefined;
  checkTimestamps = false;
  clockOffsetMs = 0;
  dateHeader: string | null | undefined = undefined;

  private constructor(readonly server: LocalServer) {
    for (const name of ["record_steps", "reserve_spend", "release_spend", "my_usage"]) {
      server.route(`/tally/${name}`, (request, res) => this.handle(name, request, res));
    }
  }

  static async start(): Promise<FakeTally> {
    return new FakeTally(await LocalServer.start());
  }

  get url(): string {
    return `${this.server.url}/tally`;
  }

  close(): Promise<void> {
    return this.server.close();
  }

  /** Answer the next `times` requests to `name` with `status` and `payload`. */
  inject(name: string, status: number, payload: unknown = null, times = 1): void {
    const queue = this.injected.get(name) ?? [];
    for (let i = 0; i < times; i++) queue.push([status, payload]);
    this.injected.set(name, queue);
  }

  /** The requests `name` received, in order. */
  requests(name = "record_steps"): Request[] {
    return this.server.requests.filter((request) => request.path === `/tally/${name}`);
  }

  /** The JSON bodies `name` received, in order. */
  bodies(name = "record_steps"): Body[] {
    return this.requests(name).map((request) => request.body as Body);
  }

  /** Every step record_steps received (duplicates included). */
  steps(): Step[] {
    return this.bodies().flatMap((body) => body.steps);
  }

  /** A client pointed at this fake, without a timer, with fast retries. */
  tally<M extends Mode = "batched">(options: Partial<TallyOptions<M>> = {}): Tally<M> {
    return new Tally<M>({
      functionsUrl: this.url,
      idToken: () => "token",
      flushIntervalMs: null,
      backoffBaseMs: 1,
      backoffMaxMs: 10,
      maxRetries: 3,
      timeoutMs: 5_000,
      logger: new CaptureLogger(),
      closeAtExit: false,
      ...options,
    });
  }

  private now(): number {
    return Date.now() + this.clockOffsetMs;
  }

  private handle(name: string, request: Request, res: ServerResponse): void {
    const headers: Record<string, string> = {};
    if (this.dateHeader !== undefined || this.clockOffsetMs !== 0) {
      res.sendDate = false;
      if (this.dateHeader !== null) headers["Date"] = this.dateHeader ?? new Date(this.now()).toUTCString();
    }
    const send = (status: number, payload: unknown): void => sendJson(res, status, payload, headers);
    const token = String(request.headers.authorization ?? "").replace(/^Bearer /, "");
    if (this.validTokens !== undefined && !this.validTokens.has(token)) {
      send(401, errorBody("UNAUTHENTICATED", "the ID token has expired"));
      return;
    }
    const queue = this.injected.get(name);
    if (queue && queue.length > 0) {
      const [status, payload] = queue.shift() as [number, unknown];
      send(status, payload);
      return;
    }
    if (name === "record_steps") {
      const refusal = this.refusal(request.raw, request.body as Body);
      if (refusal) {
        send(...refusal);
        return;
      }
    }
    send(200, this.answer(name, request.body));
  }

  private refusal(raw: string, body: Body): [number, unknown] | undefined {
    if (Buffer.byteLength(raw) > MAX_BODY_BYTES) {
      return [413, errorBody("PAYLOAD_TOO_LARGE", `request body must be at most ${MAX_BODY_BYTES} bytes`)];
    }
    const steps = body.steps;
    if (steps.length > MAX_STEPS) {
      const problem = `must hold at most ${MAX_STEPS} steps (got ${steps.length})`;
      return [400, errorBody("INVALID_ARGUMENT", `steps: ${problem}`, [{ field: "steps", problem }])];
    }
    let problems: Detail[] = [];
    steps.forEach((step, index) => {
      const bad = this.badOperations.get(step.operationId);
      if (bad && (bad[0] !== "metadata" || "metadata" in step)) problems.push({ field: `steps[${index}].${bad[0]}`, problem: bad[1] });
      if (this.checkTimestamps && typeof step["timestamp"] === "string" && Date.parse(step["timestamp"]) > this.now() + 5 * 60_000) {
        problems.push({ field: `steps[${index}].timestamp`, problem: "must not be more than 5 minutes in the future" });
      }
    });
    if (problems.length === 0) problems = boundProblems(steps);
    if (problems.length > 0) {
      const first = problems[0] as Detail;
      return [400, errorBody("INVALID_ARGUMENT", `${first.field}: ${first.problem}`, problems)];
    }
    const fresh = steps.filter((step) => !this.seen.has(step.operationId));
    if (body.session && this.completedSessions.has(body.session.id) && fresh.length > 0) {
      return [409, errorBody("FAILED_PRECONDITION", `session ${body.session.id} is completed; it accepts no new steps`)];
    }
    return undefined;
  }

  private answer(name: string, raw: unknown): unknown {
    if (name === "record_steps") {
      const body = raw as Body;
      const fresh = body.steps.filter((step) => !this.seen.has(step.operationId));
      for (const step of body.steps) this.seen.add(step.operationId);
      const session = body.session;
      for (const step of fresh) this.recorded.set(step.operationId, { ...step, _session: session ? session.id : null });
      if (session?.complete) this.completedSessions.add(session.id);
      return {
        recorded: fresh.length,
        duplicates: body.steps.length - fresh.length,
        session: session ? { id: session.id, status: session.complete ? "completed" : "active" } : null,
        usage: { month: "2026-11", totalCost: 0 },
        warnings: [],
      };
    }
    if (name === "reserve_spend") {
      const answer = this.reserveAnswer ?? {
        allowed: true,
        reserved: 0.05,
        expiresAt: "2026-11-14T10:09:09.794Z",
        reason: null,
        usage: { month: "2026-11", totalCost: 1.25 },
      };
      return { reservationId: (raw as { reservationId: string }).reservationId, ...answer };
    }
    if (name === "release_spend") return { released: true };
    return { result: { month: "2026-11", totalCost: 0, apiCalls: 0 } };
  }
}

function boundProblems(steps: Step[]): Detail[] {
  const seen = new Map<string, number>();
  for (const [index, step] of steps.entries()) {
    const first = seen.get(step.operationId);
    if (first !== undefined) return [{ field: `steps[${index}].operationId`, problem: `repeats steps[${first}].operationId` }];
    seen.set(step.operationId, index);
  }
  for (const kind of ["feature", "provider", "units.model"]) {
    const names = new Set<string>();
    for (const [index, step] of steps.entries()) {
      const name = kind === "units.model" ? (step["units"] as { model?: string } | undefined)?.model : (step[kind] as string);
      if (name === undefined) continue;
      names.add(name);
      if (names.size > MAX_NAMES) {
        const plural = `${kind.split(".").pop() ?? kind}s`;
        return [
          {
            field: `steps[${index}].${kind}`,
            problem: `a request may name at most ${MAX_NAMES} distinct ${plural}; send the others in another`,
          },
        ];
      }
    }
  }
  return [];
}

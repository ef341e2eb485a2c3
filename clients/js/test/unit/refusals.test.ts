/** No usage lost silently: 409 re-records, onRefused and `refused`, one bad step, clock skew. */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  TallyError,
  Unavailable,
  type TallyOptions,
} from "../../src/index.js";
import { errorBody } from "../helpers/fake-tally.js";
import { logsOf } from "../helpers/logger.js";
import { ids, setup, waitFor } from "../helpers/setup.js";

/** An onRefused callback that keeps what it was given. */
class Collected {
  readonly calls: [Record<string, unknown>[], TallyError][] = [];
  readonly callback = (steps: Record<string, unknown>[], error: TallyError): void => {
    this.calls.push([steps, error]);
  };

  operationIds(): string[] {
    return this.calls.flatMap(([steps]) => ids(steps));
  }
}

async function watched(t: Parameters<typeof setup>[0], options: Partial<TallyOptions> = {}) {
  const collected = new Collected();
  const fixture = await setup(t, { onRefused: collected.callback, ...options });
  return { ...fixture, collected };
}

// --- onRefused and refused ---------------------------------------------------------------

test("a refused batch goes to onRefused and stays in refused", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "not yours"));
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1, userId: "someone-else" });

  const caught = await tally.flush().catch((error: unknown) => error);

  assert.ok(caught instanceof PermissionDenied);
  assert.equal(collected.calls.length, 1);
  const [steps, error] = collected.calls[0] ?? [];
  assert.deepEqual(ids(steps ?? []), [operationId]);
  assert.equal(error, caught);
  assert.deepEqual([error?.userId, error?.sessionId], ["someone-else", undefined]);
  assert.deepEqual(tally.refused, [{ steps, error, userId: "someone-else", sessionId: undefined }]);
  assert.equal(tally.pending, 0);
  const errors = logsOf(tally).at("error");
  assert.equal(errors.length, 1);
  assert.ok(errors[0]?.includes(operationId));
});

test("a refusal is logged at error level without a callback", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("record_steps", 404, errorBody("NOT_FOUND", "no such thing"));
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), NotFound);

  const [line] = logsOf(tally).at("error");
  assert.ok(line?.includes("refused 1 step(s)") && line.includes(operationId));
  assert.deepEqual(
    tally.refused.flatMap((refusal) => ids(refusal.steps)),
    [operationId],
  );
});

test("takeRefused() returns the refusals and forgets them", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "no"), 2);
  const first = tally.record({ feature: "f", provider: "p", cost: 1, userId: "a" });
  const second = tally.record({ feature: "f", provider: "p", cost: 1, userId: "b" });

  await assert.rejects(tally.flush(), PermissionDenied);
  const taken = tally.takeRefused();

  assert.deepEqual(
    taken.map((refusal) => [refusal.userId, refusal.steps[0]?.["operationId"]]),
    [
      ["a", first],
      ["b", second],
    ],
  );
  assert.deepEqual(tally.refused, []);
  assert.deepEqual(tally.takeRefused(), []);
});

test("refused keeps at most maxRefusedSteps steps and logs what it forgets", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ maxRefusedSteps: 2 });
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "no"), 3);
  const oldest = tally.record({ feature: "f", provider: "p", cost: 1, userId: "a" });
  const kept = ["b", "c"].map((userId) => tally.record({ feature: "f", provider: "p", cost: 1, userId }));

  await assert.rejects(tally.flush(), PermissionDenied);

  assert.deepEqual(
    tally.refused.map((refusal) => refusal.steps[0]?.["operationId"]),
    kept,
  );
  assert.ok(logsOf(tally).at("error").some((line) => line.includes("forgotten") && line.includes(oldest)));
});

test("a callback that throws does not break the client", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({
    onRefused: () => {
      throw new Error("the app's callback has a bug");
    },
  });
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "no"));
  tally.record({ feature: "f", provider: "p", cost: 1, userId: "a" });
  const sent = tally.record({ feature: "f", provider: "p", cost: 1, userId: "b" });

  await assert.rejects(tally.flush(), PermissionDenied);
  const later = tally.record({ feature: "f", provider: "p", cost: 1 });
  await tally.flush();

  assert.deepEqual([...fake.recorded.keys()], [sent, later]);
  assert.equal(tally.refused.length, 1);
  assert.ok(logsOf(tally).at("error").some((line) => line.includes("onRefused callback threw")));
});

test("a refusal does not stop the other batches of the flush", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "no"));
  const refused = tally.record({ feature: "f", provider: "p", cost: 1, userId: "a" });
  const sent = tally.record({ feature: "f", provider: "p", cost: 1, userId: "b" });

  await assert.rejects(tally.flush(), PermissionDenied);

  assert.deepEqual(collected.operationIds(), [refused]);
  assert.deepEqual([...fake.recorded.keys()], [sent]);
  assert.equal(tally.pending, 0);
});

for (const [httpStatus, status, message, type] of [
  [403, "PERMISSION_DENIED", "userId: only recorder or admin callers may record for another user", PermissionDenied],
  [404, "NOT_FOUND", "no such function", NotFound],
  [409, "FAILED_PRECONDITION", "session s1 was written by an earlier system", FailedPrecondition],
  [415, "UNSUPPORTED_MEDIA_TYPE", "not JSON", TallyError],
] as const) {
  test(`a ${httpStatus} ${status} goes to onRefused`, async (t) => {
    const { fake, tally, collected } = await watched(t);
    fake.inject("record_steps", httpStatus, errorBody(status, message));
    const session = tally.session({ feature: "chat", sessionId: "s1" });
    const operationId = session.step({ provider: "openai", cost: 1 });

    await assert.rejects(tally.flush(), type);

    assert.equal(collected.calls.length, 1);
    const [steps, error] = collected.calls[0] ?? [];
    assert.deepEqual(ids(steps ?? []), [operationId]);
    assert.deepEqual([error?.httpStatus, error?.status, error?.sessionId], [httpStatus, status, "s1"]);
    assert.ok(!fake.recorded.has(operationId));
  });
}

test("a second 401 goes to onRefused", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.validTokens = new Set(["never"]);
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), TallyError);

  assert.deepEqual(collected.operationIds(), [operationId]);
  assert.equal(collected.calls[0]?.[1].httpStatus, 401);
});

test("an outage keeps the steps and never calls onRefused", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 4);
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), Unavailable);
  await tally.flush();

  assert.deepEqual(collected.calls, []);
  assert.deepEqual(tally.refused, []);
  assert.deepEqual([...fake.recorded.keys()], [operationId]);
  assert.deepEqual(new Set(ids(fake.steps())), new Set([operationId]));
});

test("the background timer hands refusals over without retrying them", async (t) => {
  const { fake, tally, collected } = await watched(t, { flushIntervalMs: 30 });
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "no"));

  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await waitFor(() => collected.calls.length === 1);
  assert.deepEqual(collected.operationIds(), [operationId]);
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(fake.requests().length, 1);
  assert.ok(!logsOf(tally).at("warn").some((line) => line.includes("kept for the next one")));
});

// --- a session completed meanwhile (409) ----------------------------------------------------

test("a step of a session completed meanwhile (409) is re-recorded as standalone with its session id", async (t) => {
  const { fake, tally, collected } = await watched(t);
  const session = tally.session({ feature: "chat", userId: "user-1", sessionId: "session_swept_1" });
  const first = session.step({ provider: "openai", cost: "0.5" });
  await tally.flush();
  fake.completedSessions.add(session.id); // the server's idle sweep completes it
  const late = session.step({ provider: "openai", cost: "0.25", metadata: { turn: 2 } });
  await tally.flush();
  const later = session.step({ provider: "openai", cost: "0.125" });
  await session.complete();

  const [refusedBody, standalone, withoutA409] = fake.bodies().slice(1);
  assert.equal(refusedBody?.session?.id, session.id);
  assert.ok(standalone && !("session" in standalone));
  assert.equal(standalone.userId, "user-1");
  assert.equal(standalone.steps.length, 1);
  const step = standalone.steps[0];
  assert.equal(step?.operationId, late);
  assert.deepEqual(step?.["metadata"], { sessionId: session.id, turn: 2 });
  assert.equal(step?.feature, "chat");
  assert.equal(step?.["cost"], "0.25");
  assert.equal(fake.recorded.get(first)?._session, session.id);
  assert.equal(fake.recorded.get(late)?._session, null);
  assert.deepEqual(ids(withoutA409?.steps ?? []), [later]);
  assert.ok(withoutA409 && !("session" in withoutA409));
  assert.deepEqual(fake.recorded.get(later)?.["metadata"], { sessionId: session.id });
  assert.deepEqual(collected.calls, []);
  assert.deepEqual(tally.refused, []);
  assert.equal(tally.pending, 0);
});

test("every later batch of a completed session goes standalone without another 409", async (t) => {
  const { fake, tally } = await setup(t);
  fake.completedSessions.add("session_swept_2");
  const session = tally.session({ feature: "chat", sessionId: "session_swept_2" });
  const made = Array.from({ length: 150 }, () => session.step({ provider: "openai", cost: "0.01" }));

  await tally.flush();

  const bodies = fake.bodies();
  assert.deepEqual(
    bodies.map((body) => "session" in body),
    [true, ...Array<boolean>(bodies.length - 1).fill(false)],
  );
  assert.equal(bodies.slice(1).reduce((sum, body) => sum + body.steps.length, 0), 150);
  assert.deepEqual([...fake.recorded.keys()].sort(), [...made].sort());
  assert.ok(made.every((id) => JSON.stringify(fake.recorded.get(id)?.["metadata"]) === '{"sessionId":"session_swept_2"}'));
});

test("a re-record hit by an outage stays queued as standalone", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("record_steps", 409, errorBody("FAILED_PRECONDITION", "session session_swept_4 is completed; it accepts no new steps"));
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 4);
  const session = tally.session({ feature: "chat", sessionId: "session_swept_4" });
  const operationId = session.step({ provider: "openai", cost: 1 });

  await assert.rejects(tally.flush(), Unavailable);
  assert.equal(tally.pending, 1);
  await tally.flush();

  const last = fake.bodies().at(-1);
  assert.ok(last && !("session" in last));
  assert.equal(last.steps[0]?.operationId, operationId);
  assert.deepEqual(fake.recorded.get(operationId)?.["metadata"], { sessionId: "session_swept_4" });
  assert.equal(tally.pending, 0);
});

test("the re-recorded metadata keeps the session id within 4 KiB", async (t) => {
  const { fake, tally } = await setup(t);
  fake.completedSessions.add("session_full_1");
  const session = tally.session({ feature: "chat", sessionId: "session_full_1" });
  const metadata = { a: "x".repeat(2000), b: "y".repeat(2000), c: "z".repeat(60) }; // no room for the session id
  const operationId = session.step({ provider: "openai", cost: 1, metadata });

  await tally.flush();

  assert.deepEqual(fake.recorded.get(operationId)?.["metadata"], { sessionId: "session_full_1" });
  assert.ok(logsOf(tally).at("error").some((line) => line.includes(operationId) && line.includes("no room for its session id")));
});

test("a 409 re-record measures its metadata as the server writes it (1e-07): no room, only the session id", async (t) => {
  const { fake, tally } = await setup(t);
  fake.completedSessions.add("session_full_2");
  const session = tally.session({ feature: "chat", sessionId: "session_full_2" });
  // 200 numbers the server writes one byte wider (1e-07): 3880 bytes in JavaScript, 4080 for the server.
  const metadata: Record<string, unknown> = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`n${i}`, 1e-7]));
  metadata["pad"] = "";
  metadata["pad"] = "p".repeat(3880 - Buffer.byteLength(JSON.stringify(metadata)));
  const operationId = session.step({ provider: "openai", cost: 1, metadata });
  // With the session id it is 3909 bytes in JavaScript but 4109 for the server: it would be refused.
  assert.equal(Buffer.byteLength(JSON.stringify({ sessionId: "session_full_2", ...metadata })), 3909);

  await tally.flush();

  assert.deepEqual(fake.recorded.get(operationId)?.["metadata"], { sessionId: "session_full_2" });
  assert.ok(logsOf(tally).at("error").some((line) => line.includes(operationId) && line.includes("no room for its session id")));
});

test("an app's own sessionId in metadata is kept", async (t) => {
  const { fake, tally } = await setup(t);
  fake.completedSessions.add("session_tally_1");
  const session = tally.session({ feature: "chat", sessionId: "session_tally_1" });
  const operationId = session.step({ provider: "openai", cost: 1, metadata: { sessionId: "app-conversation-9" } });

  await tally.flush();

  assert.deepEqual(fake.recorded.get(operationId)?.["metadata"], { tallySessionId: "session_tally_1", sessionId: "app-conversation-9" });
});

test("a refused standalone re-record goes to onRefused", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.inject("record_steps", 409, errorBody("FAILED_PRECONDITION", "session session_swept_3 is completed; it accepts no new steps"));
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "no"));
  const session = tally.session({ feature: "chat", sessionId: "session_swept_3" });
  const operationId = session.step({ provider: "openai", cost: 1 });

  await assert.rejects(tally.flush(), PermissionDenied);

  const [steps, error] = collected.calls[0] ?? [];
  assert.equal(steps?.[0]?.["operationId"], operationId);
  assert.deepEqual(steps?.[0]?.["metadata"], { sessionId: "session_swept_3" });
  assert.equal(error?.sessionId, undefined);
  assert.equal(fake.recorded.size, 0);
});

// --- one bad step never takes its batch down ----------------------------------------------

test("one bad step is removed and the others are resent", async (t) => {
  const { fake, tally, collected } = await watched(t);
  const made = Array.from({ length: 3 }, () => tally.record({ feature: "f", provider: "p", cost: 1, userId: "user-1" }));
  fake.badOperations.set(made[1] as string, ["units.model", "must be 1-100 characters"]);

  const caught = await tally.flush().catch((error: unknown) => error);

  const [first, second] = fake.bodies();
  assert.deepEqual(ids(first?.steps ?? []), made);
  assert.deepEqual(ids(second?.steps ?? []), [made[0], made[2]]);
  assert.deepEqual(second?.steps, [first?.steps[0], first?.steps[2]]);
  assert.deepEqual([...fake.recorded.keys()], [made[0], made[2]]);
  assert.deepEqual(collected.operationIds(), [made[1]]);
  assert.ok(caught instanceof InvalidArgument);
  assert.equal(caught.details[0]?.field, "steps[1].units.model");
  assert.deepEqual(ids(caught.steps), [made[1]]);
  assert.equal(tally.pending, 0);
});

test("several bad steps are all removed", async (t) => {
  const { fake, tally, collected } = await watched(t);
  const made = Array.from({ length: 5 }, () => tally.record({ feature: "f", provider: "p", cost: 1 }));
  fake.badOperations.set(made[0] as string, ["cost", "must be >= 0"]);
  fake.badOperations.set(made[3] as string, ["units.model", "must be 1-100 characters"]);

  await assert.rejects(tally.flush(), InvalidArgument);

  assert.equal(fake.requests().length, 2);
  assert.deepEqual([...fake.recorded.keys()], [made[1], made[2], made[4]]);
  assert.deepEqual(collected.operationIds(), [made[0], made[3]]);
});

test("a step refused for its metadata alone is resent without it: the usage is recorded", async (t) => {
  const { fake, tally, collected } = await watched(t);
  const made = [1, 2].map((cost) => tally.record({ feature: "f", provider: "p", cost, metadata: { note: "x" } }));
  fake.badOperations.set(made[1] as string, ["metadata", "must not contain unpaired surrogates"]);

  await tally.flush();

  assert.deepEqual([...fake.recorded.keys()], made);
  assert.equal(fake.bodies()[1]?.steps[1]?.["metadata"], undefined);
  assert.deepEqual(fake.bodies()[1]?.steps[0]?.["metadata"], { note: "x" });
  assert.deepEqual(collected.calls, []);
  assert.ok(logsOf(tally).at("error").some((line) => line.includes("metadata refused")));
});

test("a step refused for its metadata alone keeps its session id when resent", async (t) => {
  const { fake, tally, collected } = await watched(t);
  const refused = (times: number) =>
    fake.inject("record_steps", 400, errorBody("INVALID_ARGUMENT", "bad", [{ field: "steps[0].metadata", problem: "too big" }]), times);
  refused(1);
  const withId = tally.record({ feature: "f", provider: "p", cost: 1, metadata: { sessionId: "conversation-7", note: "x" } });
  await tally.flush();
  refused(2); // its session id alone is refused too: then it goes without metadata
  const onlyId = tally.record({ feature: "f", provider: "p", cost: 1, metadata: { sessionId: "conversation-8", note: "y" } });
  await tally.flush();

  assert.deepEqual(fake.recorded.get(withId)?.["metadata"], { sessionId: "conversation-7" });
  assert.equal(fake.recorded.get(onlyId)?.["metadata"], undefined);
  assert.deepEqual(
    fake.bodies().slice(2).map((body) => body.steps[0]?.["metadata"]),
    [{ sessionId: "conversation-8", note: "y" }, { sessionId: "conversation-8" }, undefined],
  );
  assert.deepEqual(collected.calls, []);
  assert.ok(logsOf(tally).at("error").some((line) => line.includes(withId) && line.includes("but its session id")));
});

test("a 409 re-record refused for its metadata keeps the session id", async (t) => {
  const { fake, tally } = await setup(t);
  fake.completedSessions.add("session_meta_1");
  fake.inject("record_steps", 409, errorBody("FAILED_PRECONDITION", "session session_meta_1 is completed; it accepts no new steps"));
  fake.inject("record_steps", 400, errorBody("INVALID_ARGUMENT", "bad", [{ field: "steps[0].metadata", problem: "too big" }]));
  const session = tally.session({ feature: "chat", sessionId: "session_meta_1" });
  const operationId = session.step({ provider: "openai", cost: 1, metadata: { sessionId: "app-9", note: "x" } });

  await tally.flush();

  assert.deepEqual(fake.recorded.get(operationId)?.["metadata"], { tallySessionId: "session_meta_1", sessionId: "app-9" });
});

test("an async onRefused that rejects is logged, never an unhandled rejection", async (t) => {
  const unhandled: unknown[] = [];
  const listener = (reason: unknown): void => void unhandled.push(reason);
  process.on("unhandledRejection", listener);
  t.after(() => process.off("unhandledRejection", listener));
  const { fake, make } = await setup(t);
  const tally = make({
    onRefused: async () => {
      throw new Error("the app's async callback failed");
    },
  });
  fake.inject("record_steps", 403, errorBody("PERMISSION_DENIED", "no"));
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), PermissionDenied);
  await new Promise((resolve) => setTimeout(resolve, 20));

  assert.deepEqual(unhandled, []);
  assert.ok(logsOf(tally).at("error").some((line) => line.includes("onRefused callback threw") && line.includes("async callback failed")));
});

test("a bad step in a completing batch still completes the session", async (t) => {
  const { fake, tally, collected } = await watched(t);
  const session = tally.session({ feature: "chat" });
  const bad = session.step({ provider: "openai", cost: 1 });
  const good = session.step({ provider: "openai", cost: 2 });
  fake.badOperations.set(bad, ["cost", "must be <= 1000"]);

  await assert.rejects(session.complete(), InvalidArgument);

  const last = fake.bodies().at(-1);
  assert.equal(last?.session?.complete, true);
  assert.deepEqual(ids(last?.steps ?? []), [good]);
  assert.ok(fake.completedSessions.has(session.id));
  assert.deepEqual(collected.operationIds(), [bad]);
});

for (const details of [
  [],
  [{ field: "userId", problem: "must be a Firebase Auth uid" }],
  [
    { field: "steps[0].cost", problem: "must be >= 0" },
    { field: "session.id", problem: "bad" },
  ],
  [{ field: "steps[7].cost", problem: "must be >= 0" }],
]) {
  test(`a 400 that names no step of the batch (${JSON.stringify(details)}) refuses the whole batch`, async (t) => {
    const { fake, tally, collected } = await watched(t);
    fake.inject("record_steps", 400, errorBody("INVALID_ARGUMENT", "bad request", details));
    const made = Array.from({ length: 2 }, () => tally.record({ feature: "f", provider: "p", cost: 1 }));

    await assert.rejects(tally.flush(), InvalidArgument);

    assert.equal(fake.requests().length, 1);
    assert.deepEqual(collected.operationIds(), made);
    assert.equal(tally.pending, 0);
  });
}

test("a 413 splits the batch instead of refusing it", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.inject("record_steps", 413, errorBody("PAYLOAD_TOO_LARGE", "request body must be at most 262144 bytes"));
  const made = Array.from({ length: 10 }, () => tally.record({ feature: "f", provider: "p", cost: 1 }));

  await tally.flush();

  assert.deepEqual(
    fake.bodies().map((body) => body.steps.length),
    [10, 5, 5],
  );
  assert.deepEqual([...fake.recorded.keys()], made);
  assert.deepEqual(collected.calls, []);
});

test("a 400 over a bound (21 features) splits the batch instead of refusing it", async (t) => {
  const { fake, tally, collected } = await watched(t);
  const problem = "a request may name at most 20 distinct features; send the others in another";
  fake.inject("record_steps", 400, errorBody("INVALID_ARGUMENT", problem, [{ field: "steps[3].feature", problem }]));
  const made = Array.from({ length: 4 }, (_, n) => tally.record({ feature: `f${n}`, provider: "p", cost: 1 }));

  await tally.flush();

  assert.deepEqual([...fake.recorded.keys()], made);
  assert.deepEqual(collected.calls, []);
});

// --- clock skew ------------------------------------------------------------------------------

test("a timestamp the client made is resent by the server's clock", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.checkTimestamps = true;
  fake.clockOffsetMs = -600_000; // this machine's clock is 10 minutes ahead of the server's
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  const [first, second] = fake.bodies().map((body) => body.steps[0]);
  assert.equal(first?.operationId, operationId);
  assert.equal(second?.operationId, operationId);
  const skew = Date.parse(String(first?.["timestamp"])) - Date.parse(String(second?.["timestamp"]));
  assert.ok(Math.abs(skew - 600_000) < 5_000);
  assert.deepEqual([...fake.recorded.keys()], [operationId]);
  assert.deepEqual(collected.calls, []);
});

test("once the server's clock is known new steps are stamped by it", async (t) => {
  const { fake, tally } = await setup(t);
  fake.checkTimestamps = true;
  fake.clockOffsetMs = -600_000;
  tally.record({ feature: "f", provider: "p", cost: 1 });
  await tally.flush();

  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });
  await tally.flush();

  assert.equal(fake.requests().length, 3);
  const stamped = Date.parse(String(fake.recorded.get(operationId)?.["timestamp"]));
  assert.ok(Math.abs(stamped - (Date.now() - 600_000)) < 5_000);
});

test("a small clock difference changes nothing", async (t) => {
  const { fake, tally } = await setup(t);
  fake.clockOffsetMs = 30_000;
  tally.record({ feature: "f", provider: "p", cost: 1 });
  await tally.flush();

  const before = Date.now();
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });
  await tally.flush();

  const stamped = Date.parse(String(fake.recorded.get(operationId)?.["timestamp"]));
  assert.ok(Math.abs(stamped - before) < 2_000);
});

test("without a readable Date a refused client timestamp is resent without one", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.checkTimestamps = true;
  fake.clockOffsetMs = -600_000;
  fake.dateHeader = "not a date";
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.ok("timestamp" in (fake.bodies()[0]?.steps[0] ?? {}));
  assert.ok(!("timestamp" in (fake.recorded.get(operationId) ?? {})));
  assert.deepEqual(collected.calls, []);
});

test("an app-given timestamp in the future goes to onRefused", async (t) => {
  const { fake, tally, collected } = await watched(t);
  fake.checkTimestamps = true;
  const given = tally.record({ feature: "f", provider: "p", cost: 1, timestamp: new Date(Date.now() + 600_000) });
  const stamped = tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), InvalidArgument);

  assert.deepEqual(collected.operationIds(), [given]);
  assert.deepEqual([...fake.recorded.keys()], [stamped]);
  assert.equal(fake.requests().length, 2);
});

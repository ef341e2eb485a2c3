/** Recording, batching, retries and errors against a fake of Tally's functions. */

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  QueueFull,
  Tally,
  TallyError,
  Unauthenticated,
  Unavailable,
  type StepInput,
} from "../../src/index.js";
import { errorBody } from "../helpers/fake-tally.js";
import { logsOf } from "../helpers/logger.js";
import { ids, setup, waitFor } from "../helpers/setup.js";

const OPERATION_ID = /^usage_\d{13}_[0-9a-f]{16}$/;

test("record() queues until flush, then sends one step", async (t) => {
  const { fake, tally } = await setup(t);
  const operationId = tally.record({ feature: "google_maps_autocomplete", provider: "google_maps", cost: 0.00283 });
  assert.equal(fake.bodies().length, 0);

  const responses = await tally.flush();

  assert.equal(responses[0]?.recorded, 1);
  const [body] = fake.bodies();
  assert.ok(body && !("userId" in body) && !("session" in body));
  const [step] = body.steps;
  assert.equal(step?.operationId, operationId);
  assert.match(operationId, OPERATION_ID);
  assert.equal(step?.["usageType"], "API");
  assert.equal(step?.feature, "google_maps_autocomplete");
  assert.equal(step?.provider, "google_maps");
  assert.equal(step?.["cost"], "0.00283");
  assert.equal(step?.["isBillableRun"], false);
  assert.match(String(step?.["timestamp"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(fake.requests()[0]?.headers.authorization, "Bearer token");
  assert.equal(tally.pending, 0);
});

const COSTS: [StepInput["cost"], string][] = [
  [0.1, "0.1"],
  [0.00283, "0.00283"],
  [1e-7, "0.0000001"],
  ["1E-7", "0.0000001"],
  ["0.123456789123", "0.123456789123"],
  ["0.017", "0.017"],
  [2, "2"],
  [0, "0"],
  [1000, "1000"],
  [10n, "10"],
];
for (const [cost, wire] of COSTS) {
  test(`cost ${String(cost)} goes on the wire as the decimal string ${wire}`, async (t) => {
    const { fake, tally } = await setup(t);
    tally.record({ feature: "f", provider: "p", cost });

    await tally.flush();

    assert.equal(fake.steps()[0]?.["cost"], wire);
    assert.ok(fake.requests()[0]?.raw.includes(`"cost":"${wire}"`));
  });
}

test("every field of a step goes on the wire", async (t) => {
  const { fake, tally } = await setup(t);

  tally.record({
    usageType: "AIUsage",
    feature: "chat",
    provider: "openai",
    cost: "0.5",
    units: { model: "gpt-4o", inputTokens: 1200, outputTokens: 350 },
    isBillableRun: true,
    timestamp: new Date(Date.UTC(2026, 10, 14, 10, 4, 9, 794)),
    metadata: { input: "55 cours", resultCount: 5, when: new Date(Date.UTC(2026, 0, 1)) },
    userId: "user-1",
    operationId: "usage_custom_1",
    reservationId: "res_1",
  });
  await tally.flush();

  const [body] = fake.bodies();
  assert.equal(body?.userId, "user-1");
  assert.deepEqual(body?.steps, [
    {
      operationId: "usage_custom_1",
      usageType: "AI",
      feature: "chat",
      provider: "openai",
      cost: "0.5",
      units: { model: "gpt-4o", inputTokens: 1200, outputTokens: 350 },
      isBillableRun: true,
      timestamp: "2026-11-14T10:04:09.794Z",
      metadata: { input: "55 cours", resultCount: 5, when: "2026-01-01T00:00:00.000Z" },
      reservationId: "res_1",
    },
  ]);
});

test("units alone default to usage type AI", async (t) => {
  const { fake, tally } = await setup(t);
  tally.record({ feature: "chat", provider: "anthropic", units: { model: "claude-3.5-sonnet", outputTokens: 7 } });

  await tally.flush();

  const [step] = fake.steps();
  assert.equal(step?.["usageType"], "AI");
  assert.ok(!("cost" in (step ?? {})));
  assert.deepEqual(step?.["units"], { model: "claude-3.5-sonnet", outputTokens: 7 });
});

test("epoch milliseconds and ISO timestamps with an offset", async (t) => {
  const { fake, tally } = await setup(t);
  tally.record({ feature: "f", provider: "p", cost: 1, timestamp: 1_760_436_249_794 });
  tally.record({ feature: "f", provider: "p", cost: 1, timestamp: "2026-11-14T12:04:09.794+02:00" });

  await tally.flush();

  assert.deepEqual(
    fake.steps().map((step) => step["timestamp"]),
    [1_760_436_249_794, "2026-11-14T10:04:09.794Z"],
  );
});

test("operation ids are unique", async (t) => {
  const { tally } = await setup(t);

  const made = new Set(Array.from({ length: 2000 }, () => tally.record({ feature: "f", provider: "p", cost: 0 })));

  assert.equal(made.size, 2000);
  assert.ok([...made].every((id) => OPERATION_ID.test(id)));
});

const INVALID: [Partial<StepInput> & Record<string, unknown>, string][] = [
  [{ cost: -1 }, "cost"],
  [{ cost: 1000.5 }, "cost"],
  [{ cost: "1000.000000001" }, "cost"],
  [{ cost: Number.NaN }, "cost"],
  [{ cost: "NaN" }, "cost"],
  [{ cost: "1_000" }, "cost"],
  [{ cost: true as never }, "cost"],
  [{}, "cost"],
  [{ cost: 1, feature: "bad name" }, "feature"],
  [{ cost: 1, feature: "chat\n" }, "feature"],
  [{ cost: 1, feature: "__name__" }, "feature"],
  [{ cost: 1, provider: "x".repeat(101) }, "provider"],
  [{ cost: 1, usageType: "AiUsageX" }, "usageType"],
  [{ cost: 1, operationId: "a/b" }, "operationId"],
  [{ cost: 1, userId: "a/b" }, "userId"],
  [{ cost: 1, timestamp: "2026-01-01T00:00:00" }, "timestamp"],
  [{ cost: 1, timestamp: "yesterday" }, "timestamp"],
  [{ cost: 1, timestamp: 1.5 }, "timestamp"],
  [{ cost: 1, metadata: { x: "y".repeat(5000) } }, "metadata"],
  [{ cost: 1, metadata: { __key__: 1 } }, "metadata"],
  [{ cost: 1, metadata: { f: Number.POSITIVE_INFINITY } }, "metadata"],
  [{ cost: 1, metadata: { n: 1n } }, "metadata"],
  [{ cost: 1, isBillableRun: "yes" as never }, "isBillableRun"],
  [{ units: { model: "gpt-4o" } }, "units"],
  [{ units: { model: "gpt-4o", input_tokens: 3 } as never }, "units.input_tokens"],
  [{ units: { model: "gpt 4o", inputTokens: 3 } }, "units.model"],
  [{ units: { model: "gpt-4o", inputTokens: -1 } }, "units.inputTokens"],
  [{ units: { model: "gpt-4o", inputTokens: 1e9 + 1 } }, "units.inputTokens"],
  [{ units: { model: "gpt-4o", inputTokens: 2.5 } }, "units.inputTokens"],
];
for (const [fields, badField] of INVALID) {
  test(`an invalid ${badField} (${JSON.stringify(fields, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v)).slice(0, 60)}) throws before anything is queued`, async (t) => {
    const { tally } = await setup(t);
    const step = { feature: "f", provider: "p", ...fields } as StepInput;

    assert.throws(
      () => tally.record(step),
      (error: unknown) => {
        assert.ok(error instanceof InvalidArgument);
        assert.equal(error.details[0]?.field, badField);
        assert.equal(error.httpStatus, undefined);
        return true;
      },
    );
    assert.equal(tally.pending, 0);
  });
}

test("steps of different users go in separate requests", async (t) => {
  const { fake, tally } = await setup(t);
  tally.record({ feature: "f", provider: "p", cost: 1, userId: "alice" });
  tally.record({ feature: "f", provider: "p", cost: 1, userId: "bob" });
  tally.record({ feature: "f", provider: "p", cost: 1, userId: "alice" });

  await tally.flush();

  assert.deepEqual(
    fake.bodies().map((body) => [body.userId, body.steps.length]),
    [
      ["alice", 2],
      ["bob", 1],
    ],
  );
});

test("101 steps make two requests", async (t) => {
  const { fake, tally } = await setup(t);
  const made = Array.from({ length: 101 }, () => tally.record({ feature: "f", provider: "p", cost: "0.01" }));

  await tally.flush();

  assert.deepEqual(
    fake.bodies().map((body) => body.steps.length),
    [100, 1],
  );
  assert.deepEqual(ids(fake.steps()), made);
});

test("21 distinct features make two requests", async (t) => {
  const { fake, tally } = await setup(t);
  for (let n = 0; n < 21; n++) tally.record({ feature: `feature_${n}`, provider: "p", cost: 1 });

  await tally.flush();

  const bodies = fake.bodies();
  assert.deepEqual(
    bodies.map((body) => body.steps.length),
    [20, 1],
  );
  assert.ok(bodies.every((body) => new Set(body.steps.map((step) => step.feature)).size <= 20));
});

test("21 distinct providers make two requests", async (t) => {
  const { fake, tally } = await setup(t);
  for (let n = 0; n < 30; n++) tally.record({ feature: "f", provider: `provider_${n % 21}`, cost: 1 });

  await tally.flush();

  const bodies = fake.bodies();
  assert.equal(bodies.length, 2);
  assert.ok(bodies.every((body) => new Set(body.steps.map((step) => step.provider)).size <= 20));
  assert.equal(fake.recorded.size, 30);
});

test("21 distinct models make two requests", async (t) => {
  const { fake, tally } = await setup(t);
  const made = Array.from({ length: 21 }, (_, n) =>
    tally.record({ feature: "chat", provider: "openai", units: { model: `model-${n}`, inputTokens: 1 } }),
  );

  await tally.flush();

  assert.deepEqual(
    fake.bodies().map((body) => body.steps.length),
    [20, 1],
  );
  assert.deepEqual([...fake.recorded.keys()], made);
});

test("names and models split at whichever bound comes first", async (t) => {
  const { fake, tally } = await setup(t);
  for (let n = 0; n < 60; n++) {
    tally.record({ feature: `feature_${n % 25}`, provider: `provider_${n % 7}`, units: { model: `model-${n % 23}`, outputTokens: 1 } });
    tally.record({ feature: "f", provider: "p", cost: 1 }); // steps without units name no model
  }

  await tally.flush();

  const bodies = fake.bodies();
  for (const body of bodies) {
    assert.ok(new Set(body.steps.map((step) => step.feature)).size <= 20);
    assert.ok(new Set(body.steps.map((step) => step.provider)).size <= 20);
    assert.ok(new Set(body.steps.filter((step) => step["units"]).map((step) => (step["units"] as { model: string }).model)).size <= 20);
  }
  assert.equal(fake.recorded.size, 120);
  assert.equal(fake.requests().length, bodies.length); // no request was refused
});

test("a body is filled up to 256 KiB and never over", async (t) => {
  const { fake, tally } = await setup(t);
  for (let n = 0; n < 100; n++) tally.record({ feature: "f", provider: "p", cost: 1, metadata: { blob: "x".repeat(3900 + n) } });

  await tally.flush();

  const sizes = fake.requests().map((request) => Buffer.byteLength(request.raw));
  assert.ok(sizes.every((size) => size <= 256 * 1024));
  assert.ok((sizes[0] ?? 0) > 256 * 1024 - 4100); // the next step would not have fitted
  assert.equal(fake.recorded.size, 100);
});

test("a body with multi-byte characters is measured in bytes", async (t) => {
  const { fake, tally } = await setup(t);
  for (let n = 0; n < 100; n++) tally.record({ feature: "f", provider: "p", cost: 1, metadata: { blob: "é".repeat(1990) } });

  await tally.flush();

  assert.ok(fake.requests().every((request) => Buffer.byteLength(request.raw) <= 256 * 1024));
  assert.equal(fake.recorded.size, 100);
});

test("a repeated operation id goes in another request", async (t) => {
  const { tally } = await setup(t);
  tally.record({ feature: "f", provider: "p", cost: 1, operationId: "usage_repeated_1" });
  tally.record({ feature: "f", provider: "p", cost: 1, operationId: "usage_repeated_1" });

  const responses = await tally.flush();

  assert.deepEqual(
    responses.map((response) => [response.recorded, response.duplicates]),
    [
      [1, 0],
      [0, 1],
    ],
  );
});

test("a full batch is sent by the background timer at once", async (t) => {
  const { fake, tally } = await setup(t);
  for (let n = 0; n < 100; n++) tally.record({ feature: "f", provider: "p", cost: 1 });

  await waitFor(() => fake.recorded.size === 100);

  assert.deepEqual(
    fake.bodies().map((body) => body.steps.length),
    [100],
  );
});

test("the timer sends queued steps", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ flushIntervalMs: 50 });

  tally.record({ feature: "f", provider: "p", cost: 1 });

  await waitFor(() => fake.recorded.size === 1 && tally.pending === 0);
});

test("close() sends what is queued and refuses later records", async (t) => {
  const { fake, tally } = await setup(t);
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.close();

  assert.equal(fake.recorded.size, 1);
  assert.throws(() => tally.record({ feature: "f", provider: "p", cost: 1 }), TallyError);
});

test("the App Check token is sent", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({ appCheckToken: async () => "app-check-token" });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.equal(fake.requests()[0]?.headers["x-firebase-appcheck"], "app-check-token");
});

test("a retry after a 503 resends the identical body", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "try again"));
  const made = Array.from({ length: 3 }, () => tally.record({ feature: "f", provider: "p", cost: "0.1" }));

  const responses = await tally.flush();

  const [first, second] = fake.requests();
  assert.equal(first?.raw, second?.raw);
  assert.deepEqual(ids((second?.body as { steps: Record<string, unknown>[] }).steps), made);
  assert.equal(responses.length, 1);
  assert.equal(responses[0]?.recorded, 3);
});

for (const status of [500, 502, 504, 429]) {
  test(`a ${status} is retried with the same body`, async (t) => {
    const { fake, tally } = await setup(t);
    fake.inject("record_steps", status, { error: { status: "INTERNAL", message: "oops" } });
    tally.record({ feature: "f", provider: "p", cost: 1 });

    await tally.flush();

    const [first, second] = fake.requests();
    assert.equal(fake.requests().length, 2);
    assert.equal(first?.raw, second?.raw);
  });
}

test("a Retry-After is waited for, capped at backoffMaxMs", async (t) => {
  const waits: number[] = [];
  let first = true;
  const { fake, make } = await setup(t);
  const tally = make({
    sleep: async (ms) => void waits.push(ms),
    backoffMaxMs: 1500,
    fetch: async (url, init) => {
      if (!first) return fetch(url, init);
      first = false;
      return new Response(JSON.stringify(errorBody("RESOURCE_EXHAUSTED", "slow down")), {
        status: 429,
        headers: { "Content-Type": "application/json", "Retry-After": "2" },
      });
    },
  });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.deepEqual(waits, [1500]);
  assert.equal(fake.recorded.size, 1);
});

test("network errors are retried with the same body", async (t) => {
  const { fake, make } = await setup(t);
  const sent: string[] = [];
  let failures = 2;
  const tally = make({
    fetch: async (url, init) => {
      sent.push(String(init.body));
      if (failures-- > 0) throw new TypeError("fetch failed", { cause: new Error("connection reset") });
      return fetch(url, init);
    },
  });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.equal(sent.length, 3);
  assert.equal(new Set(sent).size, 1);
  assert.equal(fake.requests().length, 1);
});

test("a request that times out is retried with the same body", async (t) => {
  const { fake, make } = await setup(t);
  let hang = true;
  const tally = make({
    timeoutMs: 50,
    fetch: async (url, init) => {
      if (hang) {
        hang = false;
        return new Promise<Response>((_resolve, reject) =>
          init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))),
        );
      }
      return fetch(url, init);
    },
  });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.equal(fake.recorded.size, 1);
});

test("after every retry fails the steps stay queued", async (t) => {
  const { fake, tally } = await setup(t);
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 4);
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), Unavailable);
  assert.equal(tally.pending, 1);
  await tally.flush();

  assert.equal(fake.requests().length, 5);
  assert.deepEqual(new Set(ids(fake.steps())), new Set([operationId]));
  assert.equal(tally.pending, 0);
});

test("a 400 rejects with the server's message and drops the batch", async (t) => {
  const { fake, tally } = await setup(t);
  const details = [{ field: "steps[0].timestamp", problem: "older than 35 days" }];
  fake.inject("record_steps", 400, errorBody("INVALID_ARGUMENT", "steps[0].timestamp: older", details));
  const operationId = tally.record({ feature: "f", provider: "p", cost: 1, timestamp: "2026-01-01T00:00:00Z" });

  const error = await tally.flush().then(
    () => assert.fail("flush should reject"),
    (caught: unknown) => caught,
  );

  assert.ok(error instanceof InvalidArgument);
  assert.equal(error.status, "INVALID_ARGUMENT");
  assert.equal(error.message, "steps[0].timestamp: older");
  assert.deepEqual(error.details, details);
  assert.equal(error.httpStatus, 400);
  assert.deepEqual(ids(error.steps), [operationId]);
  assert.equal(fake.requests().length, 1);
  assert.equal(tally.pending, 0);
});

for (const [httpStatus, status, type] of [
  [403, "PERMISSION_DENIED", PermissionDenied],
  [404, "NOT_FOUND", NotFound],
  [409, "FAILED_PRECONDITION", FailedPrecondition],
] as const) {
  test(`a ${httpStatus} rejects with ${type.name}`, async (t) => {
    const { fake, tally } = await setup(t);
    fake.inject("record_steps", httpStatus, errorBody(status, "no"));
    tally.record({ feature: "f", provider: "p", cost: 1 });

    await assert.rejects(tally.flush(), (error: unknown) => error instanceof type && error.status === status && error.message === "no");

    assert.equal(fake.requests().length, 1);
  });
}

test("a 401 is retried once with a fresh token", async (t) => {
  const { fake, make } = await setup(t);
  const tokens = ["stale", "fresh"];
  fake.validTokens = new Set(["fresh"]);
  const tally = make({ idToken: () => tokens.shift() ?? "none" });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.deepEqual(
    fake.requests().map((request) => request.headers.authorization),
    ["Bearer stale", "Bearer fresh"],
  );
  assert.equal(fake.requests()[0]?.raw, fake.requests()[1]?.raw);
});

test("the token after a 401 is asked for with forceRefresh", async (t) => {
  const { fake, make } = await setup(t);
  fake.validTokens = new Set(["fresh"]);
  const asked: unknown[] = [];
  const tally = make({ idToken: (...args: unknown[]) => (asked.push(args[0]), args[0] === true ? "fresh" : "cached") });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.deepEqual(asked, [undefined, true]);
  assert.equal(fake.requests()[1]?.headers.authorization, "Bearer fresh");
});

test("only the attempt right after a 401 forces a token refresh, not later retries", async (t) => {
  const { fake, make } = await setup(t);
  fake.inject("record_steps", 401, errorBody("UNAUTHENTICATED", "the ID token has expired"));
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"));
  const asked: unknown[] = [];
  const tally = make({ idToken: (...args: unknown[]) => (asked.push(args[0]), "token") });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await tally.flush();

  assert.deepEqual(asked, [undefined, true, undefined]);
  assert.equal(fake.recorded.size, 1);
});

test("a second 401 rejects with Unauthenticated", async (t) => {
  const { fake, tally } = await setup(t);
  fake.validTokens = new Set(["never"]);
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), (error: unknown) => error instanceof Unauthenticated && error.message === "the ID token has expired");

  assert.equal(fake.requests().length, 2);
});

test("a failing token source keeps the steps", async (t) => {
  const { fake, make } = await setup(t);
  const tally = make({
    idToken: () => {
      throw new Error("no network for the token");
    },
  });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), Unavailable);

  assert.equal(tally.pending, 1);
  assert.equal(fake.requests().length, 0);
});

test("background failures are logged and retried later", async (t) => {
  const { fake, make } = await setup(t);
  fake.inject("record_steps", 503, errorBody("UNAVAILABLE", "down"), 2);
  const tally = make({ flushIntervalMs: 50, maxRetries: 1 });

  const operationId = tally.record({ feature: "f", provider: "p", cost: 1 });

  await waitFor(() => fake.requests().length >= 3 && tally.pending === 0);
  assert.deepEqual(new Set(ids(fake.steps())), new Set([operationId]));
  assert.ok(logsOf(tally).at("warn").some((line) => line.includes("kept for the next one")));
});

test("the queue is bounded", async (t) => {
  const { make } = await setup(t);
  const tally = make({ maxQueuedSteps: 2 });
  tally.record({ feature: "f", provider: "p", cost: 1 });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  assert.throws(() => tally.record({ feature: "f", provider: "p", cost: 1 }), QueueFull);
});

test("myUsage uses the callable protocol", async (t) => {
  const { fake, tally } = await setup(t);

  const usage = await tally.myUsage({ month: "2026-11" });

  assert.equal(usage["month"], "2026-11");
  assert.deepEqual(fake.bodies("my_usage"), [{ data: { month: "2026-11" } }]);
});

test("the wire body is compact JSON in UTF-8", async (t) => {
  const { fake, tally } = await setup(t);
  tally.record({ feature: "f", provider: "p", cost: 1, metadata: { text: "café" } });

  await tally.flush();

  const raw = fake.requests()[0]?.raw ?? "";
  assert.deepEqual(JSON.parse(raw), fake.bodies()[0]);
  assert.ok(raw.includes("café"));
  assert.ok(!raw.includes(", ") && !raw.includes(": "));
});

test("a bad URL throws at once", () => {
  assert.throws(() => new Tally({ functionsUrl: "not-a-url", idToken: () => "token", closeAtExit: false }));
});

test("an unreachable server keeps the steps and close() does not throw", async () => {
  const tally = new Tally({
    functionsUrl: "http://127.0.0.1:9/tally",
    idToken: () => "token",
    flushIntervalMs: null,
    maxRetries: 1,
    backoffBaseMs: 1,
    logger: new (await import("../helpers/logger.js")).CaptureLogger(),
    closeAtExit: false,
  });
  tally.record({ feature: "f", provider: "p", cost: 1 });

  await assert.rejects(tally.flush(), Unavailable);
  assert.equal(tally.pending, 1);
  await tally.close();

  assert.ok(logsOf(tally).at("error").some((line) => line.includes("never acknowledged")));
});

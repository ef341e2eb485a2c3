/** Against the real functions: every client rule of SPEC.md's "Clients (v3)" — no usage lost at the seams. */

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";

import { InvalidArgument, PermissionDenied, type TallyError } from "../../src/index.js";
import { FUNCTIONS_URL, SKIP, makeUser, myUsage, nanos, post, tallyFor } from "../helpers/emulator.js";

test("a step of a session completed meanwhile (409) is recorded again as a standalone step", { skip: SKIP }, async () => {
  const user = await makeUser();
  const tally = tallyFor(user);
  const session = tally.session({ feature: "chat" });
  session.step({ provider: "openai", cost: "0.25" });
  await session.flush();
  const completed = await post("record_steps", user, { session: { id: session.id, complete: true }, steps: [] }); // as the idle sweep does
  assert.equal(completed.status, 200, await completed.clone().text());
  session.step({ provider: "openai", cost: "0.5", metadata: { turn: 2 } });

  const responses = await tally.flush();
  await tally.close();

  assert.equal(responses.at(-1)?.session, null);
  assert.equal(responses.at(-1)?.recorded, 1);
  assert.deepEqual(tally.refused, []);
  assert.equal(tally.pending, 0);
  const usage = await myUsage(user);
  assert.equal(usage["apiCalls"], 2);
  assert.equal(usage["totalCost"], 0.75);
});

test("one bad step goes to onRefused and the others are recorded", { skip: SKIP }, async () => {
  const user = await makeUser();
  const handed: [Record<string, unknown>[], TallyError][] = [];
  const tally = tallyFor(user, { onRefused: (steps, error) => handed.push([steps, error]) });
  tally.record({ feature: "chat", provider: "openai", cost: "0.25" });
  const bad = tally.record({ feature: "chat", provider: "openai", cost: "0.5", timestamp: new Date(Date.now() - 40 * 86_400_000) });
  tally.record({ feature: "chat", provider: "openai", cost: "0.125" });

  await assert.rejects(tally.flush(), InvalidArgument);
  await tally.close();

  assert.equal(handed.length, 1);
  const [steps, error] = handed[0] ?? [[], undefined];
  assert.deepEqual(
    steps.map((step) => step["operationId"]),
    [bad],
  );
  assert.equal(error?.details[0]?.field, "steps[1].timestamp");
  assert.deepEqual(
    tally.takeRefused().map((refusal) => refusal.steps[0]?.["operationId"]),
    [bad],
  );
  const usage = await myUsage(user);
  assert.equal(usage["apiCalls"], 2);
  assert.equal(usage["totalCost"], 0.375);
});

test("a forbidden batch goes to onRefused and nothing is recorded for the other user", { skip: SKIP }, async () => {
  const [user, other] = await Promise.all([makeUser(), makeUser()]);
  const handed: [Record<string, unknown>[], TallyError][] = [];
  const tally = tallyFor(user, { onRefused: (steps, error) => handed.push([steps, error]) });
  const operationId = tally.record({ feature: "chat", provider: "openai", cost: "0.5", userId: other.uid });

  await assert.rejects(tally.flush(), PermissionDenied);
  await tally.close();

  const [steps, error] = handed[0] ?? [[], undefined];
  assert.deepEqual(
    steps.map((step) => step["operationId"]),
    [operationId],
  );
  assert.deepEqual([error?.httpStatus, error?.userId], [403, other.uid]);
  assert.equal((await myUsage(other))["apiCalls"], 0);
});

test("21 models in one flush are split and all counted", { skip: SKIP }, async () => {
  const user = await makeUser();
  const tally = tallyFor(user);
  for (let n = 0; n < 21; n++) {
    tally.record({ feature: "chat", provider: "openai", cost: "0.125", units: { model: `client-model-${n}`, inputTokens: 10, outputTokens: 1 } });
  }

  const responses = await tally.flush();
  await tally.close();

  assert.equal(responses.length, 2);
  assert.deepEqual(tally.refused, []);
  const usage = await myUsage(user);
  assert.equal(usage["apiCalls"], 21);
  assert.equal(usage["totalCost"], 2.625);
});

test("101 steps are split and all counted", { skip: SKIP }, async () => {
  const user = await makeUser();
  const tally = tallyFor(user);
  for (let n = 0; n < 101; n++) tally.record({ feature: "chat", provider: "openai", cost: "0.01" });

  await tally.flush();
  await tally.close();

  assert.equal(tally.pending, 0);
  assert.deepEqual(tally.refused, []);
  const usage = await myUsage(user);
  assert.equal(usage["apiCalls"], 101);
  assert.equal(nanos(usage["totalCost"]), 1_010_000_000);
});

test("21 features (and 3 providers) recorded by a recorder are split and all counted under their names", { skip: SKIP }, async () => {
  const [user, recorder] = await Promise.all([makeUser(), makeUser({ recorder: true })]);
  const tally = tallyFor(recorder); // a recorder: the per-user cap on new names does not fold one into (other)
  for (let n = 0; n < 150; n++) tally.record({ feature: `feature_${n % 21}`, provider: `provider_${n % 3}`, cost: "0.0625", userId: user.uid });

  const responses = await tally.flush();
  await tally.close();

  assert.equal(tally.pending, 0);
  assert.ok(responses.every((response) => response.warnings.length === 0));
  const usage = await myUsage(user);
  assert.equal(usage["apiCalls"], 150);
  assert.equal(usage["totalCost"], 9.375);
  assert.deepEqual(
    (usage["features"] as { name: string }[]).map((feature) => feature.name).sort(),
    Array.from({ length: 21 }, (_, n) => `feature_${n}`).sort(),
  );
});

/** A proxy to the functions that forwards each request, and answers 503 instead for the first `failures`. */
async function flakyProxy(failures: number) {
  const bodies: string[] = [];
  let left = failures;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks).toString("utf8");
      bodies.push(body);
      const upstream = await fetch(`${FUNCTIONS_URL}${req.url ?? ""}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: String(req.headers.authorization ?? "") },
        body,
      });
      const text = await upstream.text();
      const fail = left-- > 0;
      res.writeHead(fail ? 503 : upstream.status, { "Content-Type": "application/json" });
      res.end(fail ? '{"error":{"status":"UNAVAILABLE","message":"injected"}}' : text);
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, bodies, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

test("a retry after a 503 (the first attempt committed) resends the same body and is counted once", { skip: SKIP }, async (t) => {
  const user = await makeUser();
  const proxy = await flakyProxy(1);
  t.after(proxy.close);
  const tally = tallyFor(user, { functionsUrl: proxy.url });
  for (let n = 0; n < 3; n++) tally.record({ feature: "chat", provider: "openai", cost: "0.5" });

  const responses = await tally.flush();
  await tally.close();

  assert.equal(proxy.bodies.length, 2);
  assert.equal(proxy.bodies[0], proxy.bodies[1]);
  assert.deepEqual([responses[0]?.recorded, responses[0]?.duplicates], [0, 3]);
  const usage = await myUsage(user);
  assert.equal(usage["apiCalls"], 3);
  assert.equal(usage["totalCost"], 1.5);
});

test("immediate mode records each step before its promise resolves", { skip: SKIP }, async () => {
  const user = await makeUser();
  const tally = tallyFor(user, { mode: "immediate" });

  await tally.record({ feature: "chat", provider: "openai", cost: "0.25" });
  const usage = await myUsage(user);
  await tally.close();

  assert.equal(usage["apiCalls"], 1);
});

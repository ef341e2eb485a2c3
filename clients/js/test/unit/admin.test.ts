/** recorderToken: the recorder account (fake Admin SDK auth) and signInWithCustomToken (a local Identity Toolkit). */

import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { test } from "node:test";

import { recorderToken, type AdminAuth } from "../../src/admin.js";
import { TallyError } from "../../src/index.js";
import { LocalServer, sendJson } from "../helpers/http.js";
import { setup } from "../helpers/setup.js";

/** The Admin SDK calls recorderToken makes, on an in-memory user list. */
class FakeAuth implements AdminAuth {
  readonly users = new Map<string, { customClaims?: Record<string, unknown> }>();
  readonly calls: string[] = [];

  async getUser(uid: string) {
    this.calls.push(`getUser ${uid}`);
    const user = this.users.get(uid);
    if (!user) throw Object.assign(new Error("no user"), { code: "auth/user-not-found" });
    return user;
  }

  async createUser({ uid }: { uid: string }) {
    this.calls.push(`createUser ${uid}`);
    this.users.set(uid, {});
    return {};
  }

  async setCustomUserClaims(uid: string, claims: Record<string, unknown> | null) {
    this.calls.push(`setCustomUserClaims ${uid} ${JSON.stringify(claims)}`);
    this.users.set(uid, { customClaims: claims ?? {} });
  }

  async createCustomToken(uid: string, claims?: Record<string, unknown>) {
    this.calls.push(`createCustomToken ${uid} ${JSON.stringify(claims)}`);
    return `custom-${uid}-${this.calls.length}`;
  }
}

async function identityToolkit(t: TestContext, expiresIn = "3600") {
  const server = await LocalServer.start();
  t.after(() => server.close());
  let issued = 0;
  server.route("/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken", (request, res) => {
    issued += 1;
    const body = request.body as { token: string };
    sendJson(res, 200, { idToken: `id-token-${issued}-for-${body.token}`, refreshToken: "r", expiresIn });
  });
  return { server, host: server.url.replace("http://", ""), issued: () => issued };
}

test("the recorder account is created with the claim, then signed in with a custom token", async (t) => {
  const { server, host } = await identityToolkit(t);
  const auth = new FakeAuth();

  const token = await recorderToken({ auth, uid: "backend-1", emulatorHost: host })();

  assert.equal(token, "id-token-1-for-custom-backend-1-4");
  assert.deepEqual(auth.calls, [
    "getUser backend-1",
    "createUser backend-1",
    'setCustomUserClaims backend-1 {"recorder":true}',
    'createCustomToken backend-1 {"recorder":true}',
  ]);
  const [request] = server.requests;
  assert.deepEqual(request?.body, { token: "custom-backend-1-4", returnSecureToken: true });
});

test("an existing account keeps its other claims", async (t) => {
  const { host } = await identityToolkit(t);
  const auth = new FakeAuth();
  auth.users.set("backend-2", { customClaims: { plan: "pro" } });

  await recorderToken({ auth, uid: "backend-2", emulatorHost: host })();

  assert.deepEqual(auth.users.get("backend-2")?.customClaims, { plan: "pro", recorder: true });
  assert.ok(!auth.calls.some((call) => call.startsWith("createUser")));
});

test("an account that has the claim already is left as it is", async (t) => {
  const { host } = await identityToolkit(t);
  const auth = new FakeAuth();
  auth.users.set("backend-3", { customClaims: { recorder: true } });

  await recorderToken({ auth, uid: "backend-3", emulatorHost: host })();

  assert.ok(!auth.calls.some((call) => call.startsWith("setCustomUserClaims")));
});

test("the token is cached, and concurrent calls share one sign-in", async (t) => {
  const { host, issued } = await identityToolkit(t);
  const idToken = recorderToken({ auth: new FakeAuth(), uid: "backend-4", emulatorHost: host });

  const tokens = await Promise.all([idToken(), idToken(), idToken()]);
  const again = await idToken();

  assert.equal(new Set([...tokens, again]).size, 1);
  assert.equal(issued(), 1);
});

test("the token is refreshed the margin before it expires", async (t) => {
  const { host, issued } = await identityToolkit(t, "300");
  const idToken = recorderToken({ auth: new FakeAuth(), uid: "backend-5", emulatorHost: host }); // 5 min margin

  const first = await idToken();
  const second = await idToken();

  assert.notEqual(first, second);
  assert.equal(issued(), 2);
});

test("production needs the Web API key and sends it to Identity Toolkit", async (t) => {
  const { server } = await identityToolkit(t);
  const base = `${server.url}/identitytoolkit.googleapis.com/v1`;
  const saved = process.env["FIREBASE_API_KEY"];
  delete process.env["FIREBASE_API_KEY"];
  const withoutKey = recorderToken({ auth: new FakeAuth(), uid: "backend-6", identityToolkitUrl: base, emulatorHost: null });
  if (saved !== undefined) process.env["FIREBASE_API_KEY"] = saved;

  await assert.rejects(withoutKey(), (error: unknown) => error instanceof TallyError && /Web API key/.test(error.message));
  await recorderToken({ auth: new FakeAuth(), uid: "backend-6", identityToolkitUrl: base, emulatorHost: null, apiKey: "AIza-test" })();

  assert.equal(server.requests.at(-1)?.url, "/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken?key=AIza-test");
});

test("a refused sign-in rejects and is tried again on the next call", async (t) => {
  const server = await LocalServer.start();
  t.after(() => server.close());
  let fail = true;
  server.route("/identitytoolkit.googleapis.com/v1/accounts:signInWithCustomToken", (_request, res) => {
    if (fail) sendJson(res, 400, { error: { message: "INVALID_CUSTOM_TOKEN" } });
    else sendJson(res, 200, { idToken: "ok", expiresIn: "3600" });
  });
  const idToken = recorderToken({ auth: new FakeAuth(), uid: "backend-7", emulatorHost: server.url.replace("http://", "") });

  await assert.rejects(idToken(), /INVALID_CUSTOM_TOKEN/);
  fail = false;

  assert.equal(await idToken(), "ok");
});

test("Tally sends the recorder's token and records for another user", async (t) => {
  const { fake, make } = await setup(t);
  const { host } = await identityToolkit(t);
  const tally = make({ idToken: recorderToken({ auth: new FakeAuth(), uid: "backend-8", emulatorHost: host }) });

  tally.record({ feature: "chat", provider: "openai", cost: "0.01", userId: "someone" });
  await tally.flush();

  assert.match(String(fake.requests()[0]?.headers.authorization), /^Bearer id-token-1-for-custom-backend-8/);
  assert.equal(fake.bodies()[0]?.userId, "someone");
});

test("a 401 makes the recorder sign in again instead of resending the cached token", async (t) => {
  const { fake, make } = await setup(t);
  const { host, issued } = await identityToolkit(t);
  const idToken = recorderToken({ auth: new FakeAuth(), uid: "backend-9", emulatorHost: host });
  const stale = await idToken(); // cached; the server has revoked it meanwhile
  fake.validTokens = new Set(["id-token-2-for-custom-backend-9-5"]);
  const tally = make({ idToken });

  tally.record({ feature: "chat", provider: "openai", cost: "0.01", userId: "someone" });
  await tally.flush();

  assert.deepEqual(
    fake.requests().map((request) => request.headers.authorization),
    [`Bearer ${stale}`, "Bearer id-token-2-for-custom-backend-9-5"],
  );
  assert.equal(issued(), 2);
});

/**
 * Against the emulators: a backend with only the Admin SDK and `recorderToken` records for another
 * user; `watchUsage` shows a signed-in user's live usage from their own `TallyUsers/{uid}`.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { deleteApp as deleteAdminApp, initializeApp as initializeAdminApp } from "firebase-admin/app";
import { getAuth as getAdminAuth } from "firebase-admin/auth";
import { deleteApp, initializeApp } from "firebase/app";
import { connectAuthEmulator, getAuth, signInWithEmailAndPassword } from "firebase/auth";
import { connectFirestoreEmulator, getFirestore, terminate } from "firebase/firestore";

import { recorderToken } from "../../src/admin.js";
import { Tally } from "../../src/index.js";
import { watchUsage, type LiveUsage } from "../../src/web.js";
import { AUTH_HOST, FIRESTORE_HOST, FUNCTIONS_URL, PROJECT, SKIP, makeUser, myUsage, unique } from "../helpers/emulator.js";

test("a backend with only the Admin SDK and recorderToken records for another user", { skip: SKIP }, async (t) => {
  const user = await makeUser();
  const app = initializeAdminApp({ projectId: PROJECT }, `admin-${unique()}`);
  t.after(() => deleteAdminApp(app));
  const recorderUid = `backend-${unique()}`;
  const tally = new Tally({ functionsUrl: FUNCTIONS_URL, idToken: recorderToken({ app, uid: recorderUid }), flushIntervalMs: null, closeAtExit: false });

  tally.record({ feature: "chat", provider: "openai", cost: "0.5", userId: user.uid });
  await tally.flush();
  const own = await tally.myUsage();
  await tally.close();

  assert.equal((await myUsage(user))["totalCost"], 0.5);
  assert.equal(own["totalCost"], 0);
  const account = await getAdminAuth(app).getUser(recorderUid);
  assert.equal(account.customClaims?.["recorder"], true);
});

test("recorderToken keeps an existing account's other claims", { skip: SKIP }, async (t) => {
  const app = initializeAdminApp({ projectId: PROJECT }, `admin-${unique()}`);
  t.after(() => deleteAdminApp(app));
  const uid = `backend-${unique()}`;
  await getAdminAuth(app).createUser({ uid });
  await getAdminAuth(app).setCustomUserClaims(uid, { team: "ops" });

  const token = await recorderToken({ app, uid })();

  assert.ok(token.length > 0);
  assert.deepEqual((await getAdminAuth(app).getUser(uid)).customClaims, { team: "ops", recorder: true });
});

const WEB_SKIP = SKIP || (FIRESTORE_HOST ? false : "needs FIRESTORE_EMULATOR_HOST (run under ./scripts/with-emulators)");

test("watchUsage shows the signed-in user's usage as it changes", { skip: WEB_SKIP }, async (t) => {
  const user = await makeUser();
  const app = initializeApp({ apiKey: "fake-api-key", projectId: PROJECT }, `web-${unique()}`);
  const auth = getAuth(app);
  connectAuthEmulator(auth, `http://${AUTH_HOST}`, { disableWarnings: true });
  const db = getFirestore(app);
  const [host, port] = FIRESTORE_HOST.split(":");
  connectFirestoreEmulator(db, host ?? "127.0.0.1", Number(port));
  await signInWithEmailAndPassword(auth, user.email, user.password);
  const seen: LiveUsage[] = [];
  const errors: unknown[] = [];
  const stop = watchUsage(db, user.uid, (usage) => seen.push(usage), { onError: (error) => errors.push(error) });
  t.after(async () => {
    stop();
    await terminate(db);
    await deleteApp(app);
  });
  const tally = new Tally({ functionsUrl: FUNCTIONS_URL, idToken: () => user.token, flushIntervalMs: null, closeAtExit: false });

  tally.record({ feature: "chat", provider: "openai", cost: "0.25", isBillableRun: true });
  await tally.close();
  const deadline = Date.now() + 30_000;
  while (!seen.some((usage) => usage.costNanos === 250_000_000) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));

  assert.deepEqual(errors, []);
  const last = seen.at(-1);
  assert.equal(last?.costNanos, 250_000_000);
  assert.deepEqual([last?.apiCalls, last?.billableRuns, last?.limits.freeRunsRemaining], [1, 1, 99]);
  assert.equal(last?.limits.monthlyCostLimit, 5);
});

// Firebase clients: the project's public web config from Hosting, and this run's emulators locally.
import { initializeApp } from "firebase/app";
import { connectAuthEmulator, getAuth } from "firebase/auth";
import { connectFirestoreEmulator, getFirestore } from "firebase/firestore";
import { connectFunctionsEmulator, getFunctions, httpsCallable } from "firebase/functions";

const TRANSIENT = new Set(["functions/internal", "functions/unavailable", "functions/deadline-exceeded"]);

export const LOCAL = ["127.0.0.1", "localhost"].includes(location.hostname);

// Firebase Hosting serves the project's public web config here (never a secret).
async function firebaseConfig() {
  const response = await fetch("/__/firebase/init.json");
  const config = response.ok ? await response.json() : {};
  if (LOCAL && !config.apiKey) config.apiKey = "demo-api-key"; // the emulators accept any key
  if (LOCAL && !config.projectId) config.projectId = "demo-tally";
  return config;
}

function hostPort(value) {
  const [host, port] = value.split(":");
  return [host, Number(port)];
}

/** Where this run's emulators listen (scripts/with-emulators writes it: their ports can be free ones). */
async function emulatorHosts() {
  const response = await fetch("/emulators.json", { cache: "no-store" });
  return {
    auth: "127.0.0.1:9099",
    functions: "127.0.0.1:5001",
    firestore: "127.0.0.1:8080",
    ...(response.ok ? await response.json() : {}),
  };
}

/** Start Firebase; return the Auth, Firestore and callable clients. */
export async function connect() {
  // Everything to wait for comes first: Auth starts restoring a signed-in user (a request to
  // accounts:lookup) as soon as it exists, and once it has made a request it refuses
  // connectAuthEmulator (auth/emulator-config-failed). Waiting between getAuth and
  // connectAuthEmulator made a reload of a signed-in page fail whenever that request came first.
  const config = await firebaseConfig();
  const hosts = LOCAL ? await emulatorHosts() : null;
  const app = initializeApp(config);
  const auth = getAuth(app);
  if (hosts) connectAuthEmulator(auth, `http://${hosts.auth}`, { disableWarnings: true });
  const functions = getFunctions(app, "us-central1");
  const db = getFirestore(app);
  if (hosts) {
    connectFunctionsEmulator(functions, ...hostPort(hosts.functions));
    connectFirestoreEmulator(db, ...hostPort(hosts.firestore));
  }
  // A call that may safely be made twice is retried once after a transient failure (a dropped
  // connection reads as "internal"); set_price is not (it logs every price set).
  const callable = (name, { idempotent = true } = {}) => {
    const call = httpsCallable(functions, name, { timeout: 120_000 });
    return async (data) => {
      try {
        return (await call(data)).data;
      } catch (error) {
        if (!idempotent || !TRANSIENT.has(error?.code)) throw error;
        await new Promise((resolve) => setTimeout(resolve, 500));
        return (await call(data)).data;
      }
    };
  };
  return {
    auth,
    db,
    api: {
      usageAnalytics: callable("usage_analytics"),
      myUsage: callable("my_usage"),
      setLimits: callable("set_limits"),
      setPrice: callable("set_price", { idempotent: false }),
      listPrices: callable("list_prices"),
      listPlans: callable("list_plans"),
      setPlan: callable("set_plan"), // replaces the plan: the same call twice stores the same
      setTeam: callable("set_team"),
      exportUsage: callable("export_usage"),
    },
  };
}

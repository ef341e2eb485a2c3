// Tally admin dashboard: signs in with Firebase Auth and shows what usage_analytics returns.
import { initializeApp } from "firebase/app";
import {
  connectAuthEmulator,
  getAuth,
  onAuthStateChanged,
  signInWithEmailAndPassword,
  signOut,
} from "firebase/auth";
import { connectFunctionsEmulator, getFunctions, httpsCallable } from "firebase/functions";

const LOCAL = ["127.0.0.1", "localhost"].includes(location.hostname);
const $ = (id) => document.getElementById(id);
const byTest = (name) => document.querySelector(`[data-testid="${name}"]`);

// Firebase Hosting serves the project's public web config here (never a secret).
async function firebaseConfig() {
  const response = await fetch("/__/firebase/init.json");
  const config = response.ok ? await response.json() : {};
  if (LOCAL && !config.apiKey) config.apiKey = "demo-api-key"; // the emulators accept any key
  if (LOCAL && !config.projectId) config.projectId = "demo-tally";
  return config;
}

export function usd(value) {
  const digits = value !== 0 && Math.abs(value) < 1 ? 4 : 2;
  return "$" + value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const count = (value) => value.toLocaleString("en-US");

function show(state) {
  for (const id of ["sign-in", "loading", "denied", "failed", "empty", "dashboard"]) {
    $(id).hidden = id !== state && !(state === "empty" && id === "dashboard");
  }
}

function setNumber(testId, value, text) {
  const element = byTest(testId);
  element.dataset.value = String(value);
  element.textContent = text;
}

function fillTable(testId, columns, rows) {
  const table = byTest(testId);
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const column of columns) {
    const th = document.createElement("th");
    th.textContent = column.label;
    if (column.num) th.className = "num";
    head.appendChild(th);
  }
  const body = table.createTBody();
  if (rows.length === 0) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = columns.length;
    cell.textContent = "none";
    cell.parentElement.className = "empty-row";
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const column of columns) {
      const td = tr.insertCell();
      const raw = row[column.key];
      td.textContent = column.format ? column.format(raw) : String(raw);
      td.dataset.value = String(raw);
      td.dataset.key = column.key;
      if (column.num) td.className = "num";
    }
  }
}

function barChart(svg, points, labelEvery) {
  const width = Math.max(svg.clientWidth, 320);
  const height = 180;
  const pad = 18;
  const top = Math.max(...points.map((p) => p.value), 0) || 1;
  const slot = (width - pad) / Math.max(points.length, 1);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  points.forEach((point, index) => {
    const barHeight = ((height - 2 * pad) * point.value) / top;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(pad + index * slot + 1));
    rect.setAttribute("y", String(height - pad - barHeight));
    rect.setAttribute("width", String(Math.max(slot - 2, 1)));
    rect.setAttribute("height", String(barHeight));
    rect.dataset.value = String(point.value);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${point.label}: ${usd(point.value)}`;
    rect.appendChild(title);
    svg.appendChild(rect);
    if (index % labelEvery === 0) {
      const text = document.createElementNS(ns, "text");
      text.setAttribute("x", String(pad + index * slot));
      text.setAttribute("y", String(height - 4));
      text.textContent = point.short;
      svg.appendChild(text);
    }
  });
}

function render(result) {
  const totals = result.totals;
  show(totals.apiCalls === 0 ? "empty" : "dashboard"); // visible first: the charts measure their width
  setNumber("total-cost", totals.cost, usd(totals.cost));
  setNumber("ai-cost", totals.byType.AI.cost, usd(totals.byType.AI.cost));
  setNumber("api-cost", totals.byType.API.cost, usd(totals.byType.API.cost));
  setNumber("api-calls", totals.apiCalls, count(totals.apiCalls));
  setNumber("billable-runs", totals.billableRuns, count(totals.billableRuns));
  setNumber("active-users", totals.activeUsers, count(totals.activeUsers));
  const usage = [
    { key: "name", label: "Name" },
    { key: "cost", label: "Cost", num: true, format: usd },
    { key: "apiCalls", label: "Calls", num: true, format: count },
    { key: "billableRuns", label: "Billable", num: true, format: count },
  ];
  fillTable("features", usage, result.features);
  fillTable("providers", usage, result.providers);
  fillTable("top-users", [{ key: "userId", label: "User" }, ...usage.slice(1)], result.topUsers);
  fillTable(
    "free-tier",
    [
      { key: "userId", label: "User" },
      { key: "costUsed", label: "Cost used", num: true, format: usd },
      { key: "monthlyCostLimit", label: "Cost limit", num: true, format: usd },
      { key: "runsUsed", label: "Runs used", num: true, format: count },
      { key: "monthlyFreeRuns", label: "Free runs", num: true, format: count },
      { key: "percent", label: "Used", num: true, format: (p) => `${p.toFixed(0)}%` },
    ],
    result.freeTier,
  );
  const sessions = result.sessions;
  const stats = [
    ["Active", count(sessions.active), sessions.active],
    ["Completed", count(sessions.completed), sessions.completed],
    ["Average cost", usd(sessions.avgCost), sessions.avgCost],
    ["Average steps", sessions.avgSteps.toFixed(1), sessions.avgSteps],
    ["Average duration", `${sessions.avgDurationSeconds.toFixed(0)} s`, sessions.avgDurationSeconds],
  ];
  byTest("sessions").replaceChildren(
    ...stats.flatMap(([label, text, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = text;
      dd.dataset.value = String(value);
      return [dt, dd];
    }),
  );
  barChart(
    $("daily-chart"),
    result.daily.map((d) => ({ label: d.date, short: d.date.slice(8), value: d.cost })),
    5,
  );
  barChart(
    $("history-chart"),
    result.history.map((h) => ({ label: h.month, short: h.month, value: h.cost })),
    1,
  );
  byTest("meta").textContent =
    `${result.month} · generated ${result.meta.generatedAt} · ${result.meta.documentsRead} documents read`;
}

async function main() {
  const app = initializeApp(await firebaseConfig());
  const auth = getAuth(app);
  const functions = getFunctions(app, "us-central1");
  if (LOCAL) {
    // scripts/with-emulators writes where this run's emulators listen (their ports can be free ones).
    const response = await fetch("/emulators.json");
    const hosts = response.ok ? await response.json() : { auth: "127.0.0.1:9099", functions: "127.0.0.1:5001" };
    const [host, port] = hosts.functions.split(":");
    connectAuthEmulator(auth, `http://${hosts.auth}`, { disableWarnings: true });
    connectFunctionsEmulator(functions, host, Number(port));
  }
  const analytics = httpsCallable(functions, "usage_analytics");
  const monthInput = $("month");
  monthInput.value = new Date().toISOString().slice(0, 7);

  async function load() {
    show("loading");
    try {
      const { data } = await analytics({ month: monthInput.value, top: 10 });
      render(data);
    } catch (error) {
      if (error.code === "functions/permission-denied") {
        show("denied");
      } else {
        $("failed").textContent = `Could not load usage: ${error.message}`;
        show("failed");
      }
    }
  }

  monthInput.addEventListener("change", load);
  $("sign-out").addEventListener("click", () => signOut(auth));
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      await signInWithEmailAndPassword(auth, $("email").value, $("password").value);
    } catch (error) {
      $("sign-in-error").textContent = `Sign-in failed: ${error.code ?? error.message}`;
    }
  });
  onAuthStateChanged(auth, (user) => {
    $("who").textContent = user ? user.email : "";
    $("sign-out").hidden = !user;
    $("month-label").hidden = !user;
    if (user) load();
    else show("sign-in");
  });
}

main().catch((error) => {
  $("failed").textContent = `The dashboard could not start: ${error.message}`;
  show("failed");
});

// What the pages read from Firestore directly (under the security rules): a user's sessions
// (paged), alerts, and live documents; and the CSV export built from `export_usage` pages.
import {
  collection,
  doc,
  documentId,
  getDoc,
  getDocs,
  limit,
  onSnapshot,
  orderBy,
  query,
  startAfter,
  where,
} from "firebase/firestore";
import { nanosToUsd, toDate } from "./format.js";

export const USER_MONTHS = "TallyMonthlyUsage";
export const ALERTS = "TallyAlerts";
export const TEAMS = "TallyTeams";
export const USER_LIMITS = "TallyUserLimits";

/** A user's sessions, newest first, one page at a time (cursor: the last document of a page). */
export class SessionPages {
  constructor(db, userId, size = 10) {
    this.db = db;
    this.userId = userId;
    this.size = size;
    this.starts = [null]; // starts[i]: the document page i starts after
    this.index = 0;
    this.hasNext = false;
  }

  async load(index = this.index) {
    const parts = [orderBy("createdAt", "desc")];
    const after = this.starts[index];
    if (after) parts.push(startAfter(after));
    parts.push(limit(this.size + 1)); // one more than a page: is there a next one?
    const snap = await getDocs(query(collection(this.db, "SessionUsage", this.userId, "sessions"), ...parts));
    const docs = snap.docs.slice(0, this.size);
    this.index = index;
    this.hasNext = snap.docs.length > this.size;
    if (docs.length) this.starts[index + 1] = docs[docs.length - 1];
    return docs.map((d) => sessionRow(d.id, d.data()));
  }
}

/** One session as the tables show it (the finalizer's summary when there is one, else running stats). */
export function sessionRow(id, data) {
  const summary = data.summary || {};
  const stats = data.stats || {};
  const costNanos = summary.totalCostNanos ?? stats.costNanos ?? 0;
  return {
    id,
    feature: data.feature ?? "—",
    status: data.status ?? "active",
    createdAt: toDate(data.createdAt),
    lastUpdatedAt: toDate(data.lastUpdatedAt),
    steps: summary.stepCount ?? stats.stepCount ?? 0,
    cost: nanosToUsd(costNanos),
    costNanos,
    durationSeconds: summary.durationSeconds ?? null,
    completedBy: data.completedBy ?? null,
  };
}

/** A user's alerts of a month (a user may list only their own: the query says userId == theirs). */
function alertsQuery(db, userId, month) {
  return query(collection(db, ALERTS), where("userId", "==", userId), where("month", "==", month));
}

export function alertRow(data) {
  return {
    alertId: data.alertId,
    userId: data.userId ?? null,
    kind: data.kind,
    scope: data.scope ?? null, // (v3) absent from alerts written before
    window: data.window ?? null,
    teamId: data.teamId ?? null,
    threshold: data.threshold,
    used: data.used,
    limit: data.limit,
    createdAt: toDate(data.createdAt),
    late: Boolean(data.late),
    delivered: data.deliveredAt != null,
  };
}

const newestFirst = (a, b) => (b.createdAt?.getTime() ?? 0) - (a.createdAt?.getTime() ?? 0);

export async function userAlerts(db, userId, month) {
  const snap = await getDocs(alertsQuery(db, userId, month));
  return snap.docs.map((d) => alertRow(d.data())).sort(newestFirst);
}

export function watchUserAlerts(db, userId, month, onRows, onError) {
  return onSnapshot(
    alertsQuery(db, userId, month),
    (snap) => onRows(snap.docs.map((d) => alertRow(d.data())).sort(newestFirst)),
    onError,
  );
}

// Tally's own count of the user (`TallyUsers/{uid}`): `users/{uid}.usage` mirrors it, but the
// user may fill that document to Firestore's limit, and then the mirror lags until it fits.
export function watchUser(db, userId, onData, onError) {
  return onSnapshot(doc(db, "TallyUsers", userId), (snap) => onData(snap.exists() ? snap.data() : {}), onError);
}

export function watchUserMonth(db, userId, month, onData, onError) {
  return onSnapshot(
    doc(db, USER_MONTHS, `${userId}_${month}`),
    (snap) => onData(snap.exists() ? snap.data() : {}),
    onError,
  );
}

const counts = (fields) => ({
  costNanos: Number(fields?.costNanos ?? 0),
  apiCalls: Number(fields?.apiCalls ?? 0),
  billableRuns: Number(fields?.billableRuns ?? 0),
});
const usdCounts = (c) => ({ cost: nanosToUsd(c.costNanos), apiCalls: c.apiCalls, billableRuns: c.billableRuns });

function ranked(named) {
  return Object.entries(named || {})
    .map(([name, fields]) => [name, counts(fields)])
    .sort((a, b) => b[1].costNanos - a[1].costNanos || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([name, c]) => ({ name, ...usdCounts(c) }));
}

/**
 * A user's month as `my_usage` answers it, computed from the documents the user may read
 * (`TallyUsers/{uid}` and `TallyMonthlyUsage/{uid}_{month}`): what the live page shows between calls.
 * `defaults`: the limits of a user who has none set ({costNanos, runs}, learnt from my_usage).
 */
export function monthView({ userId, month, user, userMonth, current, defaults }) {
  const usage = user?.usage || {};
  const fromMonthDoc = userMonth && Object.keys(userMonth).length > 0;
  const monthFields = fromMonthDoc ? userMonth : (usage.months || {})[month] || {};
  const used = counts(monthFields);
  const stored = usage.limits || {};
  const costLimit = Number(stored.monthlyCostLimitNanos ?? defaults.costNanos);
  const freeRuns = Number(stored.monthlyFreeRuns ?? defaults.runs);
  const held = current ? counts({ costNanos: usage.held?.costNanos, billableRuns: usage.held?.runs }) : counts({});
  const heldCost = Math.max(0, held.costNanos);
  const heldRuns = Math.max(0, held.billableRuns);
  const atLeastWarning = (value, max) => (max > 0 ? value * 5 >= max * 4 : value > 0);
  const byType = monthFields.byType || {};
  const sessions = usage.sessions || {};
  return {
    userId,
    month,
    totalCost: nanosToUsd(used.costNanos),
    apiCalls: used.apiCalls,
    billableRuns: used.billableRuns,
    unpricedSteps: Number(monthFields.unpricedSteps ?? 0),
    byType: { AI: usdCounts(counts(byType.AI)), API: usdCounts(counts(byType.API)) },
    features: ranked(userMonth?.features),
    providers: ranked(userMonth?.providers),
    limits: {
      monthlyCostLimit: nanosToUsd(costLimit),
      costRemaining: nanosToUsd(Math.max(0, costLimit - used.costNanos - heldCost)),
      monthlyFreeRuns: freeRuns,
      freeRunsRemaining: Math.max(0, freeRuns - used.billableRuns - heldRuns),
      exceeded: used.costNanos > costLimit || used.billableRuns > freeRuns,
      warning: atLeastWarning(used.costNanos, costLimit) || atLeastWarning(used.billableRuns, freeRuns),
      held: nanosToUsd(heldCost),
      heldRuns,
    },
    lifetime: usdCounts(counts(usage.lifetime)),
    sessions: { active: Math.max(0, Number(sessions.active ?? 0)), completed: Number(sessions.completed ?? 0) },
    // Day by day (only the month document has the days; my_usage does not answer them).
    daily: fromMonthDoc || used.apiCalls === 0 ? dailyOf(month, userMonth?.days) : null,
  };
}

/** A month's days (`days` of a month document: {"YYYY-MM-DD": counters}) as usage_analytics' `daily`. */
export function dailyOf(month, days) {
  const [year, number] = month.split("-").map(Number);
  const length = new Date(Date.UTC(year, number, 0)).getUTCDate();
  return Array.from({ length }, (_, i) => {
    const date = `${month}-${String(i + 1).padStart(2, "0")}`;
    return { date, ...usdCounts(counts(days?.[date])) };
  });
}

/** A user's month document (an admin's drill-down: its days), {} when there is none. */
export async function readUserMonth(db, userId, month) {
  const snap = await getDoc(doc(db, USER_MONTHS, `${userId}_${month}`));
  return snap.exists() ? snap.data() : {};
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/**
 * A text cell a spreadsheet would run as a formula (one starting with `=`, `+`, `-`, `@`, a
 * tab or a carriage return: OWASP's "CSV injection") gets a leading `'`, so it shows as text.
 * Applied to what users choose (user ids, emails), never to Tally's own figures (amounts with
 * 9 decimals and counts, never negative), which stay numbers. The command line's export
 * (`tally.export.csv_cell`) applies the same rule.
 */
const defused = (text) => (/^[=+\-@\t\r]/.test(text) ? `'${text}` : text);

export function csvLine(values) {
  return values.map(csvField).join(",") + "\r\n";
}

/**
 * Every user's totals of a month through `export_usage` (admin), page by page: every user
 * with usage in the month, with their email where Firebase Auth knows it, amounts exact.
 */
export async function exportMonthCsv(exportUsage, month, { pageSize = 500, onProgress } = {}) {
  const lines = [];
  let pageToken = null;
  let users = 0;
  do {
    const page = await exportUsage({ month, pageToken, limit: pageSize });
    if (!lines.length) lines.push(csvLine(page.columns));
    for (const [userId, email, ...figures] of page.rows) {
      lines.push(csvLine([defused(userId), defused(email), ...figures]));
      users += 1;
    }
    onProgress?.(users);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return { text: lines.join(""), users };
}

// ---- plans and teams (admins read every document) ----

/** A team document as the page shows it: its limits in USD (as set_team answers them). */
export function teamRow(id, data) {
  const stored = data?.limits || {};
  const limits = {};
  const put = (key, raw, money) => {
    if (raw !== undefined && raw !== null) limits[key] = money ? nanosToUsd(raw) : Number(raw);
  };
  put("monthlyCostLimit", stored.monthlyCostLimitNanos, true);
  put("monthlyFreeRuns", stored.monthlyFreeRuns, false);
  put("dailyCostLimit", stored.dailyCostLimitNanos, true);
  put("dailyFreeRuns", stored.dailyFreeRuns, false);
  return { teamId: data?.teamId ?? id, limits, slices: Number(data?.slices ?? 1) };
}

/** The first `max` teams (`TallyTeams`), by id. */
export async function listTeams(db, max = 100) {
  const snap = await getDocs(query(collection(db, TEAMS), orderBy(documentId()), limit(max)));
  return snap.docs.map((d) => teamRow(d.id, d.data()));
}

/** A team's members: the users whose limit settings (`TallyUserLimits/{uid}`) name it, by uid. */
export async function teamMembers(db, teamId, max = 50) {
  const snap = await getDocs(query(collection(db, USER_LIMITS), where("teamId", "==", teamId), limit(max + 1)));
  const ids = snap.docs.map((d) => d.id);
  return { ids: ids.slice(0, max), more: ids.length > max };
}

/** The plan and team assigned to a user (Tally's copy of their limit settings), null when none. */
export async function userAssignment(db, userId) {
  const snap = await getDoc(doc(db, USER_LIMITS, userId));
  const data = snap.exists() ? snap.data() : {};
  return { plan: data.plan ?? null, teamId: data.teamId ?? null };
}

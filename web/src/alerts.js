// Alerts as the tables show them: limit alerts (kind cost or runs: 80% or 100% of a limit), and
// (v3, issue 26) forecasts (kind forecast: `used` is the projected month-end, `limit` the
// monthly limit or budget) and anomalies (kind anomaly: `used` is the day's cost, `limit` its
// usual cost). v3 alert documents also name their `scope` (user.month.cost, team.day.runs,
// feature:chat.day.cost, platform.month.cost...), `window` (YYYY-MM or YYYY-MM-DD) and `teamId`;
// alerts without them (written before v3) are shown from their kind and user.
import { count, dateTime, moneyDigits, usd } from "./format.js";

const KINDS = { cost: "Cost", runs: "Free runs", forecast: "Forecast", anomaly: "Anomaly" };

/** The scope an alert is about: its own, else what a v2 alert's kind and user mean. */
export function alertScope(row) {
  if (row.scope) return row.scope;
  if (row.kind === "cost" || row.kind === "runs") return row.userId ? `user.month.${row.kind}` : "platform.month.cost";
  return null;
}

/** Whether an alert's amounts are money (every kind but runs; a runs scope counts runs). */
export function alertIsMoney(row) {
  const scope = alertScope(row);
  return row.kind !== "runs" && !(scope && scope.endsWith(".runs"));
}

/** A scope's parts: {owner: user|team|platform|feature, feature, window: month|day, measure: cost|runs}. */
function parts(scope) {
  const match = /^(user|team|platform|feature:(.+))\.(month|day)\.(cost|runs)$/.exec(String(scope ?? ""));
  if (!match) return null;
  const [, owner, feature, window, measure] = match;
  return { owner: feature !== undefined ? "feature" : owner, feature, window, measure };
}

/** Whose figure it is: "the user's", "team acme's", "the platform's", "feature chat's". */
function whose(p, row) {
  if (p.owner === "feature") return `feature ${p.feature}'s`;
  if (p.owner === "team") return row.teamId ? `team ${row.teamId}'s` : "the team's";
  if (p.owner === "platform") return "the platform's";
  return "the user's";
}

/** "in 2026-12", "on 2026-12-04", or "" when the alert has no window. */
function when(row) {
  if (!row.window) return "";
  return /^\d{4}-\d{2}-\d{2}$/.test(row.window) ? ` on ${row.window}` : ` in ${row.window}`;
}

/** An alert in words (the tables' Details column). */
export function alertWords(row) {
  const money = alertIsMoney(row);
  const digits = moneyDigits([row.used, row.limit]);
  const amount = (value) => (money ? usd(value, digits) : count(value));
  const scope = alertScope(row);
  const p = parts(scope);
  if (row.kind === "forecast") {
    const limitWord = p?.owner === "platform" ? "budget" : "limit";
    const team = p?.owner === "team" && row.teamId ? ` (team ${row.teamId})` : "";
    return `Forecast: ${scope ?? "the month"}${team} — projected ${amount(row.used)} by month end vs ${limitWord} ${amount(row.limit)}`;
  }
  if (row.kind === "anomaly") {
    const day = row.window && /^\d{4}-\d{2}-\d{2}$/.test(row.window) ? ` on ${row.window}` : "";
    let where = "";
    if (p?.owner === "feature") where = ` in feature ${p.feature}`;
    else if (p) where = ` in ${whose(p, row)} cost`;
    return `Anomaly${day}${where}: ${amount(row.used)} vs usual ${amount(row.limit)}`;
  }
  if (p) {
    const limit = p.owner === "platform" ? "budget" : `${p.window === "day" ? "daily" : "monthly"} ${p.measure === "runs" ? "runs" : "cost"} limit`;
    const of = p.owner === "platform" ? "the platform's" : whose(p, row);
    return `${row.threshold}% of ${of} ${limit} reached${when(row)}: ${amount(row.used)} of ${amount(row.limit)}`;
  }
  return `${KINDS[row.kind] ?? row.kind}: ${amount(row.used)} of ${amount(row.limit)}`;
}

const amountColumn = (value, row) => (value === null || value === undefined ? "—" : alertIsMoney(row) ? usd(value) : count(value));

/** The columns of an alerts table (the admin's adds who raised it and the webhook's state). */
export const ALERT_COLUMNS = [
  { key: "createdAt", label: "When", value: (r) => r.createdAt?.toISOString() ?? "", format: (_, r) => dateTime(r.createdAt) },
  { key: "kind", label: "Alert", format: (kind) => KINDS[kind] ?? String(kind) },
  { key: "scope", label: "Scope", value: (r) => r.scope ?? "", format: (_, r) => (alertScope(r) ?? "—") + (r.window ? ` · ${r.window}` : "") },
  {
    key: "threshold",
    label: "Reached",
    num: true,
    format: (v, r) => (v === null || v === undefined || r.kind === "anomaly" ? "—" : `${v}%`),
  },
  { key: "used", label: "Used", num: true, format: amountColumn },
  { key: "limit", label: "Of", num: true, format: amountColumn },
  { key: "details", label: "Details", value: (r) => alertWords(r) },
];

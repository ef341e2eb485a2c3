// One way to write each kind of number, used by every table, card, chart axis and tooltip.

const NANOS_PER_USD = 1_000_000_000;

/** USD rounded to 9 decimals, as the callables answer it (`nanos_to_usd`). */
export function nanosToUsd(nanos) {
  return Number((Number(nanos || 0) / NANOS_PER_USD).toFixed(9));
}

/** The exact decimal text of an integer amount of nano-USD ("0.00283", "12", "-0.5"). */
export function nanosToDecimal(nanos) {
  let value = BigInt(Math.trunc(Number(nanos || 0)));
  const sign = value < 0n ? "-" : "";
  if (value < 0n) value = -value;
  const whole = value / 1_000_000_000n;
  const fraction = (value % 1_000_000_000n).toString().padStart(9, "0").replace(/0+$/, "");
  return sign + whole.toString() + (fraction ? `.${fraction}` : "");
}

/**
 * Money: cents from $1 up ($1,234.50), 4 decimals below (sub-cent API calls stay visible:
 * $0.0028), thousands separated. A table column uses one number of decimals for all its rows
 * (`moneyDigits`). The exact amount is in each element's title (usdExact).
 */
export function usd(value, digits) {
  const amount = Number(value) || 0;
  const places = digits ?? moneyDigits([amount]);
  const text = Math.abs(amount).toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
  return (amount < 0 ? "−$" : "$") + text;
}

/** The decimals for a set of amounts shown together: 4 if any is under $1 (and not 0), else 2. */
export function moneyDigits(values) {
  return values.some((v) => typeof v === "number" && v !== 0 && Math.abs(v) < 1) ? 4 : 2;
}

/** Money on a chart axis: short ($0, $0.05, $1.2k). */
export function usdAxis(value) {
  const amount = Number(value) || 0;
  if (Math.abs(amount) >= 1000) return `$${(amount / 1000).toLocaleString("en-US", { maximumFractionDigits: 1 })}k`;
  return "$" + amount.toLocaleString("en-US", { maximumFractionDigits: Math.abs(amount) < 1 ? 4 : 2 });
}

/** The exact amount, for titles (hover): every one of the 9 decimals that are not zero. */
export function usdExact(value) {
  return `$${Number(value || 0).toFixed(9).replace(/0+$/, "").replace(/\.$/, "")}`;
}

/** "1 step", "2 steps". */
export const plural = (n, one, many = `${one}s`) => `${count(n)} ${Number(n) === 1 ? one : many}`;

export const count = (value) => (Number(value) || 0).toLocaleString("en-US");

export function percent(value) {
  return `${(Number(value) || 0).toLocaleString("en-US", { maximumFractionDigits: 1 })}%`;
}

/** Seconds as "850 ms", "12.4 s", "3 min 20 s", "2 h 05 min", "3 d 04 h". */
export function duration(seconds) {
  const s = Number(seconds) || 0;
  if (s === 0) return "0 s";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toLocaleString("en-US", { maximumFractionDigits: 1 })} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")} h`;
}

/** A Date, an ISO string or a Firestore Timestamp as "2026-11-14 10:04 UTC" (months are UTC). */
export function toDate(value) {
  if (value == null) return null;
  if (value instanceof Date) return value;
  if (typeof value.toDate === "function") return value.toDate();
  const parsed = new Date(value);
  return Number.isNaN(parsed.getTime()) ? null : parsed;
}

export function dateTime(value) {
  const date = toDate(value);
  if (!date) return "—";
  return `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function clock(value) {
  const date = toDate(value);
  return date ? `${date.toISOString().slice(11, 19)} UTC` : "—";
}

/** How long ago, coarse: "just now", "42 s ago", "3 min ago". */
export function ago(value, now = Date.now()) {
  const date = toDate(value);
  if (!date) return "";
  const seconds = Math.max(0, Math.round((now - date.getTime()) / 1000));
  if (seconds < 5) return "just now";
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

export const currentMonth = () => new Date().toISOString().slice(0, 7);

export function monthName(month) {
  const [year, m] = month.split("-").map(Number);
  return new Date(Date.UTC(year, m - 1, 1)).toLocaleString("en-US", { month: "long", year: "numeric", timeZone: "UTC" });
}

/** "Nov 26": a month on a chart axis. */
export function monthShort(month) {
  const [year, m] = month.split("-").map(Number);
  const name = new Date(Date.UTC(year, m - 1, 1)).toLocaleString("en-US", { month: "short", timeZone: "UTC" });
  return `${name} ${String(year).slice(2)}`;
}

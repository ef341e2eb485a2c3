// Where a month is heading: the `forecast` of my_usage and usage_analytics ({monthEnd, low, high,
// exceedsOn, basis}: USD, an 80% interval low..high, the UTC day the monthly cost limit is
// projected to be crossed) drawn on a month's daily figures, and put in words.
import { moneyDigits, usd } from "./format.js";

/** 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 22nd, 23rd, 24th... */
export function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th";
  return `${n}${suffix}`;
}

/** The day of a month (0-based) that is today in UTC, or null when `month` is not the current month. */
export function todayIndex(month, now = new Date()) {
  return now.toISOString().slice(0, 7) === month ? now.getUTCDate() - 1 : null;
}

/** Whether a limit is set (my_usage always answers one; null or undefined: none). */
const hasLimit = (limit) => typeof limit === "number" && Number.isFinite(limit);

/**
 * The projection of a month, day by day, for its chart and table. `costs`: each day's actual cost
 * (USD) from day 1; `today`: today's index (null for a past or future month: no projection).
 *
 * Our choice (issue 26): the cumulative cost is drawn to month end. Through today it is the
 * actual cumulative cost ("spent"); after today it goes in a straight line from what is spent
 * to the forecast's month-end on the last day, its 80% band likewise from what is spent to
 * low and high. Each day after today is projected the same share of what is left:
 * (monthEnd - spent) / the days after today (the rest of today, which the forecast counts, is
 * spread over them). The forecast's own model (weekdays, trend) is not redrawn day by day: it
 * answers only its month-end and interval. Returns null when there is nothing to project.
 */
export function projectMonth({ costs, today, forecast }) {
  if (today === null || today === undefined || !forecast || today >= costs.length) return null;
  const days = [];
  let spent = 0;
  for (let i = 0; i <= today; i += 1) {
    spent += Number(costs[i]) || 0;
    days.push({ cumulative: round(spent), projected: null, low: null, high: null });
  }
  const left = costs.length - 1 - today;
  const end = Math.max(spent, Number(forecast.monthEnd) || 0);
  const low = Math.min(end, Math.max(spent, Number(forecast.low) || 0));
  const high = Math.max(end, Number(forecast.high) || 0);
  for (let k = 1; k <= left; k += 1) {
    const share = k / left;
    days.push({
      cumulative: round(spent + (end - spent) * share),
      projected: round((end - spent) / left),
      low: round(spent + (low - spent) * share),
      high: round(spent + (high - spent) * share),
    });
  }
  return { today, spent: round(spent), monthEnd: end, low, high, days };
}

const round = (value) => Number(value.toFixed(9));

/**
 * The forecast in words, its figures in data-key/data-value spans (the tests read them):
 * "$4.20 by month end (80% interval $3.10–$5.60); limit $5.00, reached around the 24th".
 * `limitWord`: "limit" or "budget"; `limit` undefined: none known.
 */
export function forecastParts(forecast, { limit, month, now = new Date(), limitWord = "limit", interval = true } = {}) {
  const shown = [forecast.monthEnd, ...(interval ? [forecast.low, forecast.high] : []), ...(hasLimit(limit) ? [limit] : [])];
  const digits = moneyDigits(shown);
  const parts = [[`${usd(forecast.monthEnd, digits)}`, "monthEnd", forecast.monthEnd], " by month end"];
  if (interval) {
    parts.push(" (80% interval ", [usd(forecast.low, digits), "low", forecast.low], "–", [usd(forecast.high, digits), "high", forecast.high], ")");
  }
  const crossing = forecast.exceedsOn ? crossingWords(forecast.exceedsOn, month, now) : null;
  if (hasLimit(limit) || crossing) {
    const reached = crossing ? [", ", crossing.verb, " the ", [crossing.day, "exceedsOn", forecast.exceedsOn]] : [];
    parts.push(interval ? "; " : " (");
    if (hasLimit(limit)) parts.push(`${limitWord} `, [usd(limit, digits), "limit", limit], ...reached);
    else parts.push(`the ${limitWord} ${crossing.past ? "was" : "is"} `, ...reached.slice(1)); // its amount is not known
    if (!interval) parts.push(")");
  }
  return parts;
}

/** "reached around" a day to come, "reached on" today or a day past; the day as "24th". */
function crossingWords(exceedsOn, month, now) {
  const day = Number(String(exceedsOn).slice(8, 10));
  const today = todayIndex(month ?? String(exceedsOn).slice(0, 7), now);
  const past = today !== null && day - 1 <= today;
  return { verb: past ? "reached on" : "reached around", day: ordinal(day), past };
}

/** The text of `forecastParts` (a caption, an aria-label). */
export function forecastText(parts) {
  return parts.map((part) => (Array.isArray(part) ? part[0] : part)).join("");
}

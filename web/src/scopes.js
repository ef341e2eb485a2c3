// Limited scopes ({scope, used, held, limit, remaining}, as my_usage answers them in
// `limits.scopes` and `team.scopes`) as rows with bars, and a team's usage; shared by the user
// view (user page, drill-down) and the admin page's teams.
import { el } from "./dom.js";
import { count, moneyDigits, percent, usd, usdExact } from "./format.js";

const WINDOWS = { month: "this month", day: "today (UTC)" };

/** Whether a scope counts money (`….cost`) rather than runs. */
export const isCostScope = (scope) => String(scope).endsWith(".cost");

/**
 * A scope's name in words: "user.day.runs" → "Billable runs today (UTC)",
 * "feature:image_generation.month.cost" → "image_generation: cost this month",
 * "team.month.cost" → "Team cost this month". Unknown shapes are shown as they are.
 */
export function scopeLabel(scope) {
  const match = /^(user|team|feature:(.+))\.(month|day)\.(cost|runs)$/.exec(String(scope));
  if (!match) return String(scope);
  const [, owner, feature, window, measure] = match;
  const when = WINDOWS[window];
  if (feature !== undefined) return `${feature}: ${measure === "cost" ? "cost" : "runs (every step)"} ${when}`;
  const what = measure === "cost" ? "cost" : "billable runs";
  return owner === "team" ? `Team ${what} ${when}` : `${what[0].toUpperCase()}${what.slice(1)} ${when}`;
}

/**
 * A bar's two parts: used and held as shares of the limit (capped at 100 %); returns the share
 * used (percent, uncapped) and sets the bar's level (ok, warning at 80 %, exceeded).
 */
export function setBar(bar, { used, held, limit }) {
  const share = (value) => (limit > 0 ? Math.min(100, (100 * value) / limit) : value > 0 ? 100 : 0);
  const usedShare = share(used);
  const heldShare = Math.min(100 - usedShare, share(held));
  bar.querySelector(".used").style.width = `${usedShare}%`;
  bar.querySelector(".held").style.width = `${heldShare}%`;
  bar.dataset.level = used > limit ? "exceeded" : usedShare >= 80 ? "warning" : "ok";
  return limit > 0 ? (100 * used) / limit : used > 0 ? 100 : 0;
}

/** One figure of a scope row: formatted text, the raw value in data-value (the tests read it). */
function figure(tag, key, value, money, digits) {
  const text = money ? usd(value, digits) : count(value);
  return el(tag, { dataset: { key, value }, textContent: text, title: money ? usdExact(value) : undefined });
}

/** Fill a list (<ul>) with one row per scope; `empty` is shown when there is none. */
export function renderScopes(list, scopes, { empty = "No limits apply." } = {}) {
  list.dataset.count = String(scopes.length);
  if (scopes.length === 0) {
    list.replaceChildren(el("li", { className: "empty" }, empty));
    return;
  }
  list.replaceChildren(
    ...scopes.map((s) => {
      const money = isCostScope(s.scope);
      const digits = money ? moneyDigits([s.used, s.held, s.limit, s.remaining]) : undefined;
      const bar = el("div", { className: "bar", attrs: { "aria-hidden": "true" } }, el("span", { className: "used" }), el("span", { className: "held" }));
      const shareUsed = setBar(bar, s);
      return el(
        "li",
        { className: "limit scope", dataset: { scope: s.scope, level: bar.dataset.level } },
        el(
          "div",
          { className: "limit-words" },
          el("span", { className: "limit-name", title: s.scope }, scopeLabel(s.scope)),
          el(
            "span",
            {},
            figure("strong", "used", s.used, money, digits),
            " used + ",
            figure("span", "held", s.held, money, digits),
            " held of ",
            figure("strong", "limit", s.limit, money, digits),
            ` (${percent(shareUsed)}) · `,
            figure("span", "remaining", s.remaining, money, digits),
            " left",
          ),
        ),
        bar,
      );
    }),
  );
}

/** A team's usage now (my_usage's `team.usage`) as a definition list, each figure in data-value. */
export function renderTeamUsage(list, usage) {
  const digits = moneyDigits([usage.monthCost, usage.dayCost]);
  const rows = [
    ["monthCost", "Cost this month", usage.monthCost, true],
    ["monthRuns", "Billable runs this month", usage.monthRuns, false],
    ["dayCost", "Cost today (UTC)", usage.dayCost, true],
    ["dayRuns", "Billable runs today (UTC)", usage.dayRuns, false],
  ];
  list.replaceChildren(
    ...rows.flatMap(([key, label, value, money]) => [
      el("dt", { textContent: label }),
      el("dd", {
        dataset: { key, value },
        textContent: money ? usd(value, digits) : count(value),
        title: money ? usdExact(value) : undefined,
      }),
    ]),
  );
}

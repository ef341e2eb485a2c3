// One user's month (my_usage's shape): the user page and the admin's drill-down both show it.
import { ALERT_COLUMNS } from "./alerts.js";
import { BarChart } from "./charts.js";
import { Latest, el, failureText, fillTable, hooks, setNumber } from "./dom.js";
import { SessionPages } from "./data.js";
import { forecastParts, projectMonth, todayIndex } from "./forecast.js";
import { count, currentMonth, dateTime, duration, moneyDigits, monthName, percent, plural, usd, usdExact } from "./format.js";
import { renderScopes, renderTeamUsage, setBar } from "./scopes.js";

const usage = [
  { key: "name", label: "Name" },
  { key: "cost", label: "Cost", money: true },
  { key: "apiCalls", label: "Calls", num: true, format: count },
  { key: "billableRuns", label: "Billable", num: true, format: count },
];

export const USAGE_COLUMNS = usage;

export { ALERT_COLUMNS } from "./alerts.js";

const SESSION_COLUMNS = [
  { key: "createdAt", label: "Started", value: (r) => r.createdAt?.toISOString() ?? "", format: (_, r) => dateTime(r.createdAt) },
  { key: "feature", label: "Feature" },
  {
    key: "status",
    label: "Status",
    format: (v, r) => (v === "completed" && r.completedBy === "timeout" ? "timed out" : v),
  },
  { key: "steps", label: "Steps", num: true, format: count },
  { key: "cost", label: "Cost", money: true },
  {
    key: "durationSeconds",
    label: "Duration",
    num: true,
    format: (v) => (v === null || v === undefined ? "—" : duration(v)),
  },
];

/** A limit's bar: used and held as shares of the limit (capped at 100 %), and its words. */
function renderLimit(h, prefix, { used, held, limit, remaining, money }) {
  const digits = moneyDigits([used, held, limit, remaining]);
  const format = money ? (v) => usd(v, digits) : count;
  setNumber(h[`${prefix}-used`], used, format(used), money ? usdExact(used) : undefined);
  setNumber(h[`${prefix}-held`], held, format(held), money ? usdExact(held) : undefined);
  setNumber(h[`${prefix}-limit`], limit, format(limit), money ? usdExact(limit) : undefined);
  setNumber(h[`${prefix}-remaining`], remaining, format(remaining), money ? usdExact(remaining) : undefined);
  h[`${prefix}-share`].textContent = percent(setBar(h[`${prefix}-bar`], { used, held, limit }));
}

export class UserView {
  /** Put a copy of the template into `container`; `db` reads sessions; `title` names the view. */
  constructor(container, { db, pageSize = 10 }) {
    const fragment = document.getElementById("user-view-template").content.cloneNode(true);
    this.root = fragment.firstElementChild;
    this.h = hooks(this.root);
    container.append(fragment);
    this.db = db;
    this.pageSize = pageSize;
    this.pages = null;
    this.sessionsRequest = new Latest();
    this.forecast = null; // {month, forecast, limit}: the latest my_usage answer's
    this.daily = null; // {month, days}: the month's days (usage_analytics' `daily` shape)
    this.dailyChart = new BarChart({
      box: this.h["u-daily-chart"],
      table: this.h["u-daily-data"],
      valueLabel: "Cost",
      valueFormat: usd,
      name: "Daily cost",
      note: this.h["u-daily-forecast"],
    });
    this.h["sessions-newer"].addEventListener("click", () => this.loadSessions(this.pages.index - 1));
    this.h["sessions-older"].addEventListener("click", () => this.loadSessions(this.pages.index + 1));
  }

  /** Show a my_usage answer (or the same shape computed from live documents). */
  render(view) {
    const h = this.h;
    this.view = view;
    this.root.dataset.userId = view.userId;
    this.root.dataset.month = view.month;
    setNumber(h["u-cost"], view.totalCost, usd(view.totalCost), usdExact(view.totalCost));
    setNumber(h["u-calls"], view.apiCalls, count(view.apiCalls));
    setNumber(h["u-runs"], view.billableRuns, count(view.billableRuns));
    setNumber(h["u-ai-cost"], view.byType.AI.cost, usd(view.byType.AI.cost), usdExact(view.byType.AI.cost));
    setNumber(h["u-api-cost"], view.byType.API.cost, usd(view.byType.API.cost), usdExact(view.byType.API.cost));
    setNumber(h["u-lifetime-cost"], view.lifetime.cost, usd(view.lifetime.cost), usdExact(view.lifetime.cost));
    setNumber(h["u-lifetime-calls"], view.lifetime.apiCalls, `${count(view.lifetime.apiCalls)} calls`);
    setNumber(h["u-unpriced-steps"], view.unpricedSteps, plural(view.unpricedSteps, "step"));
    h["u-unpriced"].hidden = view.unpricedSteps === 0;
    const limits = view.limits;
    renderLimit(h, "cost", {
      used: view.totalCost,
      held: limits.held,
      limit: limits.monthlyCostLimit,
      remaining: limits.costRemaining,
      money: true,
    });
    renderLimit(h, "runs", {
      used: view.billableRuns,
      held: limits.heldRuns,
      limit: limits.monthlyFreeRuns,
      remaining: limits.freeRunsRemaining,
      money: false,
    });
    const state = limits.exceeded ? "exceeded" : limits.warning ? "warning" : "ok";
    const status = h["limit-status"];
    status.dataset.value = state;
    status.dataset.exceeded = String(limits.exceeded);
    status.dataset.warning = String(limits.warning);
    status.textContent =
      state === "exceeded" ? "Over a limit" : state === "warning" ? "At 80% or more of a limit" : "Within limits";
    fillTable(h["u-features"], usage, view.features, { empty: "No features this month." });
    fillTable(h["u-providers"], usage, view.providers, { empty: "No providers this month." });
    setNumber(h["u-sessions-active"], view.sessions.active, count(view.sessions.active));
    setNumber(h["u-sessions-completed"], view.sessions.completed, count(view.sessions.completed));
    if (view.daily) this.daily = { month: view.month, days: view.daily };
    this.#renderForecast();
  }

  /** Keep a my_usage answer's forecast (only my_usage answers one) and show it. */
  setForecast(answer, { show = true } = {}) {
    this.forecast = answer.forecast ? { month: answer.month, forecast: answer.forecast, limit: answer.limits?.monthlyCostLimit } : null;
    if (show) this.#renderForecast();
  }

  /** Show a month's days (from its month document: my_usage does not answer them). */
  setDaily(month, days, { show = true } = {}) {
    this.daily = { month, days };
    if (show) this.#renderForecast();
  }

  /**
   * "At this pace" (the current month only: a past month's forecast is its total) and the daily
   * chart with its projection, for the month shown.
   */
  #renderForecast() {
    const h = this.h;
    const month = this.view?.month;
    if (!month) return;
    const forecast = this.forecast?.month === month ? this.forecast : null;
    const current = month === currentMonth();
    const pace = h["u-pace"];
    pace.hidden = !(forecast && current);
    pace.dataset.month = month;
    if (forecast && current) {
      const parts = forecastParts(forecast.forecast, { limit: forecast.limit, month, interval: false });
      pace.replaceChildren(
        "At this pace: ",
        ...parts.map((part) => (Array.isArray(part) ? el("strong", { dataset: { key: part[1], value: part[2] }, textContent: part[0] }) : part)),
      );
    } else {
      pace.replaceChildren();
    }
    const daily = this.daily?.month === month ? this.daily.days : null;
    h["u-daily-panel"].hidden = !daily;
    if (!daily) return;
    const plan = forecast ? projectMonth({ costs: daily.map((d) => d.cost), today: todayIndex(month), forecast: forecast.forecast }) : null;
    const total = daily.reduce((sum, d) => sum + d.cost, 0);
    this.dailyChart.render(
      daily.map((d) => ({
        label: d.date,
        tick: String(Number(d.date.slice(8))),
        value: d.cost,
        calls: d.apiCalls,
        detail: `${count(d.apiCalls)} calls · ${count(d.billableRuns)} billable`,
      })),
      `${usd(total)} in ${monthName(month)}`,
      plan ? { plan, forecast: forecast.forecast, limit: forecast.limit, limitWord: "limit", month } : null,
    );
  }

  /**
   * Show every limited scope of a my_usage answer (`limits.scopes`) and the user's team
   * (`team`: its usage and scopes). Only my_usage knows them (plans, days, features, teams):
   * the live documents do not, so this is called with its answers only.
   */
  renderScopes(answer) {
    const h = this.h;
    const current = answer.month === currentMonth();
    h["u-scopes-panel"].dataset.month = answer.month;
    h["u-scopes-note"].textContent = current
      ? "Every limit that applies now: what is used, what reservations under way hold, and what is left. Days are UTC."
      : "Day, feature and team limits are shown for the current month only.";
    renderScopes(h["u-scopes"], current ? answer.limits.scopes ?? [] : [], {
      empty: current ? "No limits apply." : "Not shown for a past month.",
    });
    const team = current ? answer.team : null;
    h["u-team"].hidden = !team;
    h["u-team"].dataset.teamId = team?.teamId ?? "";
    if (!team) return;
    h["u-team-id"].textContent = team.teamId;
    renderTeamUsage(h["u-team-usage"], team.usage);
    renderScopes(h["u-team-scopes"], team.scopes ?? [], { empty: "The team has no limits." });
  }

  setAlerts(rows) {
    fillTable(this.h["u-alerts"], ALERT_COLUMNS, rows, { empty: "No alerts this month." });
  }

  alertsFailed(error) {
    fillTable(this.h["u-alerts"], ALERT_COLUMNS, [], {
      empty: failureText(error, "You may not read these alerts.", "Could not load the alerts").text,
    });
  }

  /** Show the first page of a user's sessions (again: `reset` false keeps the page shown). */
  async showSessions(userId, { reset = true } = {}) {
    if (reset || !this.pages || this.pages.userId !== userId) this.pages = new SessionPages(this.db, userId, this.pageSize);
    return this.loadSessions(this.pages.index);
  }

  async loadSessions(index) {
    const pages = this.pages;
    const h = this.h;
    const current = this.sessionsRequest.begin();
    h["sessions-older"].disabled = true;
    h["sessions-newer"].disabled = true;
    h["u-session-list"].setAttribute("aria-busy", "true");
    try {
      const rows = await pages.load(index);
      if (!current() || pages !== this.pages) return;
      fillTable(h["u-session-list"], SESSION_COLUMNS, rows, { empty: "No sessions yet.", rowKey: (r) => r.id });
      h["sessions-page"].textContent = `Page ${index + 1}`;
      h["sessions-page"].dataset.value = String(index + 1);
    } catch (error) {
      if (!current()) return;
      fillTable(h["u-session-list"], SESSION_COLUMNS, [], {
        empty: failureText(error, "You may not read these sessions.", "Could not load the sessions").text,
      });
    } finally {
      if (current()) {
        h["u-session-list"].removeAttribute("aria-busy");
        h["sessions-newer"].disabled = pages.index === 0;
        h["sessions-older"].disabled = !pages.hasNext;
      }
    }
  }
}


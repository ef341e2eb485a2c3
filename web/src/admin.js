// The admin page: the platform's month (usage_analytics), one user's month (my_usage with userId,
// their sessions and alerts, their limits, plan and team), plans, teams, the price catalog, and
// the month's CSV export.
import { BarChart } from "./charts.js";
import { dailyOf, exportMonthCsv, listTeams, readUserMonth, teamMembers, userAlerts, userAssignment } from "./data.js";
import {
  Latest,
  breakable,
  clearProblems,
  describeError,
  el,
  fillTable,
  formProblem,
  hooks,
  setNumber,
  setStatus,
  showFailure,
  submitForm,
} from "./dom.js";
import { projectMonth, todayIndex } from "./forecast.js";
import { ago, clock, count, currentMonth, dateTime, duration, monthName, monthShort, percent, plural, toDate, usd, usdExact } from "./format.js";
import { renderScopes, renderTeamUsage } from "./scopes.js";
import { ALERT_COLUMNS, USAGE_COLUMNS, UserView } from "./userview.js";

const TOP_USERS = 10;
const DEFAULT_PLAN = "default";

// A limits object's top-level fields: [form input suffix, field, money?] (plans and teams alike).
const LIMIT_FIELDS = [
  ["monthly-cost", "monthlyCostLimit", true],
  ["monthly-runs", "monthlyFreeRuns", false],
  ["daily-cost", "dailyCostLimit", true],
  ["daily-runs", "dailyFreeRuns", false],
];
// A feature's limits: [field, label, money?].
const FEATURE_FIELDS = [
  ["monthlyCostLimit", "Cost a month (USD)", true],
  ["dailyCostLimit", "Cost a day (USD)", true],
  ["monthlyRuns", "Runs a month", false],
  ["dailyRuns", "Runs a day", false],
];

/** An input's number (undefined when empty: the field is left unset). */
function numberOf(input) {
  const raw = input.value.trim();
  return raw === "" ? undefined : Number(raw);
}

const limitText = (value, money) => (money ? usd(value) : count(value));

/** A feature's limits in words: "$2.00 a month · 10 runs a day". */
function featureWords(own) {
  const parts = [];
  if (own.monthlyCostLimit !== undefined) parts.push(`${usd(own.monthlyCostLimit)} a month`);
  if (own.dailyCostLimit !== undefined) parts.push(`${usd(own.dailyCostLimit)} a day`);
  if (own.monthlyRuns !== undefined) parts.push(`${count(own.monthlyRuns)} runs a month`);
  if (own.dailyRuns !== undefined) parts.push(`${count(own.dailyRuns)} runs a day`);
  return parts.join(" · ");
}

/** A team's limits in words, each figure in data-key and data-value. */
function teamLimitWords(limits) {
  const parts = [
    ["monthlyCostLimit", "a month", true],
    ["monthlyFreeRuns", "billable runs a month", false],
    ["dailyCostLimit", "a day", true],
    ["dailyFreeRuns", "billable runs a day", false],
  ].filter(([key]) => limits[key] !== undefined);
  if (parts.length === 0) return [el("span", { textContent: "No limits: usage is only counted." })];
  const words = [el("span", { textContent: "Limits: " })];
  parts.forEach(([key, what, money], index) => {
    if (index) words.push(" · ");
    words.push(el("strong", { dataset: { key, value: limits[key] }, textContent: limitText(limits[key], money) }), ` ${what}`);
  });
  return words;
}

/** How often the open page refreshes itself (seconds); `?refresh=N` changes it (tests, demos). */
function refreshSeconds() {
  const asked = Number(new URLSearchParams(location.search).get("refresh"));
  return Number.isFinite(asked) && asked >= 1 ? asked : 30;
}

const userHash = (userId) => `#user/${encodeURIComponent(userId)}`;

function routeUser() {
  const match = /^#user\/(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

export class AdminPage {
  constructor({ root, db, api, month }) {
    this.root = root;
    this.db = db;
    this.api = api;
    this.month = month; // () => the month picked in the header
    this.h = hooks(root);
    this.emails = new Map(); // userId → email, from usage_analytics' topUsers and freeTier
    this.overviewRequest = new Latest();
    this.drillRequest = new Latest();
    this.pricesRequest = new Latest();
    this.plansRequest = new Latest();
    this.teamsRequest = new Latest();
    this.plans = null; // list_plans' plans
    this.teams = null; // [{teamId, limits, slices, members: {ids, more}, view (my_usage's team) | null, error}]
    this.assigned = null; // the drill-down user's {plan, teamId}
    this.assignFormUser = null;
    this.result = null;
    this.drillUser = null;
    this.limitsFormUser = null;
    this.timer = null;
    this.daily = new BarChart({
      box: this.h["daily-chart"],
      table: this.h["daily-data"],
      valueLabel: "Cost",
      valueFormat: usd,
      name: "Daily cost",
      note: this.h["daily-forecast"],
    });
    this.history = new BarChart({
      box: this.h["history-chart"],
      table: this.h["history-data"],
      valueLabel: "Cost",
      valueFormat: usd,
      name: "Cost by month",
    });
    this.userView = new UserView(this.h["drill-view"], { db });
    this.#wire();
  }

  #wire() {
    const h = this.h;
    h.refresh.addEventListener("click", () => this.refresh({ fresh: true }));
    h["export-csv"].addEventListener("click", () => this.exportCsv());
    h["limits-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveLimits();
    });
    h["price-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      this.savePrice();
    });
    h["assign-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveAssignment();
    });
    h["plan-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      this.savePlan();
    });
    h["plan-add-feature"].addEventListener("click", () => this.addFeatureRow({}, { focus: true }));
    h["plan-clear"].addEventListener("click", () => this.editPlan(null));
    h["team-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveTeam();
    });
    h["team-clear"].addEventListener("click", () => this.editTeam(null));
    h["drill-back"].addEventListener("click", (event) => {
      event.preventDefault();
      history.pushState(null, "", location.pathname + location.search);
      this.route();
    });
    this.onHash = () => this.route();
    this.onVisible = () => {
      if (!document.hidden && this.stale()) this.refresh();
    };
  }

  /** Show the page (after sign-in): route, prices, and the refresh timer. */
  start() {
    this.root.hidden = false;
    window.addEventListener("hashchange", this.onHash);
    document.addEventListener("visibilitychange", this.onVisible);
    this.h["price-from"].value = new Date().toISOString().slice(0, 10);
    this.route();
    this.loadPrices();
    this.loadPlans();
    this.loadTeams();
    const every = refreshSeconds() * 1000;
    this.timer = setInterval(() => {
      if (!document.hidden) this.refresh();
      else this.renderAsOf();
    }, every);
    this.ticker = setInterval(() => this.renderAsOf(), 5000);
  }

  stop() {
    this.root.hidden = true;
    clearInterval(this.timer);
    clearInterval(this.ticker);
    window.removeEventListener("hashchange", this.onHash);
    document.removeEventListener("visibilitychange", this.onVisible);
    this.overviewRequest.cancel();
    this.drillRequest.cancel();
    this.pricesRequest.cancel();
    this.plansRequest.cancel();
    this.teamsRequest.cancel();
  }

  stale() {
    const asOf = this.result?.meta?.asOf;
    return !asOf || Date.now() - new Date(asOf).getTime() > refreshSeconds() * 1000;
  }

  /** The header's month changed. */
  monthChanged() {
    this.result = null;
    this.route();
  }

  route() {
    const userId = routeUser();
    this.h.overview.hidden = Boolean(userId);
    this.h.drilldown.hidden = !userId;
    this.h.prices.hidden = Boolean(userId);
    this.h.plans.hidden = Boolean(userId);
    this.h.teams.hidden = Boolean(userId);
    if (userId) {
      if (userId !== this.drillUser) this.userView.pages = null;
      this.drillUser = userId;
      this.loadDrill({ initial: true });
    } else {
      this.drillUser = null;
      this.drillRequest.cancel();
      this.loadOverview({ fresh: false });
    }
  }

  /** Refresh what is shown (the timer, the button: `fresh` asks for an exact-now answer). */
  refresh({ fresh = false } = {}) {
    if (fresh) {
      this.loadPlans();
      this.loadTeams();
    }
    if (this.drillUser) {
      this.loadDrill({ initial: false });
      if (fresh) this.loadOverview({ fresh: true, quiet: true });
    } else {
      this.loadOverview({ fresh });
    }
  }

  renderAsOf(note) {
    const h = this.h;
    const meta = this.result?.meta;
    if (!meta) {
      h["as-of"].textContent = note ?? "";
      return;
    }
    h["as-of"].dataset.asOf = meta.asOf;
    h["as-of"].dataset.generatedAt = meta.generatedAt;
    h["as-of"].textContent = `${note ? `${note} · ` : ""}Data as of ${clock(meta.asOf)} (${ago(meta.asOf)})`;
  }

  // ---- the platform's month ----

  async loadOverview({ fresh = false, quiet = false } = {}) {
    const h = this.h;
    const month = this.month();
    const current = this.overviewRequest.begin();
    const first = !this.result || this.result.month !== month;
    if (first && !quiet) setStatus(h["overview-status"], h["overview-content"], "loading", `Loading ${monthName(month)}…`);
    h.refresh.disabled = true;
    h.refresh.textContent = "Refreshing…";
    try {
      const result = await this.api.usageAnalytics({ month, top: TOP_USERS, fresh });
      if (!current()) return; // a later request (another month, a refresh) answers instead
      this.render(result);
    } catch (error) {
      if (!current()) return;
      const { denied, message } = describeError(error);
      if (denied) {
        this.result = null;
        setStatus(
          h["overview-status"],
          h["overview-content"],
          "denied",
          "Your account may not read the platform's usage: it needs the admin claim. Ask an admin, then sign in again.",
        );
      } else if (first) {
        setStatus(h["overview-status"], h["overview-content"], "error", `Could not load usage: ${message}`);
      } else {
        this.renderAsOf(`Refresh failed (${message})`);
      }
    } finally {
      if (current()) {
        h.refresh.disabled = false;
        h.refresh.textContent = "Refresh now";
      }
    }
  }

  render(result) {
    const h = this.h;
    this.result = result;
    for (const row of [...result.topUsers, ...result.freeTier]) if (row.email) this.emails.set(row.userId, row.email);
    const totals = result.totals;
    if (totals.apiCalls === 0) {
      setStatus(h["overview-status"], h["overview-content"], "empty", `No usage was recorded in ${monthName(result.month)}.`);
    } else {
      setStatus(h["overview-status"], h["overview-content"], "ready");
    }
    const money = (id, value) => setNumber(h[id], value, usd(value), usdExact(value));
    money("total-cost", totals.cost);
    money("ai-cost", totals.byType.AI.cost);
    money("api-cost", totals.byType.API.cost);
    setNumber(h["api-calls"], totals.apiCalls, count(totals.apiCalls));
    setNumber(h["billable-runs"], totals.billableRuns, count(totals.billableRuns));
    setNumber(h["active-users"], totals.activeUsers, count(totals.activeUsers));
    setNumber(h["unpriced-count"], totals.unpricedSteps, count(totals.unpricedSteps));
    this.renderUnpriced(result);
    fillTable(h.features, USAGE_COLUMNS, result.features, { empty: "No features this month." });
    fillTable(h.providers, USAGE_COLUMNS, result.providers, { empty: "No providers this month." });
    const userColumn = { key: "userId", label: "User", cell: (userId, row) => this.userLink(userId, row.email) };
    // (v3) monthEnd: the row's run rate to month end (its total for a past month).
    const monthEnd = { key: "monthEnd", label: result.month === currentMonth() ? "Projected month-end" : "Month total", money: true };
    fillTable(h["top-users"], [userColumn, ...USAGE_COLUMNS.slice(1), monthEnd], result.topUsers, { empty: "No users this month." });
    fillTable(
      h["top-teams"],
      [{ key: "teamId", label: "Team" }, ...USAGE_COLUMNS.slice(1), monthEnd],
      result.topTeams ?? [],
      { empty: "No team recorded anything this month.", rowKey: (row) => row.teamId },
    );
    fillTable(
      h["free-tier"],
      [
        userColumn,
        { key: "costUsed", label: "Cost used", money: true },
        { key: "monthlyCostLimit", label: "Cost limit", money: true },
        { key: "runsUsed", label: "Runs used", num: true, format: count },
        { key: "monthlyFreeRuns", label: "Free runs", num: true, format: count },
        { key: "percent", label: "Used", num: true, format: percent },
      ],
      result.freeTier,
      { empty: "Nobody is at 80% of a limit." },
    );
    fillTable(
      h.alerts,
      [
        ALERT_COLUMNS[0],
        {
          key: "userId",
          label: "Who",
          cell: (userId, row) => {
            if (userId) return this.userLink(userId, this.emails.get(userId));
            if (row.teamId) return document.createTextNode(`Team ${row.teamId}`);
            return document.createTextNode(row.kind === "cost" ? "Platform budget" : "Platform");
          },
        },
        ...ALERT_COLUMNS.slice(1),
        { key: "delivered", label: "Webhook", format: (v, r) => (v ? "delivered" : "pending") + (r.late ? " (late)" : "") },
      ],
      result.alerts.map((a) => ({ ...a, createdAt: a.createdAt ? new Date(a.createdAt) : null })),
      { empty: "No alerts this month." },
    );
    const s = result.sessions;
    const stats = [
      ["Active", count(s.active), s.active],
      ["Completed", count(s.completed), s.completed],
      ["Average cost", usd(s.avgCost), s.avgCost],
      ["Average steps", s.avgSteps.toLocaleString("en-US", { maximumFractionDigits: 1 }), s.avgSteps],
      ["Average duration", duration(s.avgDurationSeconds), s.avgDurationSeconds],
    ];
    h.sessions.replaceChildren(
      ...stats.flatMap(([label, text, value]) => [el("dt", { textContent: label }), el("dd", { textContent: text, dataset: { value } })]),
    );
    // The month's projection (current month only): usage_analytics does not answer the platform's
    // budget, so no limit line; the forecast's exceedsOn says when the budget would be reached.
    const now = toDate(result.meta.generatedAt) ?? new Date();
    const plan = projectMonth({ costs: result.daily.map((d) => d.cost), today: todayIndex(result.month, now), forecast: result.forecast });
    this.daily.render(
      result.daily.map((d) => ({
        label: d.date,
        tick: String(Number(d.date.slice(8))),
        value: d.cost,
        calls: d.apiCalls,
        detail: `${count(d.apiCalls)} calls · ${count(d.billableRuns)} billable`,
      })),
      `${usd(totals.cost)} in ${monthName(result.month)}`,
      { plan, forecast: result.forecast, limit: undefined, limitWord: "budget", month: result.month, now },
    );
    this.history.render(
      result.history.map((m) => ({
        label: m.month,
        tick: monthShort(m.month),
        value: m.cost,
        calls: m.apiCalls,
        detail: `${count(m.apiCalls)} calls`,
      })),
      `the 12 months to ${monthName(result.month)}`,
    );
    h.meta.textContent =
      `${result.month} · generated ${dateTime(result.meta.generatedAt)} · ${count(result.meta.documentsRead)} documents read`;
    h.meta.dataset.month = result.month;
    this.renderAsOf();
  }

  renderUnpriced(result) {
    const h = this.h;
    const models = result.unpriced ?? [];
    h.unpriced.hidden = result.totals.unpricedSteps === 0;
    setNumber(h["unpriced-steps"], result.totals.unpricedSteps, plural(result.totals.unpricedSteps, "step"));
    h["unpriced-models"].replaceChildren(
      ...models.map((m) => {
        const add = el("button", { type: "button", className: "link", textContent: "add a price" });
        add.addEventListener("click", () => this.prefillPrice(m.provider, m.model));
        return el(
          "li",
          { dataset: { provider: m.provider, model: m.model, steps: m.steps } },
          el("code", { textContent: `${m.provider} / ${m.model}` }),
          ` — ${plural(m.steps, "step")} · `,
          add,
        );
      }),
    );
  }

  userLink(userId, email) {
    const link = el("a", { href: userHash(userId) }, breakable(email || userId));
    if (email) link.title = userId;
    return link;
  }

  // ---- one user ----

  async loadDrill({ initial }) {
    const h = this.h;
    const userId = this.drillUser;
    const month = this.month();
    const current = this.drillRequest.begin();
    const email = this.emails.get(userId);
    h["drill-title"].textContent = email || userId;
    h["drill-user-id"].textContent = email ? `User ${userId} · ${monthName(month)}` : monthName(month);
    if (initial) setStatus(h["drill-status"], h["drill-content"], "loading", "Loading this user's month…");
    const assignment = this.assignFormUser !== userId ? userAssignment(this.db, userId) : null;
    try {
      const [view, alerts, assigned, userMonth] = await Promise.all([
        this.api.myUsage({ userId, month }),
        userAlerts(this.db, userId, month),
        assignment,
        readUserMonth(this.db, userId, month), // its days, for the daily chart
        this.userView.showSessions(userId, { reset: initial }),
      ]);
      if (!current()) return;
      this.userView.setDaily(month, dailyOf(month, userMonth.days), { show: false });
      this.userView.setForecast(view, { show: false });
      this.userView.render(view); // (shows them)
      this.userView.renderScopes(view);
      this.userView.setAlerts(alerts);
      if (assigned) this.fillAssignForm(userId, assigned);
      setStatus(
        h["drill-status"],
        h["drill-content"],
        view.apiCalls === 0 ? "empty" : "ready",
        `Nothing recorded for this user in ${monthName(month)}.`,
      );
      if (this.limitsFormUser !== userId) this.fillLimitsForm(view);
    } catch (error) {
      if (!current()) return;
      showFailure(
        h["drill-status"],
        h["drill-content"],
        error,
        "Your account may not read this user's usage (it needs the admin claim).",
        "Could not load this user",
      );
    }
  }

  fillLimitsForm(view) {
    this.limitsFormUser = view.userId;
    this.h["limit-cost-input"].value = String(view.limits.monthlyCostLimit);
    this.h["limit-runs-input"].value = String(view.limits.monthlyFreeRuns);
  }

  async saveLimits() {
    const h = this.h;
    const userId = this.drillUser;
    const cost = h["limit-cost-input"].value.trim();
    const runs = h["limit-runs-input"].value.trim();
    await submitForm({
      button: h["limits-save"],
      message: h["limits-message"],
      send: async () => {
        const answer = await this.api.setLimits({
          userId,
          monthlyCostLimit: Number(cost),
          monthlyFreeRuns: Number(runs),
        });
        this.limitsFormUser = null;
        return `Saved: ${usd(answer.limits.monthlyCostLimit)} and ${count(answer.limits.monthlyFreeRuns)} free runs a month.`;
      },
      after: async () => {
        if (this.drillUser === userId) await this.loadDrill({ initial: false });
      },
      failed: "Not saved",
    });
  }

  /** The drill-down user's plan and team in the form's two lists. */
  fillAssignForm(userId, assigned) {
    this.assignFormUser = userId;
    this.assigned = assigned;
    this.h["assign-message"].textContent = "";
    this.fillAssignOptions({ keep: false });
  }

  /** The plans and teams known, as options (`keep`: what is picked stays picked). */
  fillAssignOptions({ keep = true } = {}) {
    const h = this.h;
    const fill = (select, none, names, assigned) => {
      const picked = keep && select.options.length ? select.value : assigned ?? "";
      const all = [...new Set([...names, ...(assigned ? [assigned] : []), ...(picked ? [picked] : [])])];
      select.replaceChildren(el("option", { value: "", textContent: none }), ...all.map((name) => el("option", { value: name, textContent: name })));
      select.value = picked;
    };
    const plans = (this.plans ?? []).map((p) => p.plan).filter((name) => name !== DEFAULT_PLAN);
    fill(h["assign-plan"], "No plan (the default plan's limits)", plans, this.assigned?.plan);
    fill(h["assign-team"], "No team", (this.teams ?? []).map((t) => t.teamId), this.assigned?.teamId);
  }

  async saveAssignment() {
    const h = this.h;
    const userId = this.drillUser;
    const plan = h["assign-plan"].value || null;
    const teamId = h["assign-team"].value || null;
    await submitForm({
      button: h["assign-save"],
      message: h["assign-message"],
      form: h["assign-form"],
      send: async () => {
        const answer = await this.api.setLimits({ userId, plan, teamId });
        this.assigned = { plan: answer.plan ?? null, teamId: answer.teamId ?? null };
        const planText = answer.plan ? `plan ${answer.plan}` : "no plan";
        return `Saved: ${planText}, ${answer.teamId ? `team ${answer.teamId}` : "no team"}.`;
      },
      after: async () => {
        if (this.drillUser === userId) await this.loadDrill({ initial: false });
        this.loadTeams(); // its members changed
      },
      failed: "Not saved",
    });
  }

  // ---- plans ----

  async loadPlans() {
    const h = this.h;
    const current = this.plansRequest.begin();
    if (!this.plans) setStatus(h["plans-status"], null, "loading", "Loading plans…");
    try {
      const { plans } = await this.api.listPlans({});
      if (!current()) return;
      this.plans = plans;
      const limit = (key, money) => ({
        key,
        label: { monthlyCostLimit: "Cost a month", monthlyFreeRuns: "Runs a month", dailyCostLimit: "Cost a day", dailyFreeRuns: "Runs a day" }[key],
        value: (row) => row.limits[key] ?? "",
        ...(money ? { money: true } : { num: true, format: (v) => (v === "" ? "—" : count(v)) }),
      });
      fillTable(
        h["plans-table"],
        [
          { key: "plan", label: "Plan" },
          limit("monthlyCostLimit", true),
          limit("monthlyFreeRuns", false),
          limit("dailyCostLimit", true),
          limit("dailyFreeRuns", false),
          {
            key: "features",
            label: "Feature limits",
            value: (row) => JSON.stringify(row.limits.features ?? {}),
            cell: (_, row) => {
              const features = Object.entries(row.limits.features ?? {});
              if (features.length === 0) return document.createTextNode("—");
              return el(
                "ul",
                { className: "plain" },
                ...features.map(([name, own]) => el("li", {}, el("code", {}, breakable(name)), ` ${featureWords(own)}`)),
              );
            },
          },
          {
            key: "edit",
            label: "Change",
            cell: (_, row) => {
              const button = el("button", { type: "button", className: "quiet small", textContent: "Edit" });
              button.setAttribute("aria-label", `Edit plan ${row.plan}`);
              button.addEventListener("click", () => this.editPlan(row));
              return button;
            },
          },
        ],
        plans,
        { rowKey: (row) => row.plan },
      );
      setStatus(h["plans-status"], null, "ready");
      this.fillAssignOptions();
    } catch (error) {
      if (!current()) return;
      showFailure(h["plans-status"], null, error, "Your account may not read plans (it needs the admin claim).", "Could not load plans");
    }
  }

  /** Fill the plan form with a plan (null: an empty form for a new one). */
  editPlan(row) {
    const h = this.h;
    h["plan-form-title"].textContent = row ? `Edit plan ${row.plan}` : "Add a plan";
    h["plan-name"].value = row?.plan ?? "";
    for (const [suffix, key] of LIMIT_FIELDS) h[`plan-${suffix}`].value = row?.limits[key] !== undefined ? String(row.limits[key]) : "";
    h["plan-features"].replaceChildren();
    for (const [name, own] of Object.entries(row?.limits.features ?? {})) this.addFeatureRow({ name, ...own });
    h["plan-message"].textContent = "";
    h["plan-message"].removeAttribute("data-state");
    clearProblems(h["plan-form"]);
    if (row) {
      h["plan-form"].scrollIntoView({ block: "start" });
      h["plan-name"].focus();
    }
  }

  /** A row of the plan form for one feature's limits. */
  addFeatureRow(own, { focus = false } = {}) {
    const list = this.h["plan-features"];
    const index = list.children.length + 1;
    const name = el("input", {
      required: true,
      maxLength: 100,
      autocomplete: "off",
      value: own.name ?? "",
      dataset: { key: "name", label: `Feature ${index}` },
    });
    const inputs = FEATURE_FIELDS.map(([key, label, money]) =>
      el("input", {
        type: "number",
        min: "0",
        step: money ? "any" : "1",
        inputMode: money ? "decimal" : "numeric",
        value: own[key] !== undefined ? String(own[key]) : "",
        dataset: { key, label: `Feature ${index}, ${label.toLowerCase()}` },
      }),
    );
    const remove = el("button", { type: "button", className: "quiet", textContent: "Remove" });
    const row = el(
      "fieldset",
      { className: "feature-row", dataset: { testid: "plan-feature" } },
      el("legend", { textContent: `Feature ${index}` }),
      el(
        "div",
        { className: "fields" },
        el("label", {}, "Feature name ", name),
        ...inputs.map((input, i) => el("label", {}, `${FEATURE_FIELDS[i][1]} `, input)),
        remove,
      ),
    );
    remove.setAttribute("aria-label", `Remove feature ${index}`);
    remove.addEventListener("click", () => {
      row.remove();
      this.h["plan-add-feature"].focus();
    });
    list.append(row);
    if (focus) name.focus();
  }

  /** The plan form as set_plan's data, each feature input named by its field path (for errors). */
  planData() {
    const h = this.h;
    const limits = {};
    for (const [suffix, key] of LIMIT_FIELDS) {
      const value = numberOf(h[`plan-${suffix}`]);
      if (value !== undefined) limits[key] = value;
    }
    const features = {};
    for (const row of h["plan-features"].querySelectorAll(".feature-row")) {
      const nameInput = row.querySelector('[data-key="name"]');
      const name = nameInput.value.trim();
      if (Object.hasOwn(features, name)) return { duplicate: name, input: nameInput };
      nameInput.dataset.field = `limits.features.${name}`;
      const own = {};
      for (const [key] of FEATURE_FIELDS) {
        const input = row.querySelector(`[data-key="${key}"]`);
        input.dataset.field = `limits.features.${name}.${key}`;
        const value = numberOf(input);
        if (value !== undefined) own[key] = value;
      }
      features[name] = own;
    }
    if (Object.keys(features).length) limits.features = features;
    return { data: { plan: h["plan-name"].value.trim(), limits } };
  }

  async savePlan() {
    const h = this.h;
    const { data, duplicate, input } = this.planData();
    if (duplicate !== undefined) {
      formProblem(h["plan-form"], h["plan-message"], `Not saved: the feature ${duplicate} is listed twice.`, input);
      return;
    }
    await submitForm({
      button: h["plan-save"],
      message: h["plan-message"],
      form: h["plan-form"],
      send: async () => {
        const saved = await this.api.setPlan(data);
        h["plan-form-title"].textContent = `Edit plan ${saved.plan}`;
        return `Saved plan ${saved.plan}.`;
      },
      after: () => this.loadPlans(),
      failed: "Not saved",
    });
  }

  // ---- teams ----

  /** Every team, its members and (from my_usage for its first member) its usage and scopes. */
  async loadTeams() {
    const h = this.h;
    const current = this.teamsRequest.begin();
    if (!this.teams) setStatus(h["teams-status"], null, "loading", "Loading teams…");
    try {
      const teams = await listTeams(this.db);
      const shown = await Promise.all(
        teams.map(async (team) => {
          const members = await teamMembers(this.db, team.teamId);
          if (members.ids.length === 0) return { ...team, members, view: null, error: null };
          try {
            const answer = await this.api.myUsage({ userId: members.ids[0] });
            const view = answer.team?.teamId === team.teamId ? answer.team : null;
            return { ...team, members, view, error: view ? null : "its member left meanwhile: refresh" };
          } catch (error) {
            return { ...team, members, view: null, error: describeError(error).message };
          }
        }),
      );
      if (!current()) return;
      this.teams = shown;
      this.renderTeams();
      setStatus(h["teams-status"], null, shown.length ? "ready" : "empty", "No teams yet: add one below.");
      this.fillAssignOptions();
    } catch (error) {
      if (!current()) return;
      showFailure(h["teams-status"], null, error, "Your account may not read teams (it needs the admin claim).", "Could not load teams");
    }
  }

  renderTeams() {
    this.h["teams-list"].replaceChildren(...this.teams.map((team) => this.teamCard(team)));
  }

  teamCard(team) {
    const edit = el("button", { type: "button", className: "quiet small", textContent: "Edit" });
    edit.setAttribute("aria-label", `Edit team ${team.teamId}`);
    edit.addEventListener("click", () => this.editTeam(team));
    const { ids, more } = team.members;
    const members = el(
      "ul",
      { className: "members", dataset: { testid: "team-members", count: ids.length } },
      ...ids.map((uid) => el("li", { dataset: { userId: uid } }, this.userLink(uid, this.emails.get(uid)))),
      more ? el("li", { textContent: `and more (the first ${ids.length} are shown)` }) : null,
    );
    const parts = [
      el("div", { className: "panel-head" }, el("h3", {}, breakable(team.teamId)), edit),
      el("p", { className: "hint", dataset: { testid: "team-limits" } }, ...teamLimitWords(team.limits)),
      el(
        "p",
        { className: "members-head" },
        ids.length ? `Members (${count(ids.length)}${more ? "+" : ""}):` : "No members yet: add one below, or from a user's page.",
      ),
    ];
    if (ids.length) parts.push(members);
    if (team.view) {
      const usage = el("dl", { className: "stats", dataset: { testid: "team-usage" } });
      renderTeamUsage(usage, team.view.usage);
      const scopes = el("ul", { className: "scopes", dataset: { testid: "team-scopes" }, attrs: { "aria-label": `Team ${team.teamId}: limits` } });
      renderScopes(scopes, team.view.scopes ?? [], { empty: "No limits: usage is only counted." });
      parts.push(usage, scopes);
    } else if (team.error) {
      parts.push(el("p", { className: "error", dataset: { testid: "team-error" } }, `Could not read its usage: ${team.error}`));
    }
    return el("article", { className: "team", dataset: { testid: "team", teamId: team.teamId } }, ...parts);
  }

  /** Fill the team form with a team (null: an empty form for a new one). */
  editTeam(team) {
    const h = this.h;
    h["team-form-title"].textContent = team ? `Edit team ${team.teamId}` : "Add a team";
    h["team-id"].value = team?.teamId ?? "";
    for (const [suffix, key] of LIMIT_FIELDS) h[`team-${suffix}`].value = team?.limits[key] !== undefined ? String(team.limits[key]) : "";
    h["team-member"].value = "";
    h["team-message"].textContent = "";
    h["team-message"].removeAttribute("data-state");
    clearProblems(h["team-form"]);
    if (team) {
      h["team-form"].scrollIntoView({ block: "start" });
      h["team-id"].focus();
    }
  }

  async saveTeam() {
    const h = this.h;
    const limits = {};
    for (const [suffix, key] of LIMIT_FIELDS) {
      const value = numberOf(h[`team-${suffix}`]);
      if (value !== undefined) limits[key] = value;
    }
    const teamId = h["team-id"].value.trim();
    const member = h["team-member"].value.trim();
    await submitForm({
      button: h["team-save"],
      message: h["team-message"],
      form: h["team-form"],
      send: async () => {
        const saved = await this.api.setTeam({ teamId, limits });
        h["team-form-title"].textContent = `Edit team ${saved.teamId}`;
        if (!member) return `Saved team ${saved.teamId}.`;
        try {
          await this.api.setLimits({ userId: member, teamId: saved.teamId });
        } catch (error) {
          this.loadTeams(); // the team is saved
          error.ownMessage = `Saved team ${saved.teamId}, but the member was not added`;
          throw error;
        }
        h["team-member"].value = "";
        return `Saved team ${saved.teamId}; ${this.emails.get(member) ?? member} is a member.`;
      },
      after: () => this.loadTeams(),
      failed: "Not saved",
    });
  }

  // ---- prices ----

  async loadPrices() {
    const h = this.h;
    const current = this.pricesRequest.begin();
    setStatus(h["prices-status"], null, "loading", "Loading prices…");
    try {
      const { prices } = await this.api.listPrices();
      if (!current()) return;
      const per = (key) => ({
        key,
        label: { inputMTok: "Input /M", outputMTok: "Output /M", cacheReadMTok: "Cache read /M", cacheWriteMTok: "Cache write /M", cacheWrite1hMTok: "Cache write 1h /M", request: "Request" }[key],
        money: true,
        value: (row) => row.prices[key] ?? "",
      });
      fillTable(
        h["prices-table"],
        [
          { key: "provider", label: "Provider" },
          { key: "model", label: "Model" },
          { key: "effectiveFrom", label: "From" },
          per("inputMTok"),
          per("outputMTok"),
          per("cacheReadMTok"),
          per("cacheWriteMTok"),
          per("cacheWrite1hMTok"),
          per("request"),
          { key: "setAt", label: "Set", format: (v) => dateTime(v) },
        ],
        prices,
        { empty: "No prices set: steps with token counts are priced from genai-prices." },
      );
      setStatus(h["prices-status"], null, "ready");
    } catch (error) {
      if (!current()) return;
      showFailure(h["prices-status"], null, error, "Your account may not read prices.", "Could not load prices");
    }
  }

  prefillPrice(provider, model) {
    this.h["price-provider"].value = provider;
    this.h["price-model"].value = model;
    if (this.drillUser) {
      history.pushState(null, "", location.pathname + location.search);
      this.route();
    }
    this.h.prices.scrollIntoView({ block: "start" });
    this.h["price-input"].focus();
  }

  async savePrice() {
    const h = this.h;
    const message = h["price-message"];
    const prices = {};
    for (const [id, key] of [
      ["price-input", "inputMTok"],
      ["price-output", "outputMTok"],
      ["price-cache-read", "cacheReadMTok"],
      ["price-cache-write", "cacheWriteMTok"],
      ["price-cache-write-1h", "cacheWrite1hMTok"],
      ["price-request", "request"],
    ]) {
      const raw = h[id].value.trim();
      if (raw !== "") prices[key] = Number(raw);
    }
    message.classList.remove("error");
    if (Object.keys(prices).length === 0) {
      message.classList.add("error");
      message.dataset.state = "error";
      message.textContent = "Give at least one price.";
      return;
    }
    const data = { provider: h["price-provider"].value.trim(), model: h["price-model"].value.trim(), prices };
    if (h["price-from"].value) data.effectiveFrom = h["price-from"].value;
    await submitForm({
      button: h["price-save"],
      message,
      send: async () => {
        const saved = await this.api.setPrice(data);
        return `Added: ${saved.provider} / ${saved.model} from ${saved.effectiveFrom}.`;
      },
      after: async () => {
        for (const id of ["price-input", "price-output", "price-cache-read", "price-cache-write", "price-request"]) h[id].value = "";
        await this.loadPrices();
      },
      failed: "Not added",
    });
  }

  // ---- the CSV ----

  async exportCsv() {
    const h = this.h;
    const month = this.month();
    const status = h["export-status"];
    h["export-csv"].disabled = true;
    status.classList.remove("error");
    status.textContent = "Exporting…";
    try {
      const { text, users } = await exportMonthCsv(this.api.exportUsage, month, {
        onProgress: (n) => {
          status.textContent = `Exporting… ${count(n)} users`;
        },
      });
      const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
      const link = el("a", { href: url, download: `tally-usage-${month}.csv`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      status.dataset.value = String(users);
      status.textContent = `Exported ${count(users)} ${users === 1 ? "user" : "users"} of ${monthName(month)}.`;
    } catch (error) {
      status.classList.add("error");
      status.textContent = `Export failed: ${describeError(error).message}`;
    } finally {
      h["export-csv"].disabled = false;
    }
  }
}


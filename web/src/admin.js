// The admin page: the platform's month (usage_analytics), one user's month (my_usage with userId,
// their sessions and alerts, their limits), the price catalog, and the month's CSV export.
import { BarChart } from "./charts.js";
import { exportMonthCsv, userAlerts } from "./data.js";
import { Latest, breakable, describeError, el, fillTable, hooks, setNumber, setStatus, showFailure, submitForm } from "./dom.js";
import { ago, clock, count, dateTime, duration, monthName, monthShort, percent, plural, usd, usdExact } from "./format.js";
import { ALERT_COLUMNS, USAGE_COLUMNS, UserView } from "./userview.js";

const TOP_USERS = 10;

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
    fillTable(h["top-users"], [userColumn, ...USAGE_COLUMNS.slice(1)], result.topUsers, { empty: "No users this month." });
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
          label: "User",
          cell: (userId) => (userId ? this.userLink(userId, this.emails.get(userId)) : document.createTextNode("Platform budget")),
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
    this.daily.render(
      result.daily.map((d) => ({
        label: d.date,
        tick: String(Number(d.date.slice(8))),
        value: d.cost,
        calls: d.apiCalls,
        detail: `${count(d.apiCalls)} calls · ${count(d.billableRuns)} billable`,
      })),
      `${usd(totals.cost)} in ${monthName(result.month)}`,
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
    try {
      const [view, alerts] = await Promise.all([
        this.api.myUsage({ userId, month }),
        userAlerts(this.db, userId, month),
        this.userView.showSessions(userId, { reset: initial }),
      ]);
      if (!current()) return;
      this.userView.render(view);
      this.userView.setAlerts(alerts);
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


// The user page: a signed-in user's own month. my_usage gives the first answer; from then on the
// page listens to the user's own documents (TallyUsers/{uid}, TallyMonthlyUsage/{uid}_{month}, their
// alerts) and recomputes the same numbers whenever one changes, without a reload. Every limited
// scope (plans, days, features, the team) only my_usage resolves: after a change of the user's
// document it is asked again, at most once every SCOPES_DELAY ms; so is the month's forecast.
import { monthView, watchUser, watchUserAlerts, watchUserMonth } from "./data.js";
import { Latest, describeError, failureText, hooks, setStatus, showFailure } from "./dom.js";
import { clock, currentMonth, monthName } from "./format.js";
import { UserView } from "./userview.js";

const SCOPES_DELAY = 1500;

export class UserPage {
  constructor({ root, db, api, month }) {
    this.root = root;
    this.db = db;
    this.api = api;
    this.month = month;
    this.h = hooks(root);
    this.view = new UserView(this.h["user-content"], { db });
    this.request = new Latest();
    this.scopesRequest = new Latest();
    this.scopesTimer = null;
    this.unsubscribers = [];
    this.sessionsTimer = null;
  }

  start(user) {
    this.uid = user.uid;
    this.root.hidden = false;
    this.load();
  }

  stop() {
    this.root.hidden = true;
    this.request.cancel();
    this.#unwatch();
  }

  monthChanged() {
    this.load();
  }

  #unwatch() {
    for (const unsubscribe of this.unsubscribers) unsubscribe();
    this.unsubscribers = [];
    clearTimeout(this.sessionsTimer);
    clearTimeout(this.scopesTimer);
    this.scopesTimer = null;
    this.scopesRequest.cancel();
  }

  async load() {
    const h = this.h;
    const month = this.month();
    const uid = this.uid;
    const current = this.request.begin();
    this.#unwatch();
    this.live = { month, user: undefined, userMonth: undefined, defaults: null, monthWatched: false, changes: 0 };
    setStatus(h["user-status"], h["user-content"], "loading", `Loading your usage for ${monthName(month)}…`);
    this.setLive("connecting", "Connecting…");
    this.#watch(uid, month, current);
    this.view.showSessions(uid);
    const scopesLatest = this.scopesRequest.begin();
    try {
      const answer = await this.api.myUsage({ month });
      if (!current()) return;
      this.answer = answer;
      // A user without limits of their own has the defaults, which only the server knows.
      this.live.defaults = { costNanos: Math.round(answer.limits.monthlyCostLimit * 1e9), runs: answer.limits.monthlyFreeRuns };
      this.view.setForecast(answer); // only my_usage projects the month
      // The documents may already be newer than the answer: show them if they are in.
      if (!this.#recompute()) this.#show(answer);
      if (scopesLatest()) this.view.renderScopes(answer);
    } catch (error) {
      if (!current()) return;
      showFailure(
        h["user-status"],
        h["user-content"],
        error,
        "You are signed out or may not read this usage. Sign in again.",
        "Could not load your usage",
      );
    }
  }

  #show(view) {
    this.view.render(view);
    setStatus(
      this.h["user-status"],
      this.h["user-content"],
      view.apiCalls === 0 ? "empty" : "ready",
      `Nothing recorded in ${monthName(view.month)} yet. This page updates by itself as soon as something is.`,
    );
  }

  /** Show the month from the live documents, once both are in and the defaults are known. */
  #recompute() {
    const live = this.live;
    if (!live.defaults || live.user === undefined || live.userMonth === undefined) return false;
    this.#show(
      monthView({
        userId: this.uid,
        month: live.month,
        user: live.user,
        userMonth: live.userMonth,
        current: live.month === currentMonth(),
        defaults: live.defaults,
      }),
    );
    return true;
  }

  #watch(uid, month, current) {
    const failed = (what) => (error) => {
      if (!current()) return;
      this.setLive("offline", failureText(error, `Live updates of ${what} are not allowed.`, "Live updates stopped").text);
    };
    this.unsubscribers.push(
      watchUser(
        this.db,
        uid,
        (data) => {
          if (!current()) return;
          this.live.user = data;
          const monthFields = data?.usage?.months?.[month];
          // The month document can be read once it exists (the rules check its userId): listen again.
          if (!this.live.monthWatched && monthFields && Number(monthFields.apiCalls ?? 0) > 0) this.#watchMonth(uid, month, current);
          this.#recompute();
          this.setLive("live", `Live · updated ${clock(new Date())}`);
          this.#refreshSessionsSoon();
          if (++this.live.changes > 1) this.#refreshScopesSoon(month, current); // (the first is the document as loaded)
        },
        failed("your usage"),
      ),
    );
    this.#watchMonth(uid, month, current);
    this.unsubscribers.push(
      watchUserAlerts(
        this.db,
        uid,
        month,
        (rows) => current() && this.view.setAlerts(rows),
        (error) => current() && this.view.alertsFailed(error),
      ),
    );
  }

  #watchMonth(uid, month, current) {
    this.live.monthWatched = true;
    this.unsubscribers.push(
      watchUserMonth(
        this.db,
        uid,
        month,
        (data) => {
          if (!current()) return;
          this.live.userMonth = data;
          this.#recompute();
        },
        (error) => {
          if (!current()) return;
          // Before the user's first step of the month the document does not exist, and the rules
          // (which read its userId) refuse to show it: the month is empty until TallyUsers/{uid} says otherwise.
          if (describeError(error).denied) {
            this.live.monthWatched = false;
            if (this.live.userMonth === undefined) this.live.userMonth = {};
            this.#recompute();
          } else {
            this.setLive("offline", `Live updates stopped: ${describeError(error).message}`);
          }
        },
      ),
    );
  }

  #refreshSessionsSoon() {
    clearTimeout(this.sessionsTimer);
    this.sessionsTimer = setTimeout(() => this.view.showSessions(this.uid, { reset: false }), 400);
  }

  /** Ask my_usage for the scopes again, once for every change within SCOPES_DELAY ms. */
  #refreshScopesSoon(month, current) {
    if (this.scopesTimer !== null) return;
    this.scopesTimer = setTimeout(async () => {
      this.scopesTimer = null;
      const latest = this.scopesRequest.begin();
      try {
        const answer = await this.api.myUsage({ month });
        if (current() && latest()) {
          this.view.renderScopes(answer);
          this.view.setForecast(answer);
        }
      } catch {
        // The scopes shown stay; the next change asks again.
      }
    }, SCOPES_DELAY);
  }

  setLive(state, text) {
    this.h.live.dataset.state = state;
    this.h.live.textContent = text;
  }
}

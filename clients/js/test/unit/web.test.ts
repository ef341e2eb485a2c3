/** usageFromDocument: the live usage page's numbers from `TallyUsers/{uid}`, as my_usage computes them. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { currentMonth, usageFromDocument } from "../../src/web.js";

const MONTH = currentMonth();

test("a user's month, limits, holds, lifetime and sessions", () => {
  const data = {
    usage: {
      months: { [MONTH]: { costNanos: 4_100_000_000, apiCalls: 12, billableRuns: 3 }, "2020-01": { costNanos: 9 } },
      limits: { monthlyCostLimitNanos: 5_000_000_000, monthlyFreeRuns: 10 },
      held: { costNanos: 500_000_000, runs: 2 },
      lifetime: { costNanos: 7_000_000_001, apiCalls: 40, billableRuns: 9 },
      sessions: { active: 1, completed: 4 },
    },
  };

  const usage = usageFromDocument("user-1", data, MONTH);

  assert.deepEqual(usage, {
    uid: "user-1",
    month: MONTH,
    exists: true,
    cost: 4.1,
    costNanos: 4_100_000_000,
    apiCalls: 12,
    billableRuns: 3,
    limits: {
      monthlyCostLimit: 5,
      monthlyCostLimitNanos: 5_000_000_000,
      monthlyFreeRuns: 10,
      costRemaining: 0.4,
      freeRunsRemaining: 5,
      exceeded: false,
      warning: true,
    },
    held: { cost: 0.5, costNanos: 500_000_000, runs: 2 },
    lifetime: { cost: 7.000000001, costNanos: 7_000_000_001, apiCalls: 40, billableRuns: 9 },
    sessions: { active: 1, completed: 4 },
  });
});

test("a user without a document or limits gets zeros and the defaults ($5, 100 runs)", () => {
  const usage = usageFromDocument("user-2", undefined, MONTH);

  assert.equal(usage.exists, false);
  assert.deepEqual([usage.cost, usage.apiCalls, usage.billableRuns], [0, 0, 0]);
  assert.deepEqual([usage.limits.monthlyCostLimit, usage.limits.monthlyFreeRuns], [5, 100]);
  assert.deepEqual([usage.limits.exceeded, usage.limits.warning], [false, false]);
});

test("other defaults may be given; holds count only in the current month", () => {
  const data = { usage: { months: { "2020-01": { costNanos: 3_000_000_000, apiCalls: 1, billableRuns: 0 } }, held: { costNanos: 1, runs: 1 } } };

  const usage = usageFromDocument("user-3", data, "2020-01", { monthlyCostLimitNanos: 2_000_000_000, monthlyFreeRuns: 5 });

  assert.equal(usage.limits.exceeded, true);
  assert.equal(usage.limits.costRemaining, 0);
  assert.deepEqual(usage.held, { cost: 0, costNanos: 0, runs: 0 });
});

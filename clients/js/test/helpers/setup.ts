/** Per-test fixtures: a fake of Tally's functions and clients pointed at it, closed after the test. */

import type { TestContext } from "node:test";

import type { Tally, TallyOptions } from "../../src/index.js";
import type { Mode } from "../../src/types.js";
import { FakeTally } from "./fake-tally.js";

export interface Fixture {
  fake: FakeTally;
  tally: Tally;
  make<M extends Mode = "batched">(options?: Partial<TallyOptions<M>>): Tally<M>;
}

/** Start a fake and a client with no timer (tests flush explicitly); both end with the test. */
export async function setup(t: TestContext, options: Partial<TallyOptions> = {}): Promise<Fixture> {
  const fake = await FakeTally.start();
  const made: Tally<Mode>[] = [];
  const make = <M extends Mode = "batched">(more: Partial<TallyOptions<M>> = {}): Tally<M> => {
    const tally = fake.tally<M>(more);
    made.push(tally as unknown as Tally<Mode>);
    return tally;
  };
  const tally = make(options);
  t.after(async () => {
    for (const client of made) await client.close();
    await fake.close();
  });
  return { fake, tally, make };
}

/** Wait until `predicate()` holds (10 s at most). */
export async function waitFor(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Operation ids of steps. */
export function ids(steps: readonly Record<string, unknown>[]): string[] {
  return steps.map((step) => String(step["operationId"]));
}

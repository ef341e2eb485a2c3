/** Stand-ins for a provider SDK's resources whose helper methods go through the wrapper. */

import { proxy, type Wrapped } from "./recording.js";

type Method = (...args: unknown[]) => unknown;

/**
 * Return `proxy(target, overrides, wrapped)` whose `helpers` (those the SDK has) run with the
 * stand-in as `this`, so that the `this.create` or `this._client` they call are the overridden ones.
 */
export function resource<T extends object>(
  target: T,
  overrides: Record<string, () => unknown>,
  helpers: readonly string[],
  wrapped?: Wrapped<unknown>,
): T {
  const all = { ...overrides };
  for (const name of helpers) {
    const helper = (target as Record<string, unknown>)[name];
    if (typeof helper === "function") all[name] = () => (...args: unknown[]) => (helper as Method).apply(stand, args);
  }
  const stand = proxy(target, all, wrapped);
  return stand;
}

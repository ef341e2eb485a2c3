/** Close open clients when a Node process runs out of work (`beforeExit`), as Python's `atexit` does. */

import type { Logger } from "./log.js";

interface Closable {
  readonly pending: number;
  readonly logger: Logger;
  close(): Promise<void>;
}

interface ProcessLike {
  on(event: "beforeExit" | "exit", listener: () => void): unknown;
}

/** An open client: held weakly while idle (a client the app dropped is not kept alive for this), strongly while steps wait. */
interface Entry {
  ref: WeakRef<Closable>;
  held: Closable | undefined;
}

const open = new Set<Entry>();
let installed = false;

function each(visit: (client: Closable, entry: Entry) => void): void {
  for (const entry of [...open]) {
    const client = entry.held ?? entry.ref.deref();
    if (client === undefined) open.delete(entry);
    else visit(client, entry);
  }
}

/** The process ran out of work: close every open client (each forgets itself once its flush is over). */
function onBeforeExit(): void {
  each((client) => void client.close());
}

/** `process.exit()` skips `beforeExit`: say at error level what is lost (nothing async can run now). */
function onExit(): void {
  each((client) => {
    if (client.pending > 0) {
      client.logger.error(`tally: the process exited with ${client.pending} step(s) unsent; await tally.close() before process.exit()`);
    }
  });
}

/**
 * Close `client` when the process runs out of work (Node only; a no-op in browsers). Return how
 * the client says whether steps wait (then it is held strongly, so that a client the app dropped
 * still sends them), or undefined outside Node.
 */
export function closeAtExit(client: Closable): ((busy: boolean) => void) | undefined {
  const proc = (globalThis as { process?: Partial<ProcessLike> }).process;
  if (typeof proc?.on !== "function") return undefined;
  each(() => undefined); // forget collected clients
  const entry: Entry = { ref: new WeakRef(client), held: undefined };
  open.add(entry);
  if (!installed) {
    installed = true;
    // Top-level listeners: a closure made here would share (and keep alive) this call's `client`.
    proc.on("beforeExit", onBeforeExit);
    proc.on("exit", onExit);
  }
  return (busy) => {
    entry.held = busy ? client : undefined;
  };
}

/** Forget a closed client (once its last flush is over: `process.exit()` meanwhile still logs its steps). */
export function forgetAtExit(client: Closable): void {
  each((other, entry) => {
    if (other === client) open.delete(entry);
  });
}

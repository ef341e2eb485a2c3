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

/** Open clients, held weakly: a client the app dropped is not kept alive for this. */
const open = new Set<WeakRef<Closable>>();
let installed = false;

function each(visit: (client: Closable, ref: WeakRef<Closable>) => void): void {
  for (const ref of [...open]) {
    const client = ref.deref();
    if (client === undefined) open.delete(ref);
    else visit(client, ref);
  }
}

/** `process.exit()` skips `beforeExit`: say at error level what is lost (nothing async can run now). */
function onExit(): void {
  each((client) => {
    if (client.pending > 0) {
      client.logger.error(`tally: the process exited with ${client.pending} step(s) unsent; await tally.close() before process.exit()`);
    }
  });
}

/** Close `client` when the process runs out of work (Node only; a no-op in browsers). */
export function closeAtExit(client: Closable): void {
  const proc = (globalThis as { process?: Partial<ProcessLike> }).process;
  if (typeof proc?.on !== "function") return;
  each(() => undefined); // forget collected clients
  open.add(new WeakRef(client));
  if (!installed) {
    installed = true;
    proc.on("beforeExit", () =>
      each((client, ref) => {
        open.delete(ref);
        void client.close();
      }),
    );
    proc.on("exit", onExit);
  }
}

/** Forget a closed client. */
export function forgetAtExit(client: Closable): void {
  each((other, ref) => {
    if (other === client) open.delete(ref);
  });
}

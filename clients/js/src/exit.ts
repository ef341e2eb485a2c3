/** Close open clients when a Node process runs out of work (`beforeExit`), as Python's `atexit` does. */

interface Closable {
  close(): Promise<void>;
}

interface ProcessLike {
  on(event: "beforeExit", listener: () => void): unknown;
}

const open = new Set<Closable>();
let installed = false;

function onBeforeExit(): void {
  for (const client of [...open]) {
    open.delete(client);
    void client.close();
  }
}

/** Close `client` when the process runs out of work (Node only; a no-op in browsers). */
export function closeAtExit(client: Closable): void {
  const proc = (globalThis as { process?: Partial<ProcessLike> }).process;
  if (typeof proc?.on !== "function") return;
  open.add(client);
  if (!installed) {
    installed = true;
    proc.on("beforeExit", onBeforeExit);
  }
}

/** Forget a closed client. */
export function forgetAtExit(client: Closable): void {
  open.delete(client);
}

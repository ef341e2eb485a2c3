/** A logger that keeps what the client logs, for assertions. */

import type { Logger } from "../../src/index.js";

export class CaptureLogger implements Logger {
  readonly lines: { level: "error" | "warn" | "info"; message: string }[] = [];

  error(message: string): void {
    this.lines.push({ level: "error", message });
  }

  warn(message: string): void {
    this.lines.push({ level: "warn", message });
  }

  info(message: string): void {
    this.lines.push({ level: "info", message });
  }

  /** The messages logged at `level`. */
  at(level: "error" | "warn" | "info"): string[] {
    return this.lines.filter((line) => line.level === level).map((line) => line.message);
  }
}

/** The CaptureLogger of a client made by FakeTally.tally(). */
export function logsOf(tally: { logger: Logger }): CaptureLogger {
  return tally.logger as CaptureLogger;
}

/** Where the client logs: any object with `error`, `warn` and `info` (the console by default, info silent). */

/** A logger the client writes to (`console` fits). */
export interface Logger {
  error(message: string, ...rest: unknown[]): void;
  warn(message: string, ...rest: unknown[]): void;
  info(message: string, ...rest: unknown[]): void;
}

/** The default logger: errors and warnings on the console, info dropped. */
export const defaultLogger: Logger = {
  error: (message, ...rest) => console.error(message, ...rest),
  warn: (message, ...rest) => console.warn(message, ...rest),
  info: () => undefined,
};

/** A structured logger; pino's shape, so a pino instance can be passed as is. */
export interface Logger {
  debug(object: object, message?: string): void;
  info(object: object, message?: string): void;
  warn(object: object, message?: string): void;
  error(object: object, message?: string): void;
}

const noop = () => {};

/** The library's default: silent. The CLI logs with pino. */
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

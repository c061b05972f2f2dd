/**
 * A request the server refuses, with the HTTP status and the `{ error, message }` body to answer. Internal to the
 * reference server: it never leaves a route handler.
 */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

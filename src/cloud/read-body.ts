import type { IncomingMessage } from 'node:http';
import { gunzipSync } from 'node:zlib';

/** A request body the server will not take, with the HTTP status to answer. */
export class BodyError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
  ) {
    super(message);
    this.name = 'BodyError';
  }
}

/** The bounds of one body. */
export interface BodyLimits {
  /** Largest body on the wire, in bytes. */
  maxBytes: number;
  /** Largest body once inflated, in bytes. */
  maxInflatedBytes: number;
  /** Longest wait for the next bytes of a body, in ms, before answering 408. */
  idleTimeoutMs: number;
}

/** Reads the raw bytes: at most `maxBytes`, each chunk within `idleTimeoutMs` of the last. */
function collect(request: IncomingMessage, maxBytes: number, idleTimeoutMs: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let timer: NodeJS.Timeout | undefined;
    const done = (error: BodyError | undefined) => {
      clearTimeout(timer);
      request.off('data', onData);
      request.off('end', onEnd);
      request.off('error', onError);
      request.off('close', onClose);
      if (error) {
        // Nothing more of this body is read; the answer says why and the connection closes after it.
        request.pause();
        reject(error);
      } else resolve(Buffer.concat(chunks, size));
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => done(new BodyError(408, 'body_timeout', `no bytes of the body arrived for ${idleTimeoutMs} ms`)),
        idleTimeoutMs,
      );
      timer.unref();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        done(new BodyError(413, 'payload_too_large', `the body exceeds ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
      arm();
    };
    const onEnd = () => done(undefined);
    const onError = () => done(new BodyError(400, 'bad_request', 'the body could not be read'));
    const onClose = () => done(new BodyError(400, 'bad_request', 'the client went away during the body'));
    request.on('data', onData);
    request.on('end', onEnd);
    request.on('error', onError);
    request.on('close', onClose);
    arm();
  });
}

/**
 * Reads a request body of at most `maxBytes` on the wire and, if gzip'd, at most `maxInflatedBytes` once inflated.
 * A body past either bound costs no more memory than the bound: reading stops, and inflation stops at its limit
 * (which also defeats gzip bombs). A client that stops sending for `idleTimeoutMs` is answered 408.
 */
export async function readBody(request: IncomingMessage, limits: BodyLimits): Promise<Buffer> {
  const { maxBytes, maxInflatedBytes, idleTimeoutMs } = limits;
  const encoding = (request.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== 'gzip') {
    throw new BodyError(
      415,
      'unsupported_encoding',
      `content-encoding ${encoding.slice(0, 64)} is not supported; use gzip or none`,
    );
  }
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new BodyError(413, 'payload_too_large', `the body is ${declared} bytes; at most ${maxBytes} are accepted`);
  }
  const raw = await collect(request, maxBytes, idleTimeoutMs);
  if (encoding === 'identity') return raw;
  try {
    return gunzipSync(raw, { maxOutputLength: maxInflatedBytes });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) {
      throw new BodyError(413, 'payload_too_large', `the body inflates past ${maxInflatedBytes} bytes`);
    }
    throw new BodyError(400, 'bad_encoding', `the body is not valid gzip: ${(error as Error).message}`);
  }
}

/**
 * Lets the rest of a body the server will not read go by, so that the answer can be read on a kept-alive
 * connection; past `maxBytes` the connection is closed instead. The request timeout bounds the time it takes.
 */
export function discardBody(request: IncomingMessage, maxBytes: number): void {
  if (request.readableEnded || request.destroyed) return;
  let size = 0;
  request.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxBytes) request.destroy();
  });
  request.on('error', () => undefined);
  request.resume();
}

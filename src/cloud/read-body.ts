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

/**
 * Reads a request body of at most `maxBytes` on the wire and, if gzip'd, at most `maxInflatedBytes` once inflated.
 * A body past either bound costs no more memory than the bound: reading stops, and inflation stops at its limit
 * (which also defeats gzip bombs).
 */
export async function readBody(request: IncomingMessage, maxBytes: number, maxInflatedBytes: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new BodyError(413, 'payload_too_large', `the body is ${declared} bytes; at most ${maxBytes} are accepted`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      throw new BodyError(413, 'payload_too_large', `the body exceeds ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks, size);
  const encoding = (request.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding === 'identity') return raw;
  if (encoding !== 'gzip') {
    throw new BodyError(415, 'unsupported_encoding', `content-encoding ${encoding} is not supported; use gzip or none`);
  }
  try {
    return gunzipSync(raw, { maxOutputLength: maxInflatedBytes });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) {
      throw new BodyError(413, 'payload_too_large', `the body inflates past ${maxInflatedBytes} bytes`);
    }
    throw new BodyError(400, 'bad_encoding', `the body is not valid gzip: ${(error as Error).message}`);
  }
}

/**
 * The entry point of an encoder thread (see {@link EncoderPool}): encodes batches with the very code the event loop
 * would run, so that a batch encoded here is byte for byte the batch encoded inline. Built as an entry of its own
 * (dist/encode-worker.js and .cjs), next to the chunks that start it.
 */
import { parentPort } from 'node:worker_threads';
import { encodeBatch } from './batch-codec.js';
import type { EncodeReply, EncodeRequest } from './encoder-pool.js';

const port = parentPort;
if (!port) throw new Error('encode-worker runs as a worker thread, started by EncoderPool');

port.on('message', (request: EncodeRequest) => {
  let reply: EncodeReply;
  try {
    const input = encodeBatch(request.header, request.batchNo, request.rows, request.compression, request.format);
    // Its own buffer, so that it can be transferred rather than copied (a pooled Buffer's cannot be).
    const body = new Uint8Array(input.body);
    reply = { id: request.id, input: { ...input, body } };
    port.postMessage(reply, [body.buffer]);
  } catch (error) {
    const { name, message } = error instanceof Error ? error : new Error(String(error));
    reply = { id: request.id, error: { name, message } };
    port.postMessage(reply);
  }
});

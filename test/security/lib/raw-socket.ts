import { connect, type Socket } from 'node:net';
import { defer } from '../../helpers/cleanup.js';

/** A raw TCP client: what it received, and when the server closed the connection. */
export interface RawClient {
  socket: Socket;
  /** Everything the server sent, as text. */
  received(): string;
  /** Resolves with the ms from connecting until the server ended or reset the connection. */
  closed: Promise<number>;
  /** Writes `text` one piece at a time, every `everyMs`, until the connection closes or `stop()`. */
  trickle(text: string, everyMs: number, pieceBytes?: number): void;
  stop(): void;
}

/** Opens a raw connection to 127.0.0.1:`port`; destroyed after the current test. */
export async function rawClient(port: number): Promise<RawClient> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const started = performance.now();
  let text = '';
  let timer: NodeJS.Timeout | undefined;
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
  });
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now() - started)));
  const stop = () => clearInterval(timer);
  closed.then(stop, stop);
  defer(() => {
    stop();
    socket.destroy();
  });
  return {
    socket,
    received: () => text,
    closed,
    trickle(data, everyMs, pieceBytes = 1) {
      let at = 0;
      timer = setInterval(() => {
        if (at >= data.length || socket.destroyed) return stop();
        socket.write(data.slice(at, at + pieceBytes));
        at += pieceBytes;
      }, everyMs);
    },
    stop,
  };
}

/** The status code of the first HTTP answer in `text`, or undefined. */
export const statusOf = (text: string): number | undefined => {
  const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return match ? Number(match[1]) : undefined;
};

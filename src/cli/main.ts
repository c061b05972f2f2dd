#!/usr/bin/env node
import { runCli } from './cli.js';

/** Once the command is done, a handle left open (a socket, a timer) must not keep the process from exiting. */
const EXIT_GRACE_MS = 2000;

runCli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(), EXIT_GRACE_MS).unref();
  },
  (error: unknown) => {
    process.stderr.write(`${String((error as Error).stack ?? error)}\n`);
    process.exitCode = 1;
  },
);

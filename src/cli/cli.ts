import { parseArgs } from 'node:util';
import { CloudServer } from '../cloud/cloud-server.js';
import { isEdgeGatewayError } from '../errors.js';
import { EdgeGateway } from '../gateway/edge-gateway.js';
import { SqliteStorage } from '../storage/sqlite-storage.js';
import { gatewayOptionsFrom, ignoredVariables, loadEnv, parseEnvConfig } from './env-config.js';
import { createLogger } from './logger.js';

export const USAGE = `edge-gateway: offline-first edge gateway

Usage:
  edge-gateway [start] [--env FILE]     run the gateway as a daemon, configured by .env and the environment
  edge-gateway --init-db [--env FILE]   create (or migrate) the local database at LOCAL_DB_PATH, then exit
  edge-gateway cloud [--port N] [--host H] [--db FILE | --redis URL] [--api-key KEY ...]
                                        run the reference cloud server (on SQLite, or on a
                                        Redis shared with other server nodes)
  edge-gateway demo                     store-and-forward through an outage, end to end, in ~20 s
  edge-gateway --help | --version

Configuration: the variables of .env.example (DEVICE_ID, LOCAL_DB_PATH, CLOUD_API_URL, CLOUD_API_KEY, ...).
A variable set in the environment wins over the file.`;

/** Where the CLI writes; replaced in tests. */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  /** Resolves when the process is asked to stop (SIGINT, SIGTERM). */
  untilSignal(): Promise<string>;
}

export const processIo: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  untilSignal: () =>
    new Promise((resolve) => {
      const on = (signal: string) => {
        process.off('SIGINT', on);
        process.off('SIGTERM', on);
        resolve(signal);
      };
      process.on('SIGINT', on);
      process.on('SIGTERM', on);
    }),
};

/** Runs the CLI; resolves with the exit code. */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    io.err(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const command = positionals[0] ?? 'start';
  try {
    if (values.help) {
      io.out(USAGE);
      return 0;
    }
    if (values.version) {
      io.out(await version());
      return 0;
    }
    if (values['init-db']) return initDb(values.env, io);
    switch (command) {
      case 'start':
        return await start(values.env, io);
      case 'cloud':
        return await cloud(values, io);
      case 'demo': {
        const { runDemo } = await import('./demo.js');
        return await runDemo(io);
      }
      default:
        io.err(`Unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (error) {
    io.err(isEdgeGatewayError(error) ? error.message : String((error as Error).stack ?? error));
    return 1;
  }
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      env: { type: 'string', default: '.env' },
      'init-db': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      port: { type: 'string' },
      host: { type: 'string' },
      db: { type: 'string' },
      redis: { type: 'string' },
      'api-key': { type: 'string', multiple: true },
    },
  });
}

async function version(): Promise<string> {
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
  for (const candidate of ['../../package.json', '../package.json']) {
    try {
      return (require(candidate) as { version: string }).version;
    } catch {
      // try the next layout (source tree, or the built dist/)
    }
  }
  return 'unknown';
}

function initDb(envPath: string | undefined, io: CliIo): number {
  const config = parseEnvConfig(loadEnv(envPath));
  const storage = new SqliteStorage({ path: config.LOCAL_DB_PATH });
  storage.open();
  io.out(
    `Local database ready at ${config.LOCAL_DB_PATH} (replica ${storage.replicaId}, ${storage.pendingCount()} reading(s) queued)`,
  );
  storage.close();
  return 0;
}

async function start(envPath: string | undefined, io: CliIo): Promise<number> {
  const config = parseEnvConfig(loadEnv(envPath));
  const logger = createLogger(config.LOG_LEVEL, config.LOG_FILE);
  for (const name of ignoredVariables(config)) {
    logger.warn({ variable: name }, `${name} is accepted but has no effect in this version`);
  }
  if (!config.CLOUD_API_URL) logger.warn({}, 'CLOUD_API_URL is not set: readings are stored locally and not forwarded');
  const gateway = new EdgeGateway({ ...gatewayOptionsFrom(config), logger });
  gateway.on('sync-error', (event) => logger.warn({ ...event }, `sync failed: ${event.message}`));
  gateway.on('dropped', (event) => logger.warn({ ...event }, `readings dropped: ${event.message}`));
  gateway.on('error', (error) => logger.error({ err: error }, error.message));
  await gateway.start();
  io.out(`edge-gateway ${config.DEVICE_ID} running; database ${config.LOCAL_DB_PATH}; Ctrl-C to stop`);
  // Not unref'd: the library's timers are, and this one is what keeps the daemon alive until a signal.
  const timer = setInterval(() => {
    const health = gateway.healthCheck();
    logger.info({ ...health }, `health ${health.status}`);
  }, 60_000);
  const signal = await io.untilSignal();
  clearInterval(timer);
  logger.info({ signal }, 'stopping');
  await gateway.stop();
  io.out('edge-gateway stopped');
  return 0;
}

async function cloud(values: ReturnType<typeof parse>['values'], io: CliIo): Promise<number> {
  const port = values.port === undefined ? 8080 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    io.err(`Expected --port to be an integer from 0 to 65535, got ${JSON.stringify(values.port)}`);
    return 2;
  }
  const apiKeys = values['api-key'] ?? (process.env.CLOUD_API_KEY ? [process.env.CLOUD_API_KEY] : []);
  if (apiKeys.length === 0) {
    io.err('Give at least one --api-key (or CLOUD_API_KEY): the cloud server does not run open');
    return 2;
  }
  if (values.redis !== undefined && values.db !== undefined) {
    io.err('Give either --db or --redis: one store per server');
    return 2;
  }
  const server = await CloudServer.listen({
    port,
    host: values.host ?? '127.0.0.1',
    ...(values.redis === undefined ? { dbPath: values.db ?? './data/cloud.db' } : { redisUrl: values.redis }),
    apiKeys,
  });
  const where = values.redis === undefined ? (values.db ?? './data/cloud.db') : 'Redis';
  io.out(`edge-gateway cloud listening at ${server.url} (store: ${where})`);
  await io.untilSignal();
  await server.close();
  return 0;
}

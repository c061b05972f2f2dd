import { parseArgs } from 'node:util';
import { ConfigError, isConfigError, isEdgeGatewayError } from '../errors.js';
import { EdgeGateway } from '../gateway/edge-gateway.js';
import type { GatewayHttpServer } from '../ops/http-server.js';
import { SqliteStorage } from '../storage/sqlite-storage.js';
import type { CloudAccess } from './cloud-config.js';
import {
  databaseOptionsFrom,
  gatewayOptionsFrom,
  httpOptionsFrom,
  ignoredVariables,
  loadEnv,
  parseEnvConfig,
} from './env-config.js';
import type { LoadTestOptions } from './load-test.js';
import { createLogger } from './logger.js';

export const USAGE = `edge-gateway: offline-first edge gateway

Usage:
  edge-gateway [start] [--env FILE]     run the gateway as a daemon, configured by .env and the environment;
                                        serves /health, /metrics and POST /api/v1/data on 127.0.0.1:8000
  edge-gateway status [--url URL] [--json] [--env FILE]
                                        print a running gateway's health (GET /health) as a table
  edge-gateway load-test --duration=SECONDS --rate=READINGS_PER_SECOND [--url URL] [--batch N]
                         [--concurrency N] [--json]
                                        drive a running gateway (--url) or an in-process one, then summarize
  edge-gateway --init-db [--env FILE]   create (or migrate) the local database at LOCAL_DB_PATH, then exit
  edge-gateway cloud [--port N] [--host H] [--db FILE | --redis URL] [--api-key KEY ...] [--keys-file FILE]
                     [--rate-limit RPS] [--rate-burst N]
                                        run the reference cloud server, on SQLite or on a Redis shared
                                        with other server nodes (keys: docs/security.md)
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
      case 'status': {
        const { localUrl, runStatus } = await import('./status.js');
        return await runStatus(values.url ?? localUrl(loadEnv(values.env)), values.json === true, io);
      }
      case 'load-test':
        return await loadTest(values, io);
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
      url: { type: 'string' },
      json: { type: 'boolean' },
      duration: { type: 'string' },
      rate: { type: 'string' },
      batch: { type: 'string' },
      concurrency: { type: 'string' },
      'keys-file': { type: 'string' },
      'rate-limit': { type: 'string' },
      'rate-burst': { type: 'string' },
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
  const { encryptionKey, previousEncryptionKeys } = databaseOptionsFrom(config);
  const storage = new SqliteStorage({ path: config.LOCAL_DB_PATH, encryptionKey, previousEncryptionKeys });
  storage.open();
  io.out(
    `Local database ready at ${config.LOCAL_DB_PATH} (replica ${storage.replicaId}, ${storage.pendingCount()} reading(s) queued)`,
  );
  storage.close();
  return 0;
}

/** Seconds the daemon allows itself beyond `stopTimeout` to close its HTTP server and database on a signal. */
const SHUTDOWN_MARGIN_SECONDS = 5;
/** Seconds the HTTP server waits for requests in flight when the daemon stops. */
const HTTP_CLOSE_SECONDS = 2;

async function start(envPath: string | undefined, io: CliIo): Promise<number> {
  const config = parseEnvConfig(loadEnv(envPath));
  const options = gatewayOptionsFrom(config);
  const dbKey = typeof options.encryptionKey === 'string' ? options.encryptionKey : undefined;
  const logger = createLogger(config.LOG_LEVEL, config.LOG_FILE, [
    config.CLOUD_API_KEY,
    config.INGEST_TOKEN,
    dbKey,
    config.EDGE_DB_PREVIOUS_KEY,
  ]);
  for (const name of ignoredVariables(config)) {
    logger.warn({ variable: name }, `${name} is accepted but has no effect in this version`);
  }
  if (!config.CLOUD_API_URL) logger.warn({}, 'CLOUD_API_URL is not set: readings are stored locally and not forwarded');
  const gateway = new EdgeGateway({ ...options, logger, metrics: true });
  gateway.on('sync-error', (event) => logger.warn({ ...event }, `sync failed: ${event.message}`));
  gateway.on('dropped', (event) => logger.warn({ ...event }, `readings dropped: ${event.message}`));
  gateway.on('error', (error) => logger.error({ err: error }, error.message));
  await gateway.start();
  let server: GatewayHttpServer | undefined;
  const http = httpOptionsFrom(config);
  if (http) {
    try {
      const { collectDefaultMetrics } = await import('prom-client');
      collectDefaultMetrics({ register: await gateway.metricsRegistry() });
      server = await gateway.serveHttp({ ...http, closeTimeout: HTTP_CLOSE_SECONDS });
    } catch (error) {
      await gateway.stop();
      if (!isConfigError(error)) throw error;
      const hint = 'choose another with HTTP_HOST and HTTP_PORT, or set HTTP_ENABLED=false';
      throw new ConfigError(
        error.issues.map((issue) => `${issue}; ${hint}`),
        { cause: error },
      );
    }
    logger.info({ url: server.url }, `serving /health, /metrics and POST /api/v1/data at ${server.url}`);
  }
  io.out(
    `edge-gateway ${config.DEVICE_ID} running; database ${config.LOCAL_DB_PATH}${server ? `; serving ${server.url}` : ''}; Ctrl-C to stop`,
  );
  // Not unref'd: the library's timers are, and this one is what keeps the daemon alive until a signal.
  const timer = setInterval(() => {
    const health = gateway.healthCheck();
    logger.info({ ...health }, `health ${health.status}`);
  }, 60_000);
  const signal = await io.untilSignal();
  clearInterval(timer);
  const deadlineSeconds = gateway.options.stopTimeout + SHUTDOWN_MARGIN_SECONDS;
  logger.info({ signal, deadlineSeconds }, 'stopping');
  // Intake first (requests in flight are answered), then the gateway: it sends what it can within stopTimeout.
  const stopped = (async () => {
    await server?.close();
    await gateway.stop();
  })();
  let expire: NodeJS.Timeout | undefined;
  // Not unref'd either: a stop that hangs on nothing must still end in the exit code that says so.
  const expired = new Promise<false>((resolve) => {
    expire = setTimeout(() => resolve(false), deadlineSeconds * 1000);
  });
  const clean = await Promise.race([stopped.then(() => true), expired]);
  clearTimeout(expire);
  if (!clean) {
    logger.error({ deadlineSeconds }, `did not stop within ${deadlineSeconds} s; exiting anyway`);
    io.err(`edge-gateway did not stop within ${deadlineSeconds} s; exiting anyway (what was accepted is on disk)`);
    return 1;
  }
  io.out('edge-gateway stopped');
  return 0;
}

/** A positive number from a flag, within bounds, or a ConfigError naming the flag. */
function flag(
  values: ReturnType<typeof parse>['values'],
  name: 'duration' | 'rate' | 'batch' | 'concurrency',
  fallback: number,
  max: number,
  integer: boolean,
): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || value > max || (integer && !Number.isInteger(value))) {
    throw new ConfigError([
      `Expected --${name} to be a positive ${integer ? 'integer' : 'number'} up to ${max}, got ${JSON.stringify(raw)}`,
    ]);
  }
  return value;
}

async function loadTest(values: ReturnType<typeof parse>['values'], io: CliIo): Promise<number> {
  let options: LoadTestOptions;
  try {
    options = {
      duration: flag(values, 'duration', 10, 86_400, false),
      rate: flag(values, 'rate', 100, 1_000_000, false),
      batch: flag(values, 'batch', 1, 10_000, true),
      concurrency: flag(values, 'concurrency', 32, 1024, true),
      url: values.url,
      token: values.url === undefined ? undefined : loadEnv(values.env).INGEST_TOKEN,
    };
    if (values.url !== undefined) {
      const { checkLoopback } = await import('./load-test.js');
      checkLoopback(values.url);
    }
  } catch (error) {
    if (!isConfigError(error)) throw error;
    io.err(error.issues.join('\n'));
    return 2;
  }
  const { loadTestCommand } = await import('./load-test.js');
  return loadTestCommand(options, values.json === true, io);
}

async function cloud(values: ReturnType<typeof parse>['values'], io: CliIo): Promise<number> {
  const port = values.port === undefined ? 8080 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    io.err(`Expected --port to be an integer from 0 to 65535, got ${JSON.stringify(values.port)}`);
    return 2;
  }
  // The reference server loads only for this command: the daemon (`start`) does not carry it, nor classic zod.
  const [{ CloudServer }, { cloudAccessFrom }] = await Promise.all([
    import('../cloud/cloud-server.js'),
    import('./cloud-config.js'),
  ]);
  let access: CloudAccess;
  try {
    access = cloudAccessFrom(values, process.env);
  } catch (error) {
    if (!isConfigError(error)) throw error;
    io.err(error.issues.join('\n'));
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
    apiKeys: access.apiKeys,
    ...(access.rateLimit ? { rateLimit: access.rateLimit } : {}),
    logger: createLogger(access.logLevel),
  });
  const where = values.redis === undefined ? (values.db ?? './data/cloud.db') : 'Redis';
  io.out(`edge-gateway cloud listening at ${server.url} (store: ${where})`);
  await io.untilSignal();
  await server.close();
  return 0;
}

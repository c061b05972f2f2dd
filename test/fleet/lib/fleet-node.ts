/**
 * One reference cloud server node of the fleet, in a process of its own: `node --import tsx fleet-node.ts <redisUrl>
 * <port> <apiKey>`. It listens on 127.0.0.1:<port> over the Redis store, prints `listening <url>`, and exits when its
 * stdin closes (so that it never outlives the fleet), or dies by the SIGKILL the fleet sends it.
 */
import { CloudServer } from '../../../src/cloud/index.js';

const [redisUrl, port, apiKey] = process.argv.slice(2);
if (!redisUrl || !port || !apiKey) {
  process.stderr.write('usage: fleet-node.ts <redisUrl> <port> <apiKey>\n');
  process.exit(64);
}

const server = await CloudServer.listen({ port: Number(port), host: '127.0.0.1', redisUrl, apiKeys: [apiKey] });
process.stdout.write(`listening ${server.url}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  void server.close().then(() => process.exit(0));
});

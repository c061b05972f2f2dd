import { forward, startTestServer } from '../../helpers/http.js';

/** A switch between a gateway and its cloud: closed, every connection is reset, as if the cloud were unreachable. */
export interface CloudGate {
  /** Base URL to pass as `cloudUrl`. */
  url: string;
  /** Whether requests get through. */
  open: boolean;
  /** Requests that arrived, through or not. */
  readonly requests: number;
  /** Batch posts that arrived, through or not. */
  readonly batches: number;
  /**
   * Probes that arrived, through or not: `GET /health`, and `GET /records/pull`, which an idle cycle sends instead
   * when a records pull is due (its answer tells the loop the cloud is there just as well).
   */
  readonly pings: number;
}

/**
 * An HTTP gate on 127.0.0.1 in front of the cloud at `cloudUrl` (its `/api/v1` base): open, it forwards each
 * request and relays the answer; shut, it resets the connection without answering. Closed after the current test.
 * Unlike `gateway.configure({ cloudUrl })`, flipping it leaves the gateway's own backoff and reconnection to do
 * the recovering.
 */
export async function startCloudGate(cloudUrl: string, open = true): Promise<CloudGate> {
  let requests = 0;
  let batches = 0;
  let pings = 0;
  const gate = {
    url: '',
    open,
    get requests() {
      return requests;
    },
    get batches() {
      return batches;
    },
    get pings() {
      return pings;
    },
  };
  const server = await startTestServer(async (request, response) => {
    requests++;
    if (request.method === 'POST' && request.url.endsWith('/telemetry/batches')) batches++;
    if (request.method === 'GET' && (request.url.endsWith('/health') || request.url.includes('/records/pull'))) {
      pings++;
    }
    if (!gate.open) {
      response.socket?.destroy();
      return;
    }
    await forward(request, response, cloudUrl);
  });
  // The test server keeps every request it saw, bodies included: fine for the few thousand a chaos trial makes.
  gate.url = server.url;
  return gate;
}

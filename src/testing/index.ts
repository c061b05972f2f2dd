/**
 * Helpers for host applications' own tests: `import { MemoryTransport, startCloudServer } from 'edge-gateway/testing'`.
 *
 * @packageDocumentation
 */

export type { MemoryTransportResponder, RecordedBatch } from './memory-transport.js';
export { MemoryTransport } from './memory-transport.js';
export type { ThrowawayCloud } from './start-cloud-server.js';
export { startCloudServer } from './start-cloud-server.js';

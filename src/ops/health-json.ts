import type { HealthStatus } from '../gateway/status.js';

/**
 * The health check as `GET /health` answers it: the seed's JSON, field for field, in snake_case, plus `reasons`.
 *
 * @example
 * ```json
 * { "status": "healthy", "device_id": "edge-gateway-001", "is_online": true, "pending_sync_count": 42,
 *   "last_sync": "2025-10-09T10:30:00.000Z", "uptime_seconds": 86400, "local_storage_mb": 125.5,
 *   "cpu_percent": 15.2, "memory_mb": 89.1, "reasons": [] }
 * ```
 */
export interface HealthJson {
  status: HealthStatus['status'];
  device_id: string;
  is_online: boolean;
  pending_sync_count: number;
  /** ISO-8601, or null before the first acknowledgement. */
  last_sync: string | null;
  uptime_seconds: number;
  local_storage_mb: number;
  cpu_percent: number;
  memory_mb: number;
  reasons: string[];
}

/** The health check in the JSON shape of `GET /health`. */
export function toHealthJson(health: HealthStatus): HealthJson {
  return {
    status: health.status,
    device_id: health.deviceId,
    is_online: health.isOnline,
    pending_sync_count: health.pendingSyncCount,
    last_sync: health.lastSync === null ? null : health.lastSync.toISOString(),
    uptime_seconds: health.uptimeSeconds,
    local_storage_mb: health.localStorageMb,
    cpu_percent: health.cpuPercent,
    memory_mb: health.memoryMb,
    reasons: [...health.reasons],
  };
}

import type { Database } from 'better-sqlite3-multiple-ciphers';
import type {
  AggregateInsert,
  AlertInsert,
  HistoryRow,
  OutboxInsert,
  SeriesRange,
  StateWrite,
  StoredAlert,
  StoredAlertQuery,
} from './storage.js';

interface RawAlert {
  id: number;
  source: string;
  sensor_id: string;
  severity: StoredAlert['severity'];
  message: string;
  ts: number;
  last_ts: number;
  count: number;
}

interface RawAggregate {
  source: string;
  sensor_id: string;
  tags: string | null;
  unit: string | null;
  window_start: number;
  window_ms: number;
  count: number;
  min: number;
  max: number;
  sum: number;
  mean: number;
  m2: number;
  first: number;
  first_ts: number;
  last: number;
  last_ts: number;
}

const toAlert = (raw: RawAlert): StoredAlert => ({
  id: raw.id,
  source: raw.source,
  sensorId: raw.sensor_id,
  severity: raw.severity,
  message: raw.message,
  ts: raw.ts,
  lastTs: raw.last_ts,
  count: raw.count,
});

const toAggregate = (raw: RawAggregate): AggregateInsert => ({
  source: raw.source,
  sensorId: raw.sensor_id,
  tags: raw.tags,
  unit: raw.unit,
  windowStart: raw.window_start,
  windowMs: raw.window_ms,
  count: raw.count,
  min: raw.min,
  max: raw.max,
  sum: raw.sum,
  mean: raw.mean,
  m2: raw.m2,
  first: raw.first,
  firstTs: raw.first_ts,
  last: raw.last,
  lastTs: raw.last_ts,
});

/**
 * The tables of local stream processing (alerts, processor state, aggregates, raw history), with their statements
 * prepared once. Writers run inside the caller's transaction; every table is bounded by count, trimmed from its
 * oldest row (an id range delete, which costs about what the inserts did).
 * @internal
 */
export class LocalTables {
  readonly #s;

  constructor(db: Database) {
    this.#s = {
      findAlert: db.prepare(
        `SELECT id FROM alerts WHERE sensor_id = ? AND source = ? AND message = ? AND ts > ? AND ts < ?
         ORDER BY ts DESC LIMIT 1`,
      ),
      countAlert: db.prepare('UPDATE alerts SET count = count + 1, last_ts = max(last_ts, ?) WHERE id = ?'),
      insertAlert: db.prepare(
        `INSERT INTO alerts (source, sensor_id, severity, message, ts, last_ts, count, created_at)
         VALUES (?, ?, ?, ?, ?, ?, 1, ?)`,
      ),
      trimAlerts: db.prepare('DELETE FROM alerts WHERE id <= (SELECT max(id) FROM alerts) - ?'),
      insertAggregate: db.prepare(
        `INSERT INTO aggregates (source, sensor_id, tags, unit, window_start, window_ms, count, min, max, sum, mean, m2,
           first, first_ts, last, last_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      trimAggregates: db.prepare('DELETE FROM aggregates WHERE id <= (SELECT max(id) FROM aggregates) - ?'),
      insertHistory: db.prepare('INSERT INTO history (sensor_id, ts, value, unit, tags) VALUES (?, ?, ?, ?, ?)'),
      trimHistory: db.prepare('DELETE FROM history WHERE id <= (SELECT max(id) FROM history) - ?'),
      putState: db.prepare(
        `INSERT INTO processor_state (processor, key, value) VALUES (?, ?, ?)
         ON CONFLICT (processor, key) DO UPDATE SET value = excluded.value`,
      ),
      deleteState: db.prepare('DELETE FROM processor_state WHERE processor = ? AND key = ?'),
      state: db.prepare('SELECT key, value FROM processor_state WHERE processor = ?').raw(),
      aggregates: db.prepare(
        `SELECT * FROM aggregates WHERE sensor_id = ? AND window_start >= ? AND window_start < ?
         ORDER BY window_start, id LIMIT ?`,
      ),
      history: db.prepare(
        'SELECT sensor_id, ts, value, unit, tags FROM history WHERE sensor_id = ? AND ts >= ? AND ts < ? ORDER BY ts, id LIMIT ?',
      ),
    };
  }

  /**
   * Stores alerts, counting a repeat (same sensor, source and message within `windowMs` of a stored alert) into
   * that alert instead; `queue` puts a new alert's payload in the outbox. Returns the new alerts.
   */
  storeAlerts(
    alerts: readonly AlertInsert[],
    windowMs: number,
    max: number,
    queue: (row: OutboxInsert) => void,
  ): StoredAlert[] {
    const raised: StoredAlert[] = [];
    if (alerts.length === 0) return raised;
    const now = Date.now();
    for (const alert of alerts) {
      if (windowMs > 0) {
        const found = this.#s.findAlert.get(
          alert.sensorId,
          alert.source,
          alert.message,
          alert.ts - windowMs,
          alert.ts + windowMs,
        ) as { id: number } | undefined;
        if (found) {
          this.#s.countAlert.run(alert.ts, found.id);
          continue;
        }
      }
      const { lastInsertRowid } = this.#s.insertAlert.run(
        alert.source,
        alert.sensorId,
        alert.severity,
        alert.message,
        alert.ts,
        alert.ts,
        now,
      );
      queue({
        kind: 'alert',
        sensorId: alert.sensorId,
        ts: alert.ts,
        value: null,
        unit: null,
        tags: null,
        payload: alert.payload,
      });
      raised.push({
        id: Number(lastInsertRowid),
        source: alert.source,
        sensorId: alert.sensorId,
        severity: alert.severity,
        message: alert.message,
        ts: alert.ts,
        lastTs: alert.ts,
        count: 1,
      });
    }
    if (raised.length > 0) this.#s.trimAlerts.run(max);
    return raised;
  }

  storeAggregates(aggregates: readonly AggregateInsert[], max: number): void {
    if (aggregates.length === 0) return;
    for (const a of aggregates) {
      this.#s.insertAggregate.run(
        a.source,
        a.sensorId,
        a.tags,
        a.unit,
        a.windowStart,
        a.windowMs,
        a.count,
        a.min,
        a.max,
        a.sum,
        a.mean,
        a.m2,
        a.first,
        a.firstTs,
        a.last,
        a.lastTs,
      );
    }
    this.#s.trimAggregates.run(max);
  }

  /** Keeps a copy of the raw readings among `rows`, at most `max` in all. */
  storeHistory(rows: readonly OutboxInsert[], max: number): void {
    if (max <= 0) return;
    let added = 0;
    for (const row of rows) {
      if (row.kind !== 'reading' || row.value === null) continue;
      this.#s.insertHistory.run(row.sensorId, row.ts, row.value, row.unit, row.tags);
      added++;
    }
    if (added > 0) this.#s.trimHistory.run(max);
  }

  writeState(writes: readonly StateWrite[]): void {
    for (const w of writes) {
      if (w.value === null) this.#s.deleteState.run(w.processor, w.key);
      else this.#s.putState.run(w.processor, w.key, w.value);
    }
  }

  processorState(processor: string): Map<string, string> {
    return new Map(this.#s.state.all(processor) as [string, string][]);
  }

  alerts(db: Database, query: StoredAlertQuery): StoredAlert[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (query.since !== undefined) {
      where.push('ts >= ?');
      params.push(query.since);
    }
    if (query.until !== undefined) {
      where.push('ts < ?');
      params.push(query.until);
    }
    if (query.sensorId !== undefined) {
      where.push('sensor_id = ?');
      params.push(query.sensorId);
    }
    if (query.source !== undefined) {
      where.push('source = ?');
      params.push(query.source);
    }
    if (query.severities !== undefined) {
      where.push(`severity IN (${query.severities.map(() => '?').join(', ')})`);
      params.push(...query.severities);
    }
    // Built per call from a fixed set of clauses; alerts are read by people, not in a hot loop.
    const sql = `SELECT * FROM alerts ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ts DESC, id DESC LIMIT ?`;
    return (db.prepare(sql).all(...params, query.limit) as RawAlert[]).map(toAlert);
  }

  aggregates(range: SeriesRange): AggregateInsert[] {
    return (this.#s.aggregates.all(range.sensorId, range.from, range.to, range.limit) as RawAggregate[]).map(
      toAggregate,
    );
  }

  history(range: SeriesRange): HistoryRow[] {
    return (
      this.#s.history.all(range.sensorId, range.from, range.to, range.limit) as {
        sensor_id: string;
        ts: number;
        value: number;
        unit: string | null;
        tags: string | null;
      }[]
    ).map((raw) => ({ sensorId: raw.sensor_id, ts: raw.ts, value: raw.value, unit: raw.unit, tags: raw.tags }));
  }
}

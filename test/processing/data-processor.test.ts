import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { type Alert, type DataPoint, DataProcessor, isValidationError } from '../../src/index.js';
import { createGateway } from '../helpers/gateway.js';
import { tempDbPath } from '../helpers/temp-dir.js';

/** Waits a different time per reading, so that calls finish in another order than they started. */
class SlowAlerter extends DataProcessor {
  async process(point: DataPoint) {
    await sleep((point.value * 7) % 23);
    await this.triggerAlert({ severity: 'warning', message: `value ${point.value}` });
    await sleep((point.value * 5) % 11);
    await this.triggerAlert({ severity: 'info', message: `again ${point.value}` });
    return point;
  }
}

describe('DataProcessor', () => {
  describe('.triggerAlert()', () => {
    it('names the reading each call is processing when async calls interleave', async () => {
      const gateway = createGateway({ processor: new SlowAlerter() });
      const alerts: Alert[] = [];
      gateway.on('alert', (alert) => alerts.push(alert));
      await gateway.start();
      const base = Date.UTC(2025, 0, 1);
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          gateway.sendData({ sensorId: `sensor-${i}`, value: i, timestamp: base + i * 1000 }),
        ),
      );
      expect(alerts).toHaveLength(80);
      for (const alert of alerts) {
        const value = Number(alert.message.split(' ')[1]);
        expect(alert.sensorId).toBe(`sensor-${value}`);
        expect(alert.timestamp.getTime()).toBe(base + value * 1000);
        expect(alert.source).toBe('SlowAlerter');
      }
    });

    it('stores the alert with the reading: it is in alerts() once sendData() resolves', async () => {
      const gateway = createGateway({ processor: new SlowAlerter() });
      await gateway.start();
      await gateway.sendData({ sensorId: 'boiler-2', value: 3, timestamp: '2025-01-01T00:00:00Z' });
      expect(gateway.alerts().map((a) => [a.sensorId, a.message, a.severity])).toEqual([
        ['boiler-2', 'again 3', 'info'],
        ['boiler-2', 'value 3', 'warning'],
      ]);
    });

    it('keeps alerts raised outside process(), stored on their own', async () => {
      class Timer extends DataProcessor {
        process(point: DataPoint) {
          return point;
        }
        async flush() {
          await this.triggerAlert({ severity: 'critical', message: 'watchdog', sensorId: 'pump-1' });
        }
      }
      const path = tempDbPath();
      const gateway = createGateway({ localDb: path, processor: new Timer() });
      await gateway.start();
      await gateway.flushProcessors();
      expect(gateway.alerts()).toEqual([expect.objectContaining({ sensorId: 'pump-1', message: 'watchdog' })]);
    });

    it('refuses an alert with an unknown severity or an empty message, failing the reading', async () => {
      class Bad extends DataProcessor {
        async process(point: DataPoint) {
          await this.triggerAlert({ severity: 'loud' as 'info', message: '' });
          return point;
        }
      }
      const errors: Error[] = [];
      const gateway = createGateway({ processor: new Bad() });
      gateway.on('error', (error) => errors.push(error));
      await gateway.start();
      expect(await gateway.sendData({ sensorId: 's', value: 1 })).toBe(false);
      expect(isValidationError((errors[0] as Error).cause)).toBe(true);
      expect(gateway.getDeadLetters()[0]?.reason).toMatch(/severity.*message/s);
    });
  });
});

/**
 * The compact batch codec (protocol v2): a self-contained binary body, several times smaller than gzip'd JSON,
 * and cheaper to make. docs/protocol.md describes the layout. Each batch carries its own series dictionary rather
 * than aliases registered per connection: a retry must stay byte-identical on any connection, after any restart.
 *
 * Before deflate, a body is:
 *   "EGB" 0x02 | deviceId | replicaId | batchNo | count | series table | seq column | series column | per-series
 *   timestamp and value columns | payloads
 * where numbers are LEB128 varints (signed ones zigzag'd), strings are a varint length and UTF-8, timestamps are
 * delta-of-delta, values are delta-coded scaled integers when every value of the series has at most 9 decimals,
 * and Gorilla XOR floats otherwise. The whole is then deflated (raw DEFLATE).
 */

/** Content type of a compact batch body. */
export const COMPACT_BATCH_CONTENT_TYPE = 'application/vnd.edge-gateway.batch.v2';

/** A row as the codec takes it: the outbox row's shape, tags and payload as JSON text. */
export interface CodecRow {
  seq: number;
  sensorId: string;
  ts: number;
  value: number | null;
  unit: string | null;
  tags: string | null;
  payload: string | null;
}

/** A decoded point: the JSON protocol's point, with tags and data parsed. */
export interface DecodedPoint {
  seq: number;
  sensorId: string;
  ts: number;
  value?: number;
  unit?: string;
  tags?: Record<string, string>;
  data?: unknown;
}

export interface CompactBatch {
  deviceId: string;
  replicaId: string;
  batchNo: number;
  firstSeq: number;
  lastSeq: number;
  points: DecodedPoint[];
}

/** A body that is not a well-formed compact batch. */
export class CompactCodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CompactCodecError';
  }
}

const MAGIC = [0x45, 0x47, 0x42, 0x02]; // "EGB" v2
const MAX_DECIMALS = 9;
const POW10 = Array.from({ length: MAX_DECIMALS + 1 }, (_, k) => 10 ** k);
const VALUE_SCALED = 0;
const VALUE_GORILLA = 1;
const KIND_READING = 0;
const KIND_PROCESSED = 1;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });
const f64 = new DataView(new ArrayBuffer(8));

class ByteWriter {
  #buffer = new Uint8Array(1024);
  #length = 0;

  #room(n: number): void {
    if (this.#length + n <= this.#buffer.length) return;
    let size = this.#buffer.length * 2;
    while (size < this.#length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = next;
  }

  byte(b: number): void {
    this.#room(1);
    this.#buffer[this.#length++] = b;
  }

  bytes(data: Uint8Array): void {
    this.#room(data.length);
    this.#buffer.set(data, this.#length);
    this.#length += data.length;
  }

  /** Unsigned LEB128 of a non-negative safe integer, with Number arithmetic (no 32-bit truncation). */
  uvarint(n: number): void {
    this.#room(8);
    let rest = n;
    while (rest >= 0x80) {
      this.#buffer[this.#length++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.#buffer[this.#length++] = rest;
  }

  /** Signed, zigzag'd. */
  svarint(n: number): void {
    this.uvarint(n >= 0 ? n * 2 : -n * 2 - 1);
  }

  string(s: string): void {
    const data = utf8.encode(s);
    this.uvarint(data.length);
    this.bytes(data);
  }

  /** A string or null: length + 1, or 0 for null. */
  optionalString(s: string | null): void {
    if (s === null) {
      this.uvarint(0);
      return;
    }
    const data = utf8.encode(s);
    this.uvarint(data.length + 1);
    this.bytes(data);
  }

  finish(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }
}

class ByteReader {
  readonly #data: Uint8Array;
  #at = 0;

  constructor(data: Uint8Array) {
    this.#data = data;
  }

  get done(): boolean {
    return this.#at === this.#data.length;
  }

  byte(): number {
    const b = this.#data[this.#at++];
    if (b === undefined) throw new CompactCodecError('the body ends early');
    return b;
  }

  bytes(n: number): Uint8Array {
    if (this.#at + n > this.#data.length) throw new CompactCodecError('the body ends early');
    const out = this.#data.subarray(this.#at, this.#at + n);
    this.#at += n;
    return out;
  }

  uvarint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.byte();
      result += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (result > Number.MAX_SAFE_INTEGER) throw new CompactCodecError('a number is out of range');
        return result;
      }
      scale *= 0x80;
    }
    throw new CompactCodecError('a varint is too long');
  }

  svarint(): number {
    const z = this.uvarint();
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  string(): string {
    try {
      return fromUtf8.decode(this.bytes(this.uvarint()));
    } catch (error) {
      if (error instanceof CompactCodecError) throw error;
      throw new CompactCodecError('a string is not valid UTF-8');
    }
  }

  optionalString(): string | null {
    const n = this.uvarint();
    if (n === 0) return null;
    try {
      return fromUtf8.decode(this.bytes(n - 1));
    } catch (error) {
      if (error instanceof CompactCodecError) throw error;
      throw new CompactCodecError('a string is not valid UTF-8');
    }
  }
}

/** Bits, most significant first, for the Gorilla XOR stream. */
class BitWriter {
  readonly #bytes: number[] = [];
  #current = 0;
  #used = 0;

  bit(b: number): void {
    this.#current = (this.#current << 1) | b;
    if (++this.#used === 8) {
      this.#bytes.push(this.#current);
      this.#current = 0;
      this.#used = 0;
    }
  }

  /** `count` low bits of `value` (count <= 32). */
  bits(value: number, count: number): void {
    for (let i = count - 1; i >= 0; i--) this.bit((value >>> i) & 1);
  }

  /** Bits `from` to `from + count - 1` of the 64-bit (hi, lo), highest first. */
  bits64(hi: number, lo: number, from: number, count: number): void {
    for (let p = from + count - 1; p >= from; p--) this.bit(p >= 32 ? (hi >>> (p - 32)) & 1 : (lo >>> p) & 1);
  }

  finish(): Uint8Array {
    const out = [...this.#bytes];
    if (this.#used > 0) out.push(this.#current << (8 - this.#used));
    return Uint8Array.from(out);
  }
}

class BitReader {
  readonly #data: Uint8Array;
  #at = 0;

  constructor(data: Uint8Array) {
    this.#data = data;
  }

  bit(): number {
    const byte = this.#data[this.#at >>> 3];
    if (byte === undefined) throw new CompactCodecError('a value stream ends early');
    const b = (byte >>> (7 - (this.#at & 7))) & 1;
    this.#at++;
    return b;
  }

  bits(count: number): number {
    let v = 0;
    for (let i = 0; i < count; i++) v = ((v << 1) | this.bit()) >>> 0;
    return v;
  }

  /** Reads `count` bits into positions `from`.. of a 64-bit (hi, lo). */
  bits64(from: number, count: number): [number, number] {
    let hi = 0;
    let lo = 0;
    for (let p = from + count - 1; p >= from; p--) {
      const b = this.bit();
      if (p >= 32) hi = (hi | (b << (p - 32))) >>> 0;
      else lo = (lo | (b << p)) >>> 0;
    }
    return [hi, lo];
  }
}

const clz64 = (hi: number, lo: number) => (hi !== 0 ? Math.clz32(hi) : 32 + Math.clz32(lo));
const ctz32 = (x: number) => 31 - Math.clz32(x & -x);
const ctz64 = (hi: number, lo: number) => (lo !== 0 ? ctz32(lo) : 32 + ctz32(hi));

function floatBits(v: number): [number, number] {
  f64.setFloat64(0, v);
  return [f64.getUint32(0), f64.getUint32(4)];
}

function bitsFloat(hi: number, lo: number): number {
  f64.setUint32(0, hi);
  f64.setUint32(4, lo);
  return f64.getFloat64(0);
}

/** Gorilla (Pelkonen et al. 2015) XOR compression of a float column. */
function gorillaEncode(values: readonly number[]): Uint8Array {
  const out = new BitWriter();
  let [prevHi, prevLo] = floatBits(values[0] as number);
  out.bits(prevHi, 32);
  out.bits(prevLo, 32);
  let leading = -1;
  let trailing = 0;
  for (let i = 1; i < values.length; i++) {
    const [hi, lo] = floatBits(values[i] as number);
    const xHi = (hi ^ prevHi) >>> 0;
    const xLo = (lo ^ prevLo) >>> 0;
    prevHi = hi;
    prevLo = lo;
    if (xHi === 0 && xLo === 0) {
      out.bit(0);
      continue;
    }
    out.bit(1);
    const lead = Math.min(31, clz64(xHi, xLo));
    const trail = ctz64(xHi, xLo);
    if (leading >= 0 && lead >= leading && trail >= trailing) {
      out.bit(0);
      out.bits64(xHi, xLo, trailing, 64 - leading - trailing);
    } else {
      leading = lead;
      trailing = trail;
      const meaningful = 64 - lead - trail;
      out.bit(1);
      out.bits(lead, 5);
      out.bits(meaningful - 1, 6);
      out.bits64(xHi, xLo, trail, meaningful);
    }
  }
  return out.finish();
}

function gorillaDecode(data: Uint8Array, count: number): number[] {
  const input = new BitReader(data);
  let hi = input.bits(32);
  let lo = input.bits(32);
  const values = [bitsFloat(hi, lo)];
  let leading = 0;
  let trailing = 0;
  for (let i = 1; i < count; i++) {
    if (input.bit() === 1) {
      if (input.bit() === 1) {
        leading = input.bits(5);
        trailing = 64 - leading - (input.bits(6) + 1);
        if (trailing < 0) throw new CompactCodecError('a value stream is malformed');
      }
      const [xHi, xLo] = input.bits64(trailing, 64 - leading - trailing);
      hi = (hi ^ xHi) >>> 0;
      lo = (lo ^ xLo) >>> 0;
    }
    values.push(bitsFloat(hi, lo));
  }
  return values;
}

/** The fewest decimals (0..9) that represent every value exactly as a scaled integer, or -1. */
function decimalsOf(values: readonly number[]): number {
  for (let k = 0; k <= MAX_DECIMALS; k++) {
    const scale = POW10[k] as number;
    let exact = true;
    for (const v of values) {
      const scaled = Math.round(v * scale);
      if (Math.abs(scaled) > 2 ** 50 || scaled / scale !== v || Object.is(v, -0)) {
        exact = false;
        break;
      }
    }
    if (exact) return k;
  }
  return -1;
}

interface Series {
  kind: number;
  sensorId: string;
  unit: string | null;
  tags: string | null;
  rows: CodecRow[];
}

/**
 * Encodes rows (in seq order) as the raw, not yet deflated, compact body.
 * @internal
 */
export function encodeCompactRaw(
  header: { deviceId: string; replicaId: string; batchNo: number },
  rows: readonly CodecRow[],
): Uint8Array {
  const out = new ByteWriter();
  for (const b of MAGIC) out.byte(b);
  out.string(header.deviceId);
  out.string(header.replicaId);
  out.uvarint(header.batchNo);
  out.uvarint(rows.length);

  const index = new Map<string, number>();
  const series: Series[] = [];
  const rowSeries: number[] = [];
  for (const row of rows) {
    const kind = row.payload === null ? KIND_READING : KIND_PROCESSED;
    const key = JSON.stringify([kind, row.sensorId, row.unit, row.tags]);
    let at = index.get(key);
    if (at === undefined) {
      at = series.length;
      index.set(key, at);
      series.push({ kind, sensorId: row.sensorId, unit: row.unit, tags: row.tags, rows: [] });
    }
    series[at]?.rows.push(row);
    rowSeries.push(at);
  }
  out.uvarint(series.length);
  for (const s of series) {
    out.byte(s.kind);
    out.string(s.sensorId);
    out.optionalString(s.unit);
    out.optionalString(s.tags);
  }

  let previousSeq = 0;
  for (const row of rows) {
    out.svarint(row.seq - previousSeq);
    previousSeq = row.seq;
  }
  for (const at of rowSeries) out.uvarint(at);

  for (const s of series) {
    let previousTs = 0;
    let previousDelta = 0;
    for (const row of s.rows) {
      const delta = row.ts - previousTs;
      out.svarint(delta - previousDelta);
      previousDelta = delta;
      previousTs = row.ts;
    }
    if (s.kind === KIND_PROCESSED) {
      for (const row of s.rows) out.string(row.payload as string);
      continue;
    }
    const values = s.rows.map((row) => row.value as number);
    const decimals = decimalsOf(values);
    if (decimals >= 0) {
      const scale = POW10[decimals] as number;
      out.byte(VALUE_SCALED);
      out.byte(decimals);
      let previous = 0;
      for (const v of values) {
        const scaled = Math.round(v * scale);
        out.svarint(scaled - previous);
        previous = scaled;
      }
    } else {
      const stream = gorillaEncode(values);
      out.byte(VALUE_GORILLA);
      out.uvarint(stream.length);
      out.bytes(stream);
    }
  }
  return out.finish();
}

const parseJson = (text: string, what: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    throw new CompactCodecError(`${what} is not valid JSON`);
  }
};

/** Most rows a compact body may hold, as a JSON batch may hold at most 100 000 points. */
export const COMPACT_MAX_ROWS = 100_000;

/**
 * Decodes a raw (inflated) compact body. Throws {@link CompactCodecError} on anything malformed, or on more rows
 * than `maxRows` (a body of zeros inflates cheaply to millions of empty rows); never loops or allocates past what
 * the body's own size and `maxRows` allow.
 */
export function decodeCompactRaw(data: Uint8Array, limits: { maxRows?: number } = {}): CompactBatch {
  const maxRows = limits.maxRows ?? COMPACT_MAX_ROWS;
  const input = new ByteReader(data);
  for (const b of MAGIC) {
    if (input.byte() !== b) throw new CompactCodecError('not a compact batch (bad magic or version)');
  }
  const deviceId = input.string();
  const replicaId = input.string();
  const batchNo = input.uvarint();
  const count = input.uvarint();
  if (count > data.length) throw new CompactCodecError('the row count is larger than the body');
  if (count > maxRows) throw new CompactCodecError(`${count} rows; at most ${maxRows} are accepted`);
  const seriesCount = input.uvarint();
  if (seriesCount > count) throw new CompactCodecError('more series than rows');
  const series: {
    kind: number;
    sensorId: string;
    unit: string | null;
    tags: Record<string, string> | undefined;
    rows: number[];
  }[] = [];
  for (let i = 0; i < seriesCount; i++) {
    const kind = input.byte();
    if (kind !== KIND_READING && kind !== KIND_PROCESSED) throw new CompactCodecError(`unknown row kind ${kind}`);
    const sensorId = input.string();
    const unit = input.optionalString();
    const tagsText = input.optionalString();
    const tags = tagsText === null ? undefined : (parseJson(tagsText, 'a tag set') as Record<string, string>);
    series.push({ kind, sensorId, unit, tags, rows: [] });
  }
  const seqs: number[] = [];
  let seq = 0;
  for (let i = 0; i < count; i++) {
    seq += input.svarint();
    seqs.push(seq);
  }
  const points: DecodedPoint[] = seqs.map((s) => ({ seq: s, sensorId: '', ts: 0 }));
  for (let i = 0; i < count; i++) {
    const at = input.uvarint();
    const s = series[at];
    if (!s) throw new CompactCodecError(`row ${i} names series ${at}, of ${seriesCount}`);
    s.rows.push(i);
  }
  for (const s of series) {
    let ts = 0;
    let delta = 0;
    for (const i of s.rows) {
      delta += input.svarint();
      ts += delta;
      const point = points[i] as DecodedPoint;
      point.sensorId = s.sensorId;
      point.ts = ts;
      if (s.unit !== null) point.unit = s.unit;
      if (s.tags !== undefined) point.tags = s.tags;
    }
    if (s.kind === KIND_PROCESSED) {
      for (const i of s.rows) (points[i] as DecodedPoint).data = parseJson(input.string(), 'a payload');
      continue;
    }
    if (s.rows.length === 0) continue;
    const encoding = input.byte();
    if (encoding === VALUE_SCALED) {
      const decimals = input.byte();
      if (decimals > MAX_DECIMALS) throw new CompactCodecError(`${decimals} decimals is out of range`);
      const scale = POW10[decimals] as number;
      let scaled = 0;
      for (const i of s.rows) {
        scaled += input.svarint();
        (points[i] as DecodedPoint).value = scaled / scale;
      }
    } else if (encoding === VALUE_GORILLA) {
      const stream = input.bytes(input.uvarint());
      const values = gorillaDecode(stream, s.rows.length);
      s.rows.forEach((i, n) => {
        (points[i] as DecodedPoint).value = values[n] as number;
      });
    } else throw new CompactCodecError(`unknown value encoding ${encoding}`);
  }
  if (!input.done) throw new CompactCodecError('trailing bytes after the last column');
  return {
    deviceId,
    replicaId,
    batchNo,
    firstSeq: seqs[0] ?? 0,
    lastSeq: seqs[seqs.length - 1] ?? 0,
    points,
  };
}

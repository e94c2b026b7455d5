// Deterministic benchmark data. A file is a sequence of 1 MiB chunks; chunk i
// is a slice of an 8 MiB pool (pseudo-random bytes, or log-like text lines that
// LZ4 packs to about a third) with (i, j) stamped into the first 8 bytes of each
// 4 KiB block j, so that no two blocks of a file are equal (no filesystem can
// deduplicate them) and any chunk can be regenerated to verify a read.
export const CHUNK = 1 << 20;
const POOL = 8 << 20;

export type DataKind = 'random' | 'text';

/** splitmix32-style generator; the same seed gives the same stream everywhere. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

const LEVELS = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];
const PARTS = ['flush', 'alloc', 'inode', 'chain', 'bulkfree', 'vfs', 'io', 'cache'];
const MSGS = [
  'committed transaction tid=%x in %d us',
  'allocated %d bytes at offset 0x%x',
  'inode %d updated: size=%d mode=0644',
  'lookup of "file%d.txt" in directory %d',
  'cache hit ratio %d%% after %d requests',
  'write of %d bytes at offset %d queued',
  'freemap level1 %d: %d blocks free',
  'request %d answered in %d us',
];

/** One log-like line: what text data (logs, sources, CSVs) looks like to LZ4. */
function logLine(rnd: () => number, n: number): string {
  let m = MSGS[rnd() % MSGS.length];
  m = m.replace(/%x/g, () => (rnd() % 0x100000).toString(16)).replace(/%d/g, () => String(rnd() % 10000));
  const t = 1700000000000 + n * 37;
  return `${new Date(t).toISOString()} ${LEVELS[rnd() % LEVELS.length]} [${PARTS[rnd() % PARTS.length]}] ${m}\n`;
}

export class DataSource {
  readonly pool: Buffer;

  constructor(readonly kind: DataKind, seed = 1) {
    this.pool = Buffer.alloc(POOL);
    const rnd = prng(seed * 7919 + (kind === 'random' ? 0 : 1));
    if (kind === 'random') {
      for (let i = 0; i < POOL; i += 4) this.pool.writeUInt32LE(rnd(), i);
    } else {
      let pos = 0;
      for (let n = 0; pos < POOL; n++) pos += this.pool.write(logLine(rnd, n), pos, 'latin1');
    }
  }

  /** Chunk `i` of a file, valid until the next call (it is the pool, stamped in place). */
  chunk(i: number): Buffer {
    const base = (i % (POOL / CHUNK)) * CHUNK;
    const b = this.pool.subarray(base, base + CHUNK);
    for (let j = 0; j < CHUNK / 4096; j++) {
      b.writeUInt32LE(i >>> 0, j * 4096);
      b.writeUInt32LE(j | 0x5a000000, j * 4096 + 4);
    }
    return b;
  }
}

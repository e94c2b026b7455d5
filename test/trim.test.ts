// When the daemon gives its freed heap back (malloc_trim): once after a long
// idle spell, or whenever its RSS is high; never between bursts of work a
// few seconds apart, nor in the middle of ordinary busy work.
import t from 'tap';
import { TRIM_IDLE_MS, trimDue } from '../src/daemon';

const MiB = 1 << 20;

t.test('trims after a long idle spell, once, and a busy daemon only when its RSS is high', async (t) => {
  t.ok(trimDue(TRIM_IDLE_MS, false, 80 * MiB), 'idle long enough');
  t.notOk(trimDue(TRIM_IDLE_MS, true, 80 * MiB), 'already trimmed in this idle spell');
  t.notOk(trimDue(10_000, false, 150 * MiB), 'idle between bursts (the passes of a mirror-stream)');
  t.notOk(trimDue(0, false, 150 * MiB), 'busy, RSS moderate');
  t.notOk(trimDue(0, false, 220 * MiB), 'busy, RSS below the limit');
  t.ok(trimDue(0, false, 230 * MiB), 'busy, RSS high');
  t.ok(trimDue(2_000, true, 230 * MiB), 'RSS high, whatever was trimmed before');
});

t.test('the metadata cache gives room to data awaiting commit, down to a quarter of its budget, and takes it back', async (t) => {
  const { LruCache, BlockReader } = await import('../src/engine');
  const { BrefType, CheckMethod, emptyBlockref, encMethods } = await import('../src/media');
  const lru = new LruCache<number, string>(10);
  for (let i = 0; i < 5; i++) lru.set(i, `v${i}`, 2);
  lru.get(0); // 1 is now the least recently used
  lru.setBudget(6);
  t.equal(lru.size, 6, 'evicted down to the new budget at once');
  t.equal(lru.get(1), undefined, 'least recently used first');
  t.equal(lru.get(0), 'v0', 'recently used kept');
  lru.setBudget(10);
  lru.set(9, 'v9', 4);
  t.equal(lru.size, 10, 'a larger budget fills again');

  const reader = new BlockReader({} as never, { cacheBytes: 8 * MiB });
  const fill = () => {
    for (let i = 0; i < 128; i++) {
      const b = emptyBlockref();
      b.type = BrefType.INDIRECT;
      b.methods = encMethods(CheckMethod.XXHASH64, 0);
      b.dataOff = BigInt(i * 65536 + 16);
      reader.seed(b, Buffer.alloc(65536 - 64));
    }
  };
  fill();
  t.equal(reader.cacheStats.bytes, 8 * MiB, 'full');
  reader.makeRoom(3 * MiB);
  t.equal(reader.cacheStats.bytes, 5 * MiB, 'gives up what data waits for');
  reader.makeRoom(3 * MiB + 1000);
  t.equal(reader.cacheStats.bytes, 5 * MiB, 'changes under 1 MiB are ignored');
  reader.makeRoom(100 * MiB);
  t.equal(reader.cacheStats.bytes, 2 * MiB, 'never below a quarter of its budget');
  reader.makeRoom(0);
  fill();
  t.equal(reader.cacheStats.bytes, 8 * MiB, 'all of it back once the data is committed');
});

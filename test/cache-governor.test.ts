// The block cache under memory pressure: LruCache.resize evicts the least
// recently used beyond the new budget, and the daemon's CacheGovernor halves
// the budget above its soft limit and doubles it back well below it.
import t from 'tap';
import { LruCache } from '../src/engine/cache';
import { CacheGovernor, HYSTERESIS, OTHER_BYTES } from '../src/daemon/memory';

const MiB = 1 << 20;

t.test('resize evicts the least recently used', async (t) => {
  const c = new LruCache<number, string>(10);
  for (let i = 0; i < 5; i++) c.set(i, `v${i}`, 2);
  t.equal(c.size, 10);
  c.get(0); // now the most recent
  c.resize(4);
  t.equal(c.capacity, 4);
  t.equal(c.size, 4);
  t.equal(c.get(0), 'v0', 'the recently used stays');
  t.equal(c.get(4), 'v4');
  for (const k of [1, 2, 3]) t.equal(c.get(k), undefined, `${k} evicted`);
  c.resize(10);
  c.set(5, 'v5', 6);
  t.equal(c.size, 10, 'the larger budget holds more again');
  t.equal(c.get(0), 'v0');
});

t.test('the governor halves under pressure, down to a floor, and grows back with hysteresis', async (t) => {
  const full = 48 * MiB;
  const g = new CacheGovernor(full);
  t.equal(g.soft, OTHER_BYTES + full);
  t.equal(g.floor, 12 * MiB);
  let b = full;
  t.equal(g.next(100 * MiB, b), full, 'no pressure: as configured');
  b = g.next(g.soft + 1, b);
  t.equal(b, 24 * MiB, 'halved');
  b = g.next(g.soft + 1, b);
  b = g.next(g.soft + 1, b);
  t.equal(b, 12 * MiB, 'not below the floor');
  t.equal(g.next(g.soft - HYSTERESIS + 1, b), b, 'just below the limit: stays');
  b = g.next(g.soft - HYSTERESIS - 1, b);
  t.equal(b, 24 * MiB, 'well below: doubles');
  b = g.next(0, g.next(0, b));
  t.equal(b, full, 'never above the configured size');
  // A bigger cache asked for moves the limit with it; a tiny one keeps its size.
  t.equal(new CacheGovernor(512 * MiB).soft, OTHER_BYTES + 512 * MiB);
  t.equal(new CacheGovernor(4 * MiB).floor, 4 * MiB);
});

// The block cache under memory pressure: LruCache.resize evicts the least
// recently used beyond the new budget, and the daemon's CacheGovernor halves
// the budget above its soft limit and doubles it back when RSS has room.
import t from 'tap';
import { LruCache } from '../src/engine/cache';
import { CacheGovernor, COOLDOWN, MARGIN, OTHER_BYTES, OVERHEAD } from '../src/daemon/memory';

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

t.test('the governor halves under pressure, down to a floor, and grows back when there is room', async (t) => {
  const full = 48 * MiB;
  const g = new CacheGovernor(full);
  t.equal(g.soft, OTHER_BYTES + full);
  t.equal(g.floor, 12 * MiB);
  const settle = () => {
    for (let i = 0; i < COOLDOWN; i++) t.equal(g.next(0, 1, 1), 1, 'waits after a change');
  };
  let b = full;
  t.equal(g.next(100 * MiB, b, b), full, 'no pressure: as configured');
  t.equal(g.next(g.soft + 1, b, b / 2), full, 'over the limit, but the cache is half empty: shrinking frees nothing');
  b = g.next(g.soft + 1, b, b);
  t.equal(b, 24 * MiB, 'halved');
  settle();
  b = g.next(g.soft + 1, b, b);
  settle();
  b = g.next(g.soft + 1, b, b);
  t.equal(b, 12 * MiB, 'not below the floor');
  t.equal(g.next(g.soft + 1, b, b), b, 'stays at the floor');
  // Growing back from 12 to 24 MiB adds 1.5 x 12 MiB of RSS: it must fit under the limit with the margin.
  const room = g.soft - MARGIN - OVERHEAD * 12 * MiB;
  t.equal(g.next(room, b, b), b, 'no room yet');
  b = g.next(room - 1, b, b);
  t.equal(b, 24 * MiB, 'room: doubles');
  settle();
  b = g.next(0, b, 0);
  settle();
  t.equal(g.next(0, b, 0), full, 'never above the configured size');
  // A bigger cache asked for moves the limit with it; a tiny one keeps its size; sizes past 2 GiB do not wrap.
  t.equal(new CacheGovernor(512 * MiB).soft, OTHER_BYTES + 512 * MiB);
  t.equal(new CacheGovernor(4 * MiB).floor, 4 * MiB);
  const big = new CacheGovernor(4096 * MiB);
  t.equal(big.floor, 1024 * MiB);
  t.equal(big.next(big.soft + 1, 4096 * MiB, 4096 * MiB), 2048 * MiB);
});

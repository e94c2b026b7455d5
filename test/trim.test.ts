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

// When the daemon gives its freed heap back (malloc_trim): when it has been
// idle, or when its RSS is high, never in the middle of ordinary busy work.
import t from 'tap';
import { trimDue } from '../src/daemon';

const MiB = 1 << 20;

t.test('trims an idle daemon, and a busy one only when its RSS is high', async (t) => {
  t.ok(trimDue(0, 80 * MiB), 'idle');
  t.ok(trimDue(0.05, 150 * MiB), 'nearly idle');
  t.notOk(trimDue(0.5, 150 * MiB), 'busy, RSS moderate');
  t.notOk(trimDue(1, 220 * MiB), 'saturated, RSS below the limit');
  t.ok(trimDue(0.9, 230 * MiB), 'busy, RSS high');
});

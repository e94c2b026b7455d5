// Self time per function from V8 CPU profiles (node --cpu-prof), summed over
// every .cpuprofile file in a directory (one per daemon process). If the
// directory has windows.json ([startUs, endUs] pairs on the monotonic clock
// that V8's profile timestamps and process.hrtime share), only samples inside
// those windows count: the measured steps, not start-up, preparation or unmount.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, REPO } from './targets';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileLine {
  fn: string;
  where: string;
  selfMs: number;
  /** percent of the busy (non-idle) time */
  pct: number;
}

export interface ProfileSummary {
  files: number;
  /** measured steps the samples were restricted to (0: whole profiles) */
  windows: number;
  totalMs: number;
  busyMs: number;
  top: ProfileLine[];
}

const REPLIES = new Set(['err', 'ok', 'entry', 'noEntry', 'create', 'attr', 'readlink', 'open', 'write', 'buf', 'xattrSize', 'statfs', 'dirents', 'direntsPlus']);

function where(fn: string, url: string, line: number): string {
  // No script: V8's own entries ("(garbage collector)"), or a native function
  // (a binding such as the synchronous read/fsync of fs, or the FUSE replies).
  if (!url) return fn.startsWith('(') ? '' : '(native)';
  if (url.startsWith('wasm://')) return 'WebAssembly (lz4-wasm-nodejs or xxhash-wasm)';
  let p = url.replace(/^file:\/\//, '');
  if (p.startsWith('node:')) return p;
  for (const root of [BIN.root, REPO]) {
    if (p.startsWith(root + '/')) {
      p = p.slice(root.length + 1);
      break;
    }
  }
  // The reply methods of lowlevel.ts: their self time is the native reply
  // (packing, writev to /dev/fuse and the kernel's work on it).
  const reply = p.endsWith('src/fuse/lowlevel.js') && REPLIES.has(fn) ? ' (FUSE reply: packing + native send)' : '';
  return `${p}:${line + 1}${reply}`;
}

export function summarizeProfiles(dir: string, top = 15): ProfileSummary | null {
  let files: string[];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    return null;
  }
  if (!files.length) return null;
  let windows: [number, number][] = [];
  try {
    windows = JSON.parse(fs.readFileSync(path.join(dir, 'windows.json'), 'utf8')) as [number, number][];
  } catch {
    /* whole profiles */
  }
  const inWindow = (t: number) => !windows.length || windows.some(([a, b]) => t >= a && t <= b);
  const self = new Map<string, { fn: string; where: string; us: number }>();
  let total = 0;
  let idle = 0;
  for (const f of files) {
    let p: CpuProfile;
    try {
      p = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as CpuProfile;
    } catch {
      continue;
    }
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    // timeDeltas[i] is the time before sample i: charge it to sample i - 1.
    let t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      t += p.timeDeltas[i] ?? 0;
      const us = i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1] : 0;
      const n = byId.get(p.samples[i]);
      if (!n || us <= 0 || !inWindow(t)) continue;
      total += us;
      const fn = n.callFrame.functionName || '(anonymous)';
      if (fn === '(idle)') {
        idle += us;
        continue;
      }
      const w = where(fn, n.callFrame.url, n.callFrame.lineNumber);
      const key = `${fn}\u0000${w}`;
      const e = self.get(key) ?? { fn, where: w, us: 0 };
      e.us += us;
      self.set(key, e);
    }
  }
  const busy = total - idle;
  const lines = [...self.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((e) => ({ fn: e.fn, where: e.where, selfMs: e.us / 1000, pct: busy > 0 ? (100 * e.us) / busy : 0 }));
  return { files: files.length, windows: windows.length, totalMs: total / 1000, busyMs: busy / 1000, top: lines };
}

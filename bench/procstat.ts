// What a daemon costs, from /proc: CPU seconds (utime + stime of all its
// threads) and resident memory (VmRSS now, VmHWM the peak since start).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

let ticks = 0;
function clkTck(): number {
  if (!ticks) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    ticks = Number(r.stdout?.trim()) || 100;
  }
  return ticks;
}

export interface ProcSample {
  cpu: number;
  rss: number;
  hwm: number;
}

/** CPU seconds and memory (bytes) of `pid`, or null if it is gone. */
export function sample(pid: number): ProcSample | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(rest[11]) + Number(rest[12])) / clkTck();
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { cpu, rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return null;
  }
}

export function loadavg(): number[] {
  try {
    return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch {
    return [];
  }
}

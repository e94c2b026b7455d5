// Medians, spreads and ratios of the runs, and the tables that show them.
import type { FsName } from './targets';
import type { MetricDef, Workload } from './workloads';

export interface RunRecord {
  workload: string;
  fs: FsName;
  rep: number;
  metrics: Record<string, number>;
  info: Record<string, unknown>;
  daemon: {
    /** CPU seconds of the daemon over the measured steps */
    cpu: number | null;
    /** VmHWM over the whole workload, bytes */
    peakRss: number | null;
    /** data bytes the measured steps moved */
    bytes: number;
  };
  wallSeconds: number;
  error?: string;
  problems: string[];
}

export interface Cell {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median, percent */
  spreadPct: number;
  n: number;
  samples: number[];
}

export interface Row {
  workload: string;
  metric: MetricDef;
  cells: Partial<Record<FsName, Cell>>;
  /** how many times better hammer2fs is (> 1 better), medians of this run */
  vsFuse2fs?: number;
  vsMemfs?: number;
  /** hammer2fs with a copy over hammer2fs alone (> 1: the copy costs nothing). */
  copyVsOne?: number;
  /** the same factor per repetition (hammer2fs and the other from the same repetition) */
  pairedVsFuse2fs: number[];
  pairedVsMemfs: number[];
  /** targets (TARGETS) that apply to this row */
  targetFuse2fs?: number;
  targetMemfs?: number;
  errors: Partial<Record<FsName, string>>;
}

export const GiB = 1 << 30;

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function cell(samples: number[]): Cell | undefined {
  const xs = samples.filter((x) => Number.isFinite(x));
  if (!xs.length) return undefined;
  const med = median(xs);
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  return { median: med, min, max, spreadPct: med ? (100 * (max - min)) / Math.abs(med) : 0, n: xs.length, samples: xs };
}

/** Daemon rows every workload gets (FUSE filesystems only). */
export function daemonMetrics(w: Workload): MetricDef[] {
  return [
    { key: 'rss', label: 'daemon peak RSS MiB', better: 'lower' },
    w.dataHeavy ? { key: 'cpuGiB', label: 'daemon CPU s/GiB', better: 'lower' } : { key: 'cpu', label: 'daemon CPU s', better: 'lower' },
  ];
}

function daemonValue(r: RunRecord, key: string): number {
  if (key === 'rss') return r.daemon.peakRss === null ? NaN : r.daemon.peakRss / 1048576;
  if (key === 'cpu') return r.daemon.cpu ?? NaN;
  if (key === 'cpuGiB') return r.daemon.cpu === null || r.daemon.bytes <= 0 ? NaN : r.daemon.cpu / (r.daemon.bytes / GiB);
  return NaN;
}

/**
 * The targets each row is held to (issue 13, which raised and refined
 * issue 6's): hammer2fs against fuse2fs and against memfs, as the
 * "h2 vs X" factor (> 1 is better; for CPU and latency rows, 0.5 = twice
 * fuse2fs's). Rows not listed keep issue 6's 2× fuse2fs where they have a
 * ratio at all (metadata).
 */
const TARGETS: Record<string, { fuse2fs?: number; memfs?: number }> = {
  'seqwrite.mbps': { fuse2fs: 2, memfs: 0.5 },
  'seqwrite-comp.mbps': { fuse2fs: 2, memfs: 0.5 },
  'seqread.mbps': { memfs: 0.8 },
  'randrw.riops': { fuse2fs: 1 },
  'randrw.wiops': { fuse2fs: 1 },
  'randrw.cpuGiB': { fuse2fs: 1 / 3 },
  'fsync.ops': { fuse2fs: 0.8 },
  'fsync.p99': { fuse2fs: 0.5 },
  'fsync.p50': {},
  'tar.extract': { fuse2fs: 2 },
  'tar.archive': { fuse2fs: 2 },
  'parallel.rr1': {},
  'parallel.sw1': {},
  'parallel.tar1': {},
  'parallel.rr4': { fuse2fs: 2 },
  'parallel.sw4': { fuse2fs: 2 },
  'parallel.tar4': { fuse2fs: 2 },
};

export function summarize(workloads: Workload[], fsList: FsName[], runs: RunRecord[]): Row[] {
  const rows: Row[] = [];
  for (const w of workloads) {
    const mine = runs.filter((r) => r.workload === w.name);
    if (!mine.length) continue;
    const defs: [MetricDef, boolean][] = [...w.metrics.map((m): [MetricDef, boolean] => [m, false]), ...daemonMetrics(w).map((m): [MetricDef, boolean] => [m, true])];
    for (const [m, isDaemon] of defs) {
      const row: Row = { workload: w.name, metric: m, cells: {}, errors: {}, pairedVsFuse2fs: [], pairedVsMemfs: [] };
      const value = (r: RunRecord) => (isDaemon ? daemonValue(r, m.key) : r.metrics[m.key] ?? NaN);
      for (const f of fsList) {
        const rs = mine.filter((r) => r.fs === f);
        const ok = rs.filter((r) => !r.error);
        const c = cell(ok.map(value));
        if (c) row.cells[f] = c;
        const bad = rs.find((r) => r.error);
        if (bad) row.errors[f] = bad.error!.split('\n')[0].slice(0, 200);
      }
      const h2 = row.cells.hammer2fs?.median;
      const factor = (o: number | undefined) =>
        h2 === undefined || o === undefined || !(h2 > 0) || !(o > 0) ? undefined : m.better === 'higher' ? h2 / o : o / h2;
      if (!m.noRatio) {
        row.vsFuse2fs = factor(row.cells.fuse2fs?.median);
        row.vsMemfs = factor(row.cells.memfs?.median);
        const cp = row.cells['hammer2fs-copy']?.median;
        if (cp !== undefined && h2 !== undefined && cp > 0 && h2 > 0) row.copyVsOne = m.better === 'higher' ? cp / h2 : h2 / cp;
        const paired = (other: FsName): number[] => {
          const out: number[] = [];
          for (const h of mine.filter((r) => r.fs === 'hammer2fs' && !r.error)) {
            const o = mine.find((r) => r.fs === other && r.rep === h.rep && !r.error);
            const a = value(h);
            const b = o ? value(o) : NaN;
            if (a > 0 && b > 0) out.push(m.better === 'higher' ? a / b : b / a);
          }
          return out;
        };
        row.pairedVsFuse2fs = paired('fuse2fs');
        row.pairedVsMemfs = paired('memfs');
      }
      const tgt = TARGETS[`${w.name}.${m.key}`];
      if (tgt) {
        row.targetFuse2fs = tgt.fuse2fs;
        row.targetMemfs = tgt.memfs;
      } else if (!isDaemon && !m.noRatio && w.name !== 'scale') row.targetFuse2fs = 2;
      rows.push(row);
    }
  }
  return rows;
}

export function fmtNum(x: number): string {
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(2);
}

function fmtCell(c: Cell | undefined, err: string | undefined): string {
  if (!c) return err ? 'FAILED' : '–';
  const spread = c.n > 1 ? ` ±${c.spreadPct < 10 ? c.spreadPct.toFixed(1) : Math.round(c.spreadPct)}%` : '';
  return fmtNum(c.median) + spread + (err ? ' (!)' : '');
}

function fmtRatio(r: number | undefined, target: number | undefined): string {
  if (r === undefined) return '–';
  const s = r >= 10 ? r.toFixed(1) : r.toFixed(2);
  return `${s}×` + (target === undefined ? '' : r >= target ? ' ✓' : ' ✗');
}

export function tableRows(rows: Row[], fsList: FsName[]): string[][] {
  const head = ['workload', 'metric', ...fsList];
  const withF = fsList.includes('hammer2fs') && fsList.includes('fuse2fs');
  const withM = fsList.includes('hammer2fs') && fsList.includes('memfs');
  if (withF) head.push('h2 vs fuse2fs');
  if (withM) head.push('h2 vs memfs');
  const withC = fsList.includes('hammer2fs') && fsList.includes('hammer2fs-copy');
  if (withC) head.push('2 copies vs 1');
  const out = [head];
  let last = '';
  for (const r of rows) {
    const line = [r.workload === last ? '' : r.workload, r.metric.label, ...fsList.map((f) => fmtCell(r.cells[f], r.errors[f]))];
    if (withF) line.push(fmtRatio(r.vsFuse2fs, r.targetFuse2fs));
    if (withM) line.push(fmtRatio(r.vsMemfs, r.targetMemfs));
    if (withC) line.push(fmtRatio(r.copyVsOne, r.metric.key === 'mbps' ? (r.workload === 'seqread' ? 0.95 : r.workload.startsWith('seqwrite') ? 0.7 : undefined) : undefined));
    out.push(line);
    last = r.workload;
  }
  return out;
}

const width = (s: string) => [...s].length;

export function textTable(t: string[][]): string {
  const w = t[0].map((_, i) => Math.max(...t.map((r) => width(r[i] ?? ''))));
  const fmt = (r: string[]) =>
    r.map((c, i) => (i < 2 ? c + ' '.repeat(w[i] - width(c)) : ' '.repeat(w[i] - width(c)) + c)).join('  ');
  const lines = [fmt(t[0]), w.map((n) => '─'.repeat(n)).join('  ')];
  let prev = '';
  for (const r of t.slice(1)) {
    if (r[0] && prev) lines.push('');
    lines.push(fmt(r));
    prev = r[0] || prev;
  }
  return lines.join('\n');
}

export function mdTable(t: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const lines = [`| ${t[0].map(esc).join(' | ')} |`, `|${t[0].map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const r of t.slice(1)) lines.push(`| ${r.map(esc).join(' | ')} |`);
  return lines.join('\n');
}

/** The issue's targets, checked against this run's medians. */
export function targetLines(rows: Row[], runs: RunRecord[]): string[] {
  const out: string[] = [];
  const fmt = (x: number) => (x >= 1 ? x.toFixed(2) : x.toPrecision(2));
  const check = (label: string, list: Row[], ratio: (r: Row) => number, target: (r: Row) => number) => {
    if (!list.length) return;
    const miss = list.filter((r) => ratio(r) < target(r));
    out.push(
      `${label}: ${miss.length ? `NOT met on ${miss.length} of ${list.length} (${miss.map((r) => `${r.workload} ${r.metric.label} ${fmt(ratio(r))}× < ${fmt(target(r))}×`).join(', ')})` : `met (${list.length} figures)`}`,
    );
  };
  check('against fuse2fs', rows.filter((r) => r.targetFuse2fs !== undefined && r.vsFuse2fs !== undefined), (r) => r.vsFuse2fs!, (r) => r.targetFuse2fs!);
  check('against memfs', rows.filter((r) => r.targetMemfs !== undefined && r.vsMemfs !== undefined), (r) => r.vsMemfs!, (r) => r.targetMemfs!);
  // Parallel clients: four against one of our own, and against fuse2fs (above).
  for (const [one, four, what] of [['rr1', 'rr4', 'random reads'], ['sw1', 'sw4', 'sequential writers'], ['tar1', 'tar4', 'tar extractions']]) {
    const a = rows.find((r) => r.workload === 'parallel' && r.metric.key === one)?.cells.hammer2fs?.median;
    const b = rows.find((r) => r.workload === 'parallel' && r.metric.key === four)?.cells.hammer2fs?.median;
    if (a && b) out.push(`parallel ${what}, four clients ≥ 1.5× one: ${b / a >= 1.5 ? 'met' : 'NOT met'} (${(b / a).toFixed(2)}×)`);
  }
  // Scale: per-operation cost at the largest tier within 1.5x of the smallest (rate >= 0.67x), mount < 1 s.
  const tierN = (t: string) => (t.endsWith('M') ? Number(t.slice(0, -1)) * 1e6 : t.endsWith('k') ? Number(t.slice(0, -1)) * 1e3 : Number(t));
  const scale = rows.filter((r) => r.workload === 'scale');
  for (const op of ['create', 'stat', 'readdir', 'unlink']) {
    const tiers = scale
      .map((r) => ({ r, m: new RegExp(`^${op}(\\d+[kM]?)$`).exec(r.metric.key) }))
      .filter((x) => x.m)
      .map((x) => ({ r: x.r, n: tierN(x.m![1]), name: x.m![1] }))
      .sort((a, b) => a.n - b.n);
    if (tiers.length < 2) continue;
    const lo = tiers[0];
    const hi = tiers[tiers.length - 1];
    const growth = (f: FsName) => {
      const a = lo.r.cells[f]?.median;
      const b = hi.r.cells[f]?.median;
      return a && b ? b / a : undefined;
    };
    const g = growth('hammer2fs');
    if (g === undefined) continue;
    const gf = growth('fuse2fs');
    out.push(
      `scale ${op}, rate at ${hi.name} files ≥ 0.67× the rate at ${lo.name}: ${g >= 0.67 ? 'met' : 'NOT met'} (${g.toFixed(2)}×${gf === undefined ? '' : `; fuse2fs ${gf.toFixed(2)}×`})`,
    );
  }
  const mount = scale.find((r) => r.metric.key === 'mount')?.cells.hammer2fs?.median;
  if (mount !== undefined) out.push(`scale mount < 1 s: ${mount < 1 ? 'met' : 'NOT met'} (${mount.toFixed(2)} s)`);
  const fsckRss = scale.find((r) => r.metric.key === 'fsckRss')?.cells.hammer2fs?.median;
  const fsckS = scale.find((r) => r.metric.key === 'fsck')?.cells.hammer2fs?.median;
  if (fsckRss !== undefined && fsckS !== undefined) out.push(`scale offline check: ${fsckS.toFixed(1)} s, peak RSS ${fsckRss.toFixed(0)} MiB`);
  const rss = runs.filter((r) => r.fs === 'hammer2fs' && r.daemon.peakRss !== null).map((r) => r.daemon.peakRss! / 1048576);
  if (rss.length) {
    const peak = Math.max(...rss);
    out.push(`hammer2fs daemon RSS < 256 MiB: ${peak < 256 ? 'met' : 'NOT met'} (peak ${peak.toFixed(0)} MiB over all runs)`);
  }
  return out;
}

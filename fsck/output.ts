// Human and JSON renderings of a check (and of a repair).
import { pfsListType } from '../src/media';
import { C_BREF, C_DATA, C_DIRENT, C_EMPTY, C_FLEAF, C_FNODE, C_INDIRECT, C_INODE, C_BYTES } from './walk';
import { CheckResult, fmtSize } from './check';
import { formatFinding, hex16 } from './findings';
import type { RepairResult } from './repair';

/** The reference's sizetostr(): "%6.2f" with B/KB/MB/GB/TB. */
export function sizetostr(n: number): string {
  const f = (v: number, u: string) => `${v.toFixed(2).padStart(6)}${u}`;
  if (n < 512) return f(n, 'B');
  if (n < 512 * 1024) return f(n / 1024, 'KB');
  if (n < 512 * 1024 * 1024) return f(n / 1024 / 1024, 'MB');
  if (n < 512 * 1024 * 1024 * 1024) return f(n / 1024 / 1024 / 1024, 'GB');
  return f(n / 1024 ** 4, 'TB');
}

const TAB = ' '.repeat(8);

export function volumeCountsLine(c: number[], countEmpty: boolean): string {
  const e = countEmpty ? `, ${c[C_EMPTY]} empty` : '';
  return `${TAB}${c[C_BREF]} blockref (${c[C_INODE]} inode, ${c[C_INDIRECT]} indirect, ${c[C_DATA]} data, ${c[C_DIRENT]} dirent${e}), ${sizetostr(c[C_BYTES])}`;
}

export function freemapCountsLine(c: number[], countEmpty: boolean): string {
  const e = countEmpty ? `, ${c[C_EMPTY]} empty` : '';
  return `${TAB}${c[C_BREF]} blockref (${c[C_FNODE]} node, ${c[C_FLEAF]} leaf${e}), ${sizetostr(c[C_BYTES])}`;
}

/** The type fsck -P prints: a MASTER's subtype if it has one. */
const pfsTypeName = pfsListType;

export interface TextOptions {
  quiet: boolean;
  verbose: boolean;
  perPfs: boolean;
  countEmpty: boolean;
  bestOnly: boolean;
  labels: string[] | null;
}

const zoneLine = (z: number, best: boolean, bestOnly: boolean) =>
  `zone.${z} ${hex16(BigInt(z) * 0x80000000n + 0x10n)}${best && !bestOnly ? ' (best)' : ''}`;

/** The -P listing: each PFS's type, cluster id and label, per zone (reference format). */
export function renderPfsList(r: CheckResult, o: TextOptions): string {
  const out: string[] = [];
  const z = r.zones[r.bestZone];
  if (!z) return '';
  out.push(zoneLine(z.zone, true, o.bestOnly));
  for (const p of r.pfs) {
    if (o.labels?.length && !o.labels.includes(p.name)) continue;
    out.push(`${TAB}${pfsTypeName(p.pfsType, p.pfsSubtype).padEnd(11)} ${p.clid} ${p.name}`);
  }
  return out.join('\n') + '\n';
}

export function renderText(r: CheckResult, o: TextOptions): string {
  const out: string[] = [];
  const fin = r.report.findings.filter((f) => f.severity !== 'info' || o.verbose);
  if (!o.quiet && !r.fatal) {
    const shown = r.zones.filter((z) => !o.bestOnly || z.best);
    out.push('volume header');
    for (const z of shown) {
      const state = !z.valid ? `INVALID: ${z.reason}` : `mirror_tid 0x${z.tid!.toString(16)}${z.stale ? ' (stale)' : ''}`;
      out.push(`${zoneLine(z.zone, z.best, o.bestOnly)} ${state}`);
    }
    out.push('freemap');
    for (const z of shown.filter((x) => x.checked)) {
      out.push(zoneLine(z.zone, z.best, o.bestOnly));
      out.push(freemapCountsLine(z.freemapCounts, o.countEmpty));
    }
    out.push('volume');
    for (const z of shown.filter((x) => x.checked)) {
      out.push(zoneLine(z.zone, z.best, o.bestOnly));
      if (o.perPfs) {
        const list = [...z.pfs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        for (const p of list) {
          if (o.labels?.length && !o.labels.includes(p.name)) continue;
          out.push(`${TAB}${p.name}`);
          out.push(volumeCountsLine(p.counts, o.countEmpty));
        }
      } else {
        out.push(volumeCountsLine(z.volumeCounts, o.countEmpty));
      }
    }
    const f = r.freemap;
    out.push('freemap vs. trees');
    out.push(
      `${TAB}${fmtSize(f.usedBlocks * 16384)} referenced by the header in force, ${fmtSize(f.anyBlocks * 16384)} by all headers; ` +
        `${fmtSize(f.leakedBytes)} leaked; ${f.usedFreeBlocks} blocks in use but free`,
    );
    if (r.pfs.length) {
      out.push('namespace');
      for (const p of r.pfs) {
        if (o.labels?.length && !o.labels.includes(p.name)) continue;
        const what = p.inodes ? `${p.inodes} inodes (${p.directories} directories), ${p.entries} entries` : 'not checked';
        out.push(`${TAB}${p.name.padEnd(12)} ${pfsTypeName(p.pfsType, p.pfsSubtype).padEnd(9)} ${what}: ${p.errors ? `${p.errors} errors` : 'ok'}`);
      }
    }
  }
  for (const f of fin) out.push(formatFinding(f));
  if (r.report.dropped) out.push(`(${r.report.dropped} more findings not shown)`);
  return out.join('\n') + (out.length ? '\n' : '');
}

export function summaryLine(r: CheckResult, status: number): string {
  if (r.fatal) return r.fatal.message.startsWith(r.spec) ? r.fatal.message : `${r.spec}: ${r.fatal.message}`;
  const rep = r.report;
  const parts: string[] = [];
  parts.push(rep.errors ? `${rep.errors} error${rep.errors > 1 ? 's' : ''} (${rep.fixableErrors} fixable with -y)` : 'no errors');
  if (rep.warnings) parts.push(`${rep.warnings} warning${rep.warnings > 1 ? 's' : ''}`);
  const verdict = status === 0 ? 'clean' : status === 1 ? 'errors corrected' : status === 4 ? 'NOT CLEAN' : 'check failed';
  return `${r.spec}: ${verdict}: ${parts.join(', ')}`;
}

const countsObj = (c: number[]) => ({
  blockrefs: c[C_BREF],
  empty: c[C_EMPTY],
  inodes: c[C_INODE],
  indirect: c[C_INDIRECT],
  data: c[C_DATA],
  dirents: c[C_DIRENT],
  freemapNodes: c[C_FNODE],
  freemapLeaves: c[C_FLEAF],
  bytes: c[C_BYTES],
});

export function toJson(r: CheckResult, status: number, repair?: RepairResult, initial?: CheckResult): unknown {
  const one = (x: CheckResult) => ({
    fatal: x.fatal,
    clean: !x.fatal && x.report.errors === 0,
    errors: x.report.errors,
    fixableErrors: x.report.fixableErrors,
    warnings: x.report.warnings,
    bestZone: x.bestZone,
    zones: x.zones.map((z) => ({
      zone: z.zone,
      valid: z.valid,
      reason: z.reason,
      mirrorTid: z.tid?.toString(),
      best: z.best,
      stale: z.stale,
      checked: z.checked,
      freemap: countsObj(z.freemapCounts),
      volume: countsObj(z.volumeCounts),
      freemapErrors: z.freemapErrors,
      volumeErrors: z.volumeErrors,
      pfs: z.pfs.map((p) => ({ name: p.name, blockrefs: countsObj(p.counts) })),
    })),
    pfs: x.pfs.map((p) => ({
      name: p.name,
      type: pfsTypeName(p.pfsType, p.pfsSubtype),
      clid: p.clid,
      inodes: p.inodes,
      directories: p.directories,
      entries: p.entries,
      errors: p.errors,
      blockrefs: countsObj(p.counts),
    })),
    freemap: x.freemap,
    findings: x.report.findings,
    findingsNotShown: x.report.dropped,
    byCode: Object.fromEntries(x.report.byCode),
    passes: x.passes,
    ms: x.ms,
    peakRss: x.peakRss,
  });
  const out: Record<string, unknown> = { image: r.spec, status, ...one(r) };
  if (repair) {
    out.repair = { rounds: repair.rounds, wrote: repair.wrote, actions: repair.actions, rollback: repair.rollback, stopped: repair.stopped };
    if (initial) out.initial = one(initial);
  }
  return out;
}

export function jsonStringify(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x), 2);
}

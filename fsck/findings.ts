// What fsck found: every problem is a Finding with a severity, a stable code
// (for scripts and tests), where it is, and whether -y can fix it.
//
// Severity decides the exit status: errors make an image "not clean",
// warnings (leaked space, accounting drift, older headers' trees no longer
// protected) are reported but leave the verdict clean; they are what a live
// HAMMER2 filesystem accumulates in normal operation until bulkfree runs.
import { Blockref, BREF_TYPE_NAMES } from '../src/media';

export type Severity = 'error' | 'warning' | 'info';

export interface Finding {
  severity: Severity;
  /** Stable identifier, e.g. "check", "nlinks", "orphan", "used-free". */
  code: string;
  message: string;
  /** Volume header zone whose tree holds the problem (absent: filesystem-wide). */
  zone?: number;
  pfs?: string;
  /** Inode number, hex. */
  inum?: string;
  /** The blockref at fault, as the reference prints it. */
  bref?: { dataOff: string; type: string; key: string; keybits: number };
  /** -y can repair it. */
  fixable: boolean;
}

/** Cap on findings kept in memory and printed; counts go on beyond it. */
export const MAX_FINDINGS = 5000;

export class Report {
  readonly findings: Finding[] = [];
  errors = 0;
  warnings = 0;
  infos = 0;
  fixableErrors = 0;
  dropped = 0;
  readonly byCode = new Map<string, number>();
  /** Errors per PFS label. */
  readonly errorsByPfs = new Map<string, number>();
  /** Called as findings arrive (verbose output, progress bar). */
  onFinding?: (f: Finding) => void;

  add(f: Finding): void {
    if (f.severity === 'error') {
      this.errors++;
      if (f.pfs !== undefined) this.errorsByPfs.set(f.pfs, (this.errorsByPfs.get(f.pfs) ?? 0) + 1);
      if (f.fixable) this.fixableErrors++;
    } else if (f.severity === 'warning') this.warnings++;
    else this.infos++;
    this.byCode.set(f.code, (this.byCode.get(f.code) ?? 0) + 1);
    if (this.findings.length < MAX_FINDINGS) this.findings.push(f);
    else this.dropped++;
    this.onFinding?.(f);
  }

  count(code: string): number {
    return this.byCode.get(code) ?? 0;
  }
}

export const hex16 = (n: bigint | number): string => BigInt(n).toString(16).padStart(16, '0');

export function brefInfo(b: Blockref): Finding['bref'] {
  return {
    dataOff: hex16(b.dataOff),
    type: BREF_TYPE_NAMES[b.type] ?? String(b.type),
    key: hex16(b.key),
    keybits: b.keybits,
  };
}

/** "0000000009000010 data         0000000000000000/16" as fsck_hammer2 prints a blockref. */
export function formatBref(b: NonNullable<Finding['bref']>): string {
  return `${b.dataOff} ${b.type.padEnd(12)} ${b.key}/${String(b.keybits).padEnd(2)}`;
}

export function formatFinding(f: Finding): string {
  const where: string[] = [];
  if (f.zone !== undefined) where.push(`zone.${f.zone}`);
  if (f.pfs !== undefined) where.push(f.pfs);
  if (f.inum !== undefined) where.push(`inode 0x${f.inum}`);
  const pre = f.severity === 'error' ? 'ERROR' : f.severity === 'warning' ? 'warning' : 'note';
  const loc = where.length ? ` [${where.join(' ')}]` : '';
  const b = f.bref ? ` ${formatBref(f.bref)}` : '';
  return `${pre}${loc}${b} ${f.message}${f.fixable && f.severity !== 'info' ? ' (fixable)' : ''}`;
}

// A one-line progress bar on stderr for terminals: the phase, a bar and the
// bytes walked against an estimate (the super-root's data_count). Redrawn at
// most ten times a second; nothing at all when stderr is not a TTY.

export class Progress {
  private phase = '';
  private done = 0;
  private total = 1;
  private unit: (n: number) => string = fmtBytes;
  private last = 0;
  private shown = false;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  static forTerminal(enabled: boolean): Progress | null {
    return enabled && process.stderr.isTTY ? new Progress() : null;
  }

  /** `unit` formats the amount done (bytes by default; a count for work that is not bytes). */
  start(phase: string, total: number, unit: (n: number) => string = fmtBytes): void {
    this.phase = phase;
    this.done = 0;
    this.total = Math.max(1, total);
    this.unit = unit;
    this.draw(true);
  }

  add(bytes: number): void {
    this.done += bytes;
    const now = Date.now();
    if (now - this.last >= 100) this.draw(false);
  }

  private draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const cols = Math.max(40, Math.min(this.out.columns || 80, 120));
    const frac = Math.min(1, this.done / this.total);
    const label = `${this.phase} ${this.unit(this.done)}`.padEnd(Math.min(28, cols - 25));
    const width = Math.max(5, cols - 1 - label.length - 8);
    const fill = Math.round(frac * width);
    const line = `${label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${String(Math.floor(frac * 100)).padStart(3)}%`;
    this.out.write(`\r${line.slice(0, cols - 1)}`);
    this.shown = true;
  }

  /** Erase the bar (before normal output). */
  clear(): void {
    if (!this.shown) return;
    const cols = Math.max(40, Math.min(this.out.columns || 80, 120));
    this.out.write(`\r${' '.repeat(cols - 1)}\r`);
    this.shown = false;
  }
}

export function fmtBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n}${u[i]}`;
}

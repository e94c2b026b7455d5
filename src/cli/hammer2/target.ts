// What a directive acts on: a mounted PFS (its daemon, over the control
// channel) or an unmounted image opened in-process. Both run the same
// administration table (src/admin), so a request means the same either way.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { adminOps } from '../../admin';
import { ControlClient } from '../../control/client';
import { allSockets, findSockets, runtimeDir } from '../../control/paths';
import { asControlError, ControlError, Progress } from '../../control/protocol';
import { hammer2MountOf, mountTable } from '../../daemon/options';
import type { Hammer2Fs } from '../../fs';
import { parseDeviceSpec } from '../spec';
import { DirectiveError } from './context';

export interface Target {
  /** How to name it in messages. */
  name: string;
  /** The PFS the path or spec selects (a mount's PFS, or IMAGE@LABEL's label). */
  label: string | null;
  /** The mountpoint when the target is a mounted PFS. */
  mountpoint: string | null;
  /** Whether requests go to a daemon that holds the image (else the image is open in this process). */
  readonly viaDaemon: boolean;
  request<T = unknown>(op: string, args?: Record<string, unknown>, progress?: (p: Progress) => void): Promise<T>;
  close(): Promise<void>;
}

class DaemonTarget implements Target {
  readonly viaDaemon = true;
  constructor(
    private client: ControlClient,
    readonly name: string,
    readonly label: string | null,
    readonly mountpoint: string | null,
  ) {}
  request<T>(op: string, args: Record<string, unknown> = {}, progress?: (p: Progress) => void): Promise<T> {
    return this.client.request<T>(op, args, progress);
  }
  async close(): Promise<void> {
    this.client.close();
  }
}

class ImageTarget implements Target {
  readonly mountpoint = null;
  readonly viaDaemon = false;
  private ops: ReturnType<typeof adminOps>;
  constructor(
    private h2: Hammer2Fs,
    readonly name: string,
    readonly label: string | null,
  ) {
    // Loaded here: a command that talks to a daemon does not need the administration table.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const admin = require('../../admin') as typeof import('../../admin');
    this.ops = admin.adminOps({ fs: h2, mounts: () => [], describe: () => ({ pid: process.pid, devices: name, socket: null }) });
  }
  async request<T>(op: string, args: Record<string, unknown> = {}, progress?: (p: Progress) => void): Promise<T> {
    const o = this.ops[op];
    if (!o) throw new ControlError('EOPNOTSUPP', `unknown request "${op}"`);
    try {
      return (await o.run(args, { peer: { pid: process.pid, uid: process.getuid?.() ?? 0, gid: 0 }, progress: progress ?? (() => {}), gone: new AbortController().signal })) as T;
    } catch (e) {
      throw asControlError(e); // as a daemon would answer
    }
  }
  async close(): Promise<void> {
    try {
      if (this.h2.writable) this.h2.flush();
    } finally {
      this.h2.close();
    }
  }
}

async function connectAny(socks: string[]): Promise<ControlClient | null> {
  for (const s of socks) {
    try {
      return await ControlClient.connect(s);
    } catch {
      /* left by a daemon that died */
    }
  }
  return null;
}

/** The daemon serving the mount that holds `p`, if `p` is inside a hammer2 mount. */
async function mountedTarget(p: string): Promise<Target | null> {
  const m = hammer2MountOf(p);
  if (!m) return null;
  let spec: { devices: string; label: string };
  try {
    spec = parseDeviceSpec(m.source);
  } catch {
    throw new DirectiveError(`${m.point}: cannot tell which image is mounted there ("${m.source}")`);
  }
  let socks: string[] = [];
  try {
    socks = findSockets(spec.devices.split(':')[0]);
  } catch {
    /* image path gone: fall back to asking every daemon */
  }
  let client = await connectAny(socks);
  if (!client) {
    // The image was renamed or is reached through another path: ask each daemon.
    for (const s of allSockets()) {
      const c = await connectAny([s]);
      if (!c) continue;
      try {
        const info = await c.request<{ mounts: { mountpoint: string }[] }>('info');
        if (info.mounts.some((x) => x.mountpoint === m.point)) {
          client = c;
          break;
        }
      } catch {
        /* skip */
      }
      c.close();
    }
  }
  if (!client) {
    throw new DirectiveError(
      `${m.point}: the daemon serving this mount does not answer on a control socket in ${runtimeDir()} (started with another HAMMER2_RUNDIR? if it was killed, \`fusermount3 -u ${m.point}\` clears the mount)`,
    );
  }
  return new DaemonTarget(client, m.point, spec.label, m.point);
}

export interface TargetOptions {
  /** Open an unmounted image for writing. */
  write: boolean;
  /** Label when an image is given without @LABEL (null: none needed). */
  defaultLabel?: string | null;
}

/**
 * Resolve a path inside a mounted PFS (or a mountpoint, or the current
 * directory) or an unmounted `IMAGE[@LABEL]` to a target. An image that a
 * daemon holds open is reached through that daemon, never opened twice.
 */
export async function openTarget(what: string | undefined, o: TargetOptions): Promise<Target> {
  const given = what ?? '.';
  let real: string | null = null;
  try {
    real = fs.realpathSync(given);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTCONN') {
      throw new DirectiveError(`${given}: the daemon serving this mount died ("Transport endpoint is not connected"); clear it with \`fusermount3 -u MOUNTPOINT\``);
    }
    real = null;
  }
  if (real) {
    const st = fs.statSync(real);
    if (st.isDirectory() || !(st.isFile() || st.isBlockDevice()) || hammer2MountOf(real)) {
      const t = await mountedTarget(real);
      if (t) return t;
      throw new DirectiveError(`${given}: not inside a mounted HAMMER2 filesystem (give -s MOUNTPOINT or IMAGE@LABEL)`);
    }
  }
  // An image, with or without @LABEL.
  let devices: string;
  let label: string | null;
  if (real) {
    devices = real;
    label = o.defaultLabel ?? null;
  } else {
    const at = given.lastIndexOf('@');
    if (at <= 0) throw new DirectiveError(`${given}: no such file, mount or image`);
    const spec = parseDeviceSpec(given);
    devices = spec.devices;
    label = spec.label;
  }
  const vols = devices.split(':').map((d) => path.resolve(d));
  for (const v of vols) if (!fs.existsSync(v)) throw new DirectiveError(`${v}: no such file or device`);
  devices = vols.join(':');
  const client = await connectAny(findSockets(vols[0]));
  if (client) {
    const mp = mountTable().find((m) => m.fstype === 'fuse.hammer2' && label !== null && m.source === `${devices}@${label}`);
    return new DaemonTarget(client, devices, label, mp?.point ?? null);
  }
  let h2: Hammer2Fs;
  try {
    // Loaded only here: a command served by a daemon never needs the filesystem code.
    const { Hammer2Fs } = await import('../../fs');
    h2 = await Hammer2Fs.open(devices, { writable: o.write, lock: true });
  } catch (e) {
    throw new DirectiveError((e as Error).message);
  }
  return new ImageTarget(h2, devices, label);
}

/** Every hammer2 mountpoint (pfs-list and pfs-delete without -s look at all of them). */
export function hammer2Mounts(): string[] {
  return mountTable()
    .filter((m) => m.fstype === 'fuse.hammer2')
    .map((m) => m.point);
}

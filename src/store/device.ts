// One backing file or block device, opened by path, with its size and an
// optional exclusive lock. All I/O is positional and synchronous: the FUSE
// daemon serves one request at a time on its JS thread and the image lives on
// another filesystem, so a pread costs less than a trip through the threadpool.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errnoName, nativeShim } from './native';

export class DeviceError extends Error {
  override name = 'DeviceError';
  constructor(
    msg: string,
    readonly code: string = 'EIO',
    /** A failed write or sync (not a bad block to read around). */
    readonly writing = false,
  ) {
    super(msg);
  }
}

export class Device {
  private _size: number;
  /** Bytes the device holds (as of open, or the last refreshSize/extend). */
  get size(): number {
    return this._size;
  }
  readonly isBlockDevice: boolean;
  private closed = false;
  /** The O_DIRECT descriptor of writeWhole: undefined until first needed, null where it cannot be had. */
  private direct: number | null | undefined;

  private constructor(readonly path: string, readonly fd: number, readonly writable: boolean) {
    const st = fs.fstatSync(fd);
    this.isBlockDevice = st.isBlockDevice();
    if (this.isBlockDevice) this._size = blockDeviceSize(fd, st, path);
    else if (st.isFile()) this._size = st.size;
    else throw new DeviceError(`${path}: not a regular file or block device`, 'EINVAL');
  }

  /** Ask the host again how big the device is (it may have been grown under us: truncate, lvextend). */
  refreshSize(): number {
    const st = fs.fstatSync(this.fd);
    this._size = this.isBlockDevice ? blockDeviceSize(this.fd, st, this.path) : st.size;
    return this._size;
  }

  /**
   * Make an image file `bytes` long (sparse: nothing is written). Block
   * devices cannot be grown from here; the caller grows them (lvextend,
   * partition tools) and calls refreshSize.
   */
  extend(bytes: number): void {
    if (!this.writable) throw new DeviceError(`${this.path}: opened read-only`, 'EROFS');
    if (this.isBlockDevice) throw new DeviceError(`${this.path}: a block device of ${this._size} bytes cannot be grown by writing past its end`, 'EINVAL');
    if (bytes <= this._size) return;
    try {
      fs.ftruncateSync(this.fd, bytes);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new DeviceError(`${this.path}: cannot grow to ${bytes} bytes: ${err.message}`, err.code ?? 'EIO');
    }
    this._size = bytes;
  }

  static open(path: string, opts: { writable: boolean; lock?: boolean }): Device {
    let fd: number;
    try {
      fd = fs.openSync(path, opts.writable ? 'r+' : 'r');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new DeviceError(`${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`, err.code ?? 'EIO');
    }
    let dev: Device;
    try {
      dev = new Device(path, fd, opts.writable);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    if (opts.lock) {
      try {
        dev.lock(opts.writable);
      } catch (e) {
        fs.closeSync(fd);
        throw e;
      }
    }
    return dev;
  }

  /** Exclusive lock for writers, shared for readers, so two writers never share an image. */
  private lock(exclusive: boolean): void {
    const shim = nativeShim();
    if (!shim) return; // warned once by nativeShim()
    const r = shim.flock(this.fd, exclusive);
    if (r !== 0) {
      const holders = lockHolders(this.fd);
      const who = holders.length ? ` ${holders.map(describePid).join(', ')}` : ' another process';
      throw new DeviceError(
        `${this.path}: image is in use by${who} (${exclusive ? 'exclusive' : 'shared'} lock refused)`,
        'EBUSY',
      );
    }
  }

  /** Read exactly `len` bytes at `pos`; bytes past the end of the device read as zeros. */
  read(pos: number, len: number, out: Buffer = Buffer.allocUnsafe(len), outOff = 0): Buffer {
    if (pos < 0 || !Number.isSafeInteger(pos)) throw new DeviceError(`${this.path}: bad offset ${pos}`);
    let done = 0;
    while (done < len) {
      if (pos + done >= this.size) {
        out.fill(0, outOff + done, outOff + len);
        break;
      }
      let n: number;
      try {
        n = fs.readSync(this.fd, out, outOff + done, len - done, pos + done);
      } catch (e) {
        throw new DeviceError(`${this.path}: read error at ${pos + done}: ${(e as Error).message}`);
      }
      if (n === 0) {
        out.fill(0, outOff + done, outOff + len);
        break;
      }
      done += n;
    }
    return out;
  }

  write(pos: number, buf: Uint8Array): void {
    if (!this.writable) throw new DeviceError(`${this.path}: opened read-only`, 'EROFS');
    if (pos < 0 || pos + buf.length > this.size) {
      throw new DeviceError(`${this.path}: write at ${pos}+${buf.length} outside device of ${this.size} bytes`);
    }
    let done = 0;
    while (done < buf.length) {
      try {
        done += fs.writeSync(this.fd, buf, done, buf.length - done, pos + done);
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        throw new DeviceError(`${this.path}: write error at ${pos + done}: ${err.message}`, err.code ?? 'EIO', true);
      }
    }
  }

  /**
   * Write `buf` as one request that a kill of this process cannot cut
   * short: the volume header, which a commit rewrites in place. A buffered
   * write stops at a page boundary when a fatal signal arrives inside it,
   * which would leave a header half new and half old (and, on an image
   * with one header zone, nothing to mount). Through a second descriptor
   * opened O_DIRECT the write reaches the device as one request. Where the
   * host refuses O_DIRECT (tmpfs) or the shim is absent: a plain write. A
   * power loss can still tear it at the device's own write unit (see the
   * README).
   */
  writeWhole(pos: number, buf: Uint8Array): void {
    const shim = nativeShim();
    const aligned = pos % 4096 === 0 && buf.length % 4096 === 0;
    if (aligned) this.directFd();
    if (typeof this.direct !== 'number' || !aligned || !shim?.pwriteAligned) return this.write(pos, buf);
    if (pos < 0 || pos + buf.length > this.size) throw new DeviceError(`${this.path}: write at ${pos}+${buf.length} outside device of ${this.size} bytes`);
    const r = shim.pwriteAligned(this.direct, buf, pos);
    if (r === buf.length) return;
    if (r === -22) {
      // EINVAL: this host takes no direct I/O of that shape after all.
      fs.closeSync(this.direct);
      this.direct = null;
      return this.write(pos, buf);
    }
    const code = r < 0 ? errnoName(-r) : 'EIO';
    throw new DeviceError(`${this.path}: write error at ${pos}: ${r < 0 ? code : `short write (${r} bytes)`}`, code, true);
  }

  /**
   * The O_DIRECT descriptor writeWhole uses (opened on first use), or null
   * where there is none: the host refuses it, the shim is absent, or the
   * path no longer names our file.
   */
  directFd(): number | null {
    const shim = nativeShim();
    if (this.direct === undefined && shim?.pwriteAligned && this.writable) {
      try {
        this.direct = fs.openSync(this.path, fs.constants.O_WRONLY | fs.constants.O_DIRECT);
        const a = fs.fstatSync(this.direct);
        const b = fs.fstatSync(this.fd);
        if (a.ino !== b.ino || a.dev !== b.dev || a.rdev !== b.rdev) {
          // Not the same file any more (renamed under us): never write through it.
          fs.closeSync(this.direct);
          this.direct = null;
        }
      } catch {
        this.direct = null;
      }
    }
    return typeof this.direct === 'number' ? this.direct : null;
  }

  /** Write `bufs` back to back at `pos` (`bytes` = their total), one pwritev when the kernel takes it all. */
  writev(pos: number, bufs: Uint8Array[], bytes: number): void {
    if (!this.writable) throw new DeviceError(`${this.path}: opened read-only`, 'EROFS');
    if (pos < 0 || pos + bytes > this.size) {
      throw new DeviceError(`${this.path}: write at ${pos}+${bytes} outside device of ${this.size} bytes`);
    }
    let n: number;
    try {
      n = fs.writevSync(this.fd, bufs as NodeJS.ArrayBufferView[], pos);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new DeviceError(`${this.path}: write error at ${pos}: ${err.message}`, err.code ?? 'EIO', true);
    }
    if (n === bytes) return;
    // Short: finish buffer by buffer.
    let at = 0;
    for (const b of bufs) {
      if (at + b.length > n) {
        const skip = Math.max(0, n - at);
        this.write(pos + at + skip, b.subarray(skip));
      }
      at += b.length;
    }
  }

  /** Make written blocks durable. fdatasync: the data and what is needed to read it back, not timestamps. */
  sync(): void {
    try {
      fs.fdatasyncSync(this.fd);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new DeviceError(`${this.path}: fsync failed: ${err.message}`, err.code ?? 'EIO', true);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (typeof this.direct === 'number') fs.closeSync(this.direct);
    fs.closeSync(this.fd);
  }
}

function blockDeviceSize(fd: number, st: fs.Stats, path: string): number {
  const shim = nativeShim();
  if (shim) {
    const n = shim.blockDeviceSize(fd);
    if (n >= 0) return n;
  }
  // Without the shim, sysfs knows the size of every block device in 512-byte sectors.
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  try {
    const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim());
    if (Number.isSafeInteger(sectors)) return sectors * 512;
  } catch {
    /* fall through */
  }
  throw new DeviceError(`${path}: cannot determine block device size (native shim unavailable and no sysfs entry)`);
}

/** The pids holding flock locks on the file open as `fd` (from /proc/locks). */
export function lockHolders(fd: number): number[] {
  try {
    const st = fs.fstatSync(fd);
    const id = `${(st.dev >>> 8).toString(16).padStart(2, '0')}:${(st.dev & 0xff).toString(16).padStart(2, '0')}:${st.ino}`;
    const pids = new Set<number>();
    for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      // "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF" ("->" marks a waiter)
      if (f[1] !== 'FLOCK' || f[4] === undefined) continue;
      const dev = f[5]?.split(':');
      if (!dev || dev.length !== 3) continue;
      const norm = `${parseInt(dev[0], 16).toString(16).padStart(2, '0')}:${parseInt(dev[1], 16).toString(16).padStart(2, '0')}:${dev[2]}`;
      if (norm === id && f[4] !== String(process.pid)) pids.add(Number(f[4]));
    }
    return [...pids];
  } catch {
    return [];
  }
}

/** "process 1234 (mount_hammer2 ...)" for messages. */
export function describePid(pid: number): string {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    const shown = cmd.map((a) => path.basename(a)).slice(0, 4).join(' ');
    return `process ${pid} (${shown})`;
  } catch {
    return `process ${pid}`;
  }
}

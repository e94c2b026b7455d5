// struct uuid as DragonFly stores it: time_low, time_mid, time_hi_and_version
// in host (little-endian) order, then clock_seq and node as bytes.

export function uuidToString(b: Uint8Array): string {
  const buf = Buffer.from(b.buffer, b.byteOffset, 16);
  const h = (n: number, w: number) => n.toString(16).padStart(w, '0');
  return (
    h(buf.readUInt32LE(0), 8) +
    '-' +
    h(buf.readUInt16LE(4), 4) +
    '-' +
    h(buf.readUInt16LE(6), 4) +
    '-' +
    buf.subarray(8, 10).toString('hex') +
    '-' +
    buf.subarray(10, 16).toString('hex')
  );
}

export function uuidFromString(s: string): Buffer {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(s);
  if (!m) throw new Error(`bad uuid: ${s}`);
  const b = Buffer.alloc(16);
  b.writeUInt32LE(parseInt(m[1], 16), 0);
  b.writeUInt16LE(parseInt(m[2], 16), 4);
  b.writeUInt16LE(parseInt(m[3], 16), 6);
  Buffer.from(m[4] + m[5], 'hex').copy(b, 8);
  return b;
}

/** A random (version 4) uuid in on-media order. */
export function uuidRandom(): Buffer {
  // node:crypto is loaded here, not by every command that reads an image.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const b = (require('node:crypto') as typeof import('node:crypto')).randomBytes(16);
  b.writeUInt16LE((b.readUInt16LE(6) & 0x0fff) | 0x4000, 6);
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

/**
 * HAMMER2 keeps uid/gid as uuids; a unix id is the "degenerate" form:
 * The reference keeps the unix id in the last 4 bytes (node[2..5]).
 */
export function uuidToXid(b: Uint8Array): number {
  return (b[12] | (b[13] << 8) | (b[14] << 16) | (b[15] << 24)) >>> 0;
}

export function xidToUuid(id: number, out: Buffer = Buffer.alloc(16)): Buffer {
  out.fill(0, 0, 16);
  out.writeUInt32LE(id >>> 0, 12);
  return out;
}

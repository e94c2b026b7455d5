// Codec unit tests with known vectors: values printed by the reference
// `hammer2 hash` / `hammer2 dhash`, and the standard CRC32C check value.
import t from 'tap';
import { deflateSync } from 'node:zlib';
import {
  icrc32,
  crc32cUpdate,
  dirhash,
  initCodecs,
  xxh64,
  sha192,
  computeCheck,
  verifyCheck,
  decodeData,
  lz4DecodeHammer2,
  lz4EncodeHammer2,
  CorruptCompressedData,
  encodeBlockref,
  decodeBlockref,
  emptyBlockref,
  uuidFromString,
  uuidToString,
  uuidToXid,
  xidToUuid,
  putU64,
  decodeInode,
  encodeInode,
} from '../src/media';

t.before(async () => {
  await initCodecs();
});

t.test('crc32c', async (t) => {
  t.equal(icrc32(Buffer.from('123456789')), 0xe3069283, 'standard check value');
  t.equal(icrc32(Buffer.alloc(0)), 0);
  const big = Buffer.alloc(1000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff;
  // Incremental over odd splits equals one pass (exercises the 8-byte and tail paths).
  const whole = icrc32(big);
  t.equal(crc32cUpdate(crc32cUpdate(0, big, 0, 333), big, 333, 1000), whole);
  t.equal(icrc32(big, 5, 13), icrc32(big.subarray(5, 13)));
});

t.test('dirhash matches `hammer2 hash`', async (t) => {
  const vectors: [string, string][] = [
    ['foo', 'cfc4ae1d61d98000'],
    ['bar', '8ab7133119868000'],
    ['hello.world', 'cc1c3c9a2aea8000'],
    ['a-b_c~d.e', 'afa85316e9058000'],
    ['x'.repeat(255), 'd3996824bbbd8000'],
  ];
  for (const [name, hex] of vectors) t.equal(dirhash(Buffer.from(name)).toString(16), hex, name);
});

t.test('xxhash64 with the HAMMER2 seed matches `hammer2 dhash`', async (t) => {
  // dhash hashes the name zero-padded to a 1 KiB record.
  const vectors: [string, string][] = [
    ['foo', 'acbd8ee7f542187d'],
    ['bar', '409be7b9a3870315'],
    ['hello.world', 'a31e43e18014845a'],
    ['a-b_c~d.e', 'fcb5311b90984c54'],
    ['x'.repeat(255), '28a4b5edc34d09a3'],
  ];
  for (const [name, hex] of vectors) {
    const rec = Buffer.alloc(1024);
    rec.write(name);
    t.equal(xxh64(rec).toString(16).padStart(16, '0'), hex, name);
  }
});

t.test('sha192 folds the last SHA-256 word into the third', async (t) => {
  const d = sha192(Buffer.from('abc'));
  // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 | b00361a3 96177a9c b410ff61 f20015ad
  t.equal(d.length, 24);
  t.equal(d.subarray(0, 16).toString('hex'), 'ba7816bf8f01cfea414140de5dae2223');
  const w2 = Buffer.from('b00361a396177a9c', 'hex');
  const w3 = Buffer.from('b410ff61f20015ad', 'hex');
  const x = Buffer.alloc(8);
  for (let i = 0; i < 8; i++) x[i] = w2[i] ^ w3[i];
  t.equal(d.subarray(16, 24).toString('hex'), x.toString('hex'));
});

t.test('check methods round-trip and detect a flipped bit', async (t) => {
  const data = Buffer.alloc(4096, 0x5a);
  for (const method of [2, 3, 4, 5]) {
    const chk = computeCheck(method, data);
    t.ok(verifyCheck(method, chk, data), `method ${method} verifies`);
    const bad = Buffer.from(data);
    bad[100] ^= 1;
    t.notOk(verifyCheck(method, chk, bad), `method ${method} catches corruption`);
  }
  t.ok(verifyCheck(0, Buffer.alloc(64), data), 'none always passes');
  t.ok(verifyCheck(1, Buffer.alloc(64), data), 'disabled always passes');
  t.notOk(verifyCheck(9, Buffer.alloc(64), data), 'unknown method fails');
});

t.test('lz4 framing', async (t) => {
  const src = Buffer.alloc(65536);
  for (let i = 0; i < src.length; i++) src[i] = (i % 251) ^ ((i >> 9) & 0xff);
  const enc = lz4EncodeHammer2(src, 65536);
  t.ok(enc, 'compressible data compresses');
  const out = Buffer.alloc(65536, 0xff);
  t.equal(lz4DecodeHammer2(enc!, out), 65536);
  t.ok(out.equals(src), 'round trip');
  // Smaller output than the logical buffer: the tail reads as zeros.
  const small = lz4EncodeHammer2(Buffer.alloc(8192, 7), 65536)!;
  const o2 = Buffer.alloc(65536, 0xff);
  decodeData(2, small, o2);
  t.ok(o2.subarray(0, 8192).equals(Buffer.alloc(8192, 7)));
  t.ok(o2.subarray(8192).equals(Buffer.alloc(65536 - 8192)));
  // Overlapping matches (runs) decode correctly.
  const runs = Buffer.concat([Buffer.from('ab'), Buffer.alloc(5000, 0x61), Buffer.from('xyz'.repeat(300))]);
  const e3 = lz4EncodeHammer2(runs, 65536)!;
  const o3 = Buffer.alloc(runs.length);
  lz4DecodeHammer2(e3, o3);
  t.ok(o3.equals(runs));
});

t.test('lz4 rejects corrupt input without reading or writing out of bounds', async (t) => {
  const src = Buffer.alloc(65536, 'hello world ');
  const enc = lz4EncodeHammer2(src, 65536)!;
  const out = Buffer.alloc(65536);
  const truncLen = Buffer.from(enc);
  truncLen.writeUInt32LE(enc.length * 2, 0);
  t.throws(() => lz4DecodeHammer2(truncLen, out), { name: 'CorruptCompressedData' }, 'length beyond block');
  const small = Buffer.alloc(100);
  t.throws(() => lz4DecodeHammer2(enc, small), { name: 'CorruptCompressedData' }, 'output overflow');
  let seed = 1;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  let errors = 0;
  for (let i = 0; i < 300; i++) {
    const b = Buffer.from(enc);
    for (let k = 0; k < 3; k++) b[4 + (rnd() % (enc.length - 4))] = rnd();
    try {
      lz4DecodeHammer2(b, out);
    } catch (e) {
      t.type(e, CorruptCompressedData);
      errors++;
    }
  }
  t.ok(errors > 0, 'some corruptions are detected');
});

t.test('zlib decoding', async (t) => {
  const src = Buffer.alloc(65536, 'zlib data ');
  const z = deflateSync(src);
  const out = Buffer.alloc(65536);
  decodeData(3, z, out);
  t.ok(out.equals(src));
  t.throws(() => decodeData(3, Buffer.from('not zlib at all'), out), { name: 'CorruptCompressedData' });
});

t.test('blockref encode/decode round trip', async (t) => {
  const b = emptyBlockref();
  b.type = 3;
  b.methods = 0x32;
  b.keybits = 16;
  b.key = 0x123450000n;
  b.mirrorTid = 0x11n;
  b.dataOff = 0x440040an;
  b.check.writeBigUInt64LE(0xdeadbeefcafebaben, 0);
  const buf = Buffer.alloc(128);
  encodeBlockref(b, buf, 0);
  t.same(decodeBlockref(buf, 0), b);
});

t.test('uuid text and unix ids', async (t) => {
  const s = '5cbb9ad1-862d-11dc-a94d-01301bb8a9f5';
  t.equal(uuidToString(uuidFromString(s)), s);
  t.equal(uuidToXid(xidToUuid(1234)), 1234);
  t.equal(uuidToXid(Buffer.alloc(16)), 0);
});

t.test('putU64 stores as writeBigUInt64LE does, and refuses what it would', async (t) => {
  // A pooled buffer: a view that does not start its ArrayBuffer.
  const pooled = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
  t.ok(pooled.byteOffset > 0 || pooled.buffer.byteLength > pooled.length, 'a view into a larger buffer');
  for (const v of [0n, 1n, 0x0123456789abcdefn, (1n << 64n) - 1n, 1n << 63n]) {
    for (const off of [0, 3, 9]) {
      const a = Buffer.from(pooled);
      const b = Buffer.from(pooled);
      a.writeBigUInt64LE(v, off);
      putU64(b, off, v);
      t.same(b, a, `value ${v} at ${off}`);
    }
  }
  const whole = Buffer.alloc(64);
  putU64(whole.subarray(16, 32), 8, 0xffn);
  t.equal(whole.readBigUInt64LE(24), 0xffn, 'through a subarray, at its offset in the whole');
  t.throws(() => putU64(Buffer.alloc(16), 0, -1n), RangeError);
  t.throws(() => putU64(Buffer.alloc(16), 0, 1n << 64n), RangeError);
  t.throws(() => putU64(Buffer.alloc(16), 9, 1n), RangeError);
  t.throws(() => putU64(Buffer.alloc(16), -1, 1n), RangeError);
});

t.test('a decoded inode\'s fields are its own: changing them leaves encoded buffers alone', async (t) => {
  const raw = Buffer.alloc(1024);
  raw.writeUInt16LE(3, 0x80); // name_len
  raw.write('abc', 0x100);
  raw.fill(7, 0x30, 0x40); // uid
  const src = Buffer.from(raw);
  const ip = decodeInode(raw);
  ip.meta.uid.fill(9);
  ip.u.fill(5, 0, 16);
  t.same(raw, src, 'the buffer decoded from is not changed');
  const out = encodeInode(ip);
  t.equal(out[0x30], 9, 'changed uid encoded');
  t.equal(out[0x200], 5, 'changed union encoded');
  const copy = Buffer.from(out);
  ip.meta.gid.fill(4);
  ip.filename.fill(0x41);
  ip.u.fill(6);
  t.same(out, copy, 'a buffer encodeInode returned does not change through the inode');
  const again = encodeInode(ip);
  t.equal(again[0x40], 4);
  t.equal(again.subarray(0x100, 0x103).toString(), 'AAA');
  t.equal(again[0x200], 6);
});

// The native codec accelerators (native-shim/hammer2_shim.c) against the JS
// and wasm implementations they stand in for: CRC32C, XXH64, zero detection,
// and LZ4 compression (decoded by our own decoder and by lz4-wasm).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { decompress as lz4wasmDecompress } from 'lz4-wasm-nodejs';
import { accel } from '../src/media/accel';
import { crc32cJs, icrc32, initCodecs, xxh64Wasm, encodeData, decodeData, CompMethod, isAllZero } from '../src/media';

t.before(async () => {
  await initCodecs({ wasm: true });
});

/** Compressible text, random bytes, runs, and mixes of them. */
function samples(): Buffer[] {
  const text = Buffer.from(
    Array.from({ length: 3000 }, (_, i) => `2026-11-21 12:${String(i % 60).padStart(2, '0')} host svc[${i * 7}]: event ${i % 13} ok\n`).join(''),
  );
  const out: Buffer[] = [];
  for (const n of [0, 1, 3, 4, 5, 7, 8, 12, 13, 14, 15, 16, 17, 31, 32, 33, 63, 64, 100, 255, 256, 270, 1000, 1024, 4096, 65535, 65536]) {
    out.push(text.subarray(0, Math.min(n, text.length)));
    out.push(randomBytes(n));
    out.push(Buffer.alloc(n));
    out.push(Buffer.alloc(n, 0x41));
    const mix = Buffer.alloc(n);
    for (let i = 0; i < n; i += 300) randomBytes(Math.min(100, n - i)).copy(mix, i);
    out.push(mix);
  }
  out.push(text.subarray(0, 65536));
  out.push(Buffer.concat([randomBytes(40000), text.subarray(0, 25536)]));
  return out;
}

t.test('native accelerators', { skip: accel ? false : 'native shim not built' }, async (t) => {
  const a = accel!;
  t.ok(typeof a.crc32cHw === 'boolean');
  for (const s of samples()) {
    // Odd offsets too: the instruction path must not assume alignment.
    for (const start of [0, 1, 3]) {
      if (start > s.length) continue;
      t.equal(a.crc32c(0, s, start, s.length), crc32cJs(0, s, start, s.length), `crc ${s.length}@${start}`);
      t.equal(a.crc32c(0x12345678, s, start, s.length), crc32cJs(0x12345678, s, start, s.length));
    }
    const o = Buffer.alloc(16);
    a.xxh64(s, o, 4);
    t.equal(o.readBigUInt64LE(4), xxh64Wasm(s), `xxh64 ${s.length}`);
    t.equal(a.isZero(s), s.every((b) => b === 0));
    t.equal(isAllZero(s), s.every((b) => b === 0));
    // LZ4: round trip through both decoders when it fits.
    const cap = s.length + Math.ceil(s.length / 255) + 16;
    const dst = Buffer.alloc(cap + 4);
    const n = a.lz4Compress(s, dst, 4, cap);
    t.ok(n > 0 || s.length === 0, `lz4 ${s.length} compresses into its worst case`);
    if (n > 0) {
      dst.writeUInt32LE(n, 0);
      const back = Buffer.alloc(s.length);
      decodeData(CompMethod.LZ4, dst.subarray(0, n + 4), back);
      t.ok(back.equals(s), `lz4 round trip ${s.length}`);
      if (s.length > 0) {
        // lz4-wasm's framing: uncompressed size first.
        const framed = Buffer.alloc(n + 4);
        framed.writeUInt32LE(s.length, 0);
        dst.copy(framed, 4, 4, 4 + n);
        t.ok(Buffer.from(lz4wasmDecompress(framed)).equals(s), `lz4-wasm decodes ${s.length}`);
      }
    }
    // A cap too small fails cleanly.
    if (n > 8) t.equal(a.lz4Compress(s, dst, 4, n - 1), 0);
  }
  t.throws(() => a.crc32c(0, Buffer.alloc(4), 0, 5));
  t.equal(icrc32(Buffer.from('123456789')), 0xe3069283);
});

t.test('encodeData keeps the reference rules (half block, power-of-two sizes, zero padding)', async (t) => {
  const text = Buffer.from('abcdefgh'.repeat(8192));
  const c = encodeData(CompMethod.LZ4, 0, text)!;
  t.ok(c && c.length === 1024, 'a very compressible block takes 1 KiB');
  const clen = c.readUInt32LE(0);
  t.ok(c.subarray(4 + clen).every((b) => b === 0), 'padding is zero');
  const back = Buffer.alloc(65536);
  decodeData(CompMethod.LZ4, c, back);
  t.ok(back.equals(text));
  t.equal(encodeData(CompMethod.LZ4, 0, randomBytes(65536)), null, 'random data is stored as is');
  t.equal(encodeData(CompMethod.LZ4, 0, Buffer.alloc(1024, 7)), null, 'a 1 KiB block cannot shrink below 1 KiB');
  const half = Buffer.concat([randomBytes(30000), Buffer.alloc(35536, 1)]);
  const h = encodeData(CompMethod.LZ4, 0, half);
  t.ok(h && h.length === 32768, 'just under half fits 32 KiB');
});

t.test('native LZ4 decoder matches the JS one, also on damaged input', { skip: accel ? false : 'native shim not built' }, async (t) => {
  const { lz4DecodeBlockJs } = await import('../src/media/lz4');
  const dec = accel!.lz4Decompress;
  const outcome = (f: () => number, dst: Buffer) => {
    try {
      const n = f();
      return n < 0 ? 'error' : dst.subarray(0, n).toString('hex');
    } catch {
      return 'error';
    }
  };
  let compared = 0;
  let mismatches = 0;
  for (const s of samples()) {
    if (s.length === 0) continue;
    const c = Buffer.alloc(s.length + 64);
    const n = accel!.lz4Compress(s, c, 0, c.length);
    if (n === 0) continue;
    const variants: Buffer[] = [c.subarray(0, n)];
    for (let k = 0; k < 8; k++) {
      const d = Buffer.from(c.subarray(0, n));
      d[Math.floor(Math.random() * n)] ^= 1 << Math.floor(Math.random() * 8);
      variants.push(d);
      variants.push(d.subarray(0, Math.floor(Math.random() * n)));
    }
    for (const v of variants) {
      for (const room of [s.length, Math.max(0, s.length - 1)]) {
        const a = Buffer.alloc(room);
        const b = Buffer.alloc(room);
        const ra = outcome(() => dec(v, 0, v.length, a), a);
        const rb = outcome(() => lz4DecodeBlockJs(v, 0, v.length, b), b);
        compared++;
        if (ra !== rb) mismatches++;
      }
    }
    const out = Buffer.alloc(s.length);
    t.equal(dec(c, 0, n, out), s.length);
    if (!out.equals(s)) t.fail(`round trip of ${s.length} bytes`);
  }
  t.equal(mismatches, 0, `native and JS agree on ${compared} intact, damaged and truncated blocks`);
});

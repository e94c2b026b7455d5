/*
 * hammer2fs native shim: the system calls Node.js does not expose, and codec
 * accelerators for the write path.
 *   flock(fd, exclusive)      -> 0 or errno   (LOCK_EX|LOCK_NB or LOCK_SH|LOCK_NB)
 *   blockDeviceSize(fd)       -> bytes or -errno   (BLKGETSIZE64)
 *   peerCred(fd)              -> [pid, uid, gid] of a unix socket's peer, or -errno (SO_PEERCRED)
 *   pwriteAligned(fd, buf, pos) -> bytes or -errno: pwrite from a page-aligned copy (an O_DIRECT descriptor)
 *   crc32c, xxh64, lz4Compress, isZero: codec accelerators (below)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <node_api.h>

static int get_i32(napi_env env, napi_value v, int32_t *out) {
	return napi_get_value_int32(env, v, out) == napi_ok;
}

static napi_value js_flock(napi_env env, napi_callback_info info) {
	size_t argc = 2;
	napi_value argv[2], ret;
	int32_t fd;
	bool excl = false;

	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 2 || !get_i32(env, argv[0], &fd) ||
	    napi_get_value_bool(env, argv[1], &excl) != napi_ok) {
		napi_throw_type_error(env, NULL, "flock(fd: number, exclusive: boolean)");
		return NULL;
	}
	int r = flock(fd, (excl ? LOCK_EX : LOCK_SH) | LOCK_NB);
	napi_create_int32(env, r == 0 ? 0 : errno, &ret);
	return ret;
}

/* F_SETPIPE_SZ: a FIFO that carries a mirroring stream between a daemon and
 * a command holds more than the default 64 KiB, so that either side wakes
 * the other less often. Only grows a pipe (one made bigger by someone else
 * stays so). Returns its size or -errno. */
static napi_value js_pipe_size(napi_env env, napi_callback_info info) {
	size_t argc = 2;
	napi_value argv[2], ret;
	int32_t fd, size;

	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 2 || !get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &size)) {
		napi_throw_type_error(env, NULL, "pipeSize(fd: number, bytes: number)");
		return NULL;
	}
	int r = fcntl(fd, F_GETPIPE_SZ);
	if (r >= 0 && r < size) r = fcntl(fd, F_SETPIPE_SZ, size);
	napi_create_int32(env, r < 0 ? -errno : r, &ret);
	return ret;
}

/* mkfifo(path, mode): the FIFO a mirroring command and a daemon share,
 * without running mkfifo(1) (a fork and exec on every pass). The mode is
 * exact (set again after the umask took its bits), as mkfifo -m makes it.
 * Returns 0 or -errno. */
static napi_value js_mkfifo(napi_env env, napi_callback_info info) {
	size_t argc = 2;
	napi_value argv[2], ret;
	char path[4096];
	size_t len = 0;
	int32_t mode;

	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 2 || napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok || !get_i32(env, argv[1], &mode)) {
		napi_throw_type_error(env, NULL, "mkfifo(path: string, mode: number)");
		return NULL;
	}
	int r;
	if (len >= sizeof path) {
		r = -ENAMETOOLONG;
	} else {
		napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len);
		r = mkfifo(path, (mode_t)mode) < 0 ? -errno : 0;
		if (r == 0 && chmod(path, (mode_t)mode) < 0) {
			r = -errno;
			unlink(path);
		}
	}
	napi_create_int32(env, r, &ret);
	return ret;
}

static napi_value js_blksize(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1], ret;
	int32_t fd;
	uint64_t bytes = 0;

	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 1 || !get_i32(env, argv[0], &fd)) {
		napi_throw_type_error(env, NULL, "blockDeviceSize(fd: number)");
		return NULL;
	}
	if (ioctl(fd, BLKGETSIZE64, &bytes) != 0)
		napi_create_double(env, -(double)errno, &ret);
	else
		napi_create_double(env, (double)bytes, &ret);
	return ret;
}

/* Who is on the other end of a connected unix socket: the control channel
   lets only root or the mount's owner change a filesystem. */
static napi_value js_peercred(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1], ret;
	int32_t fd;
	struct ucred uc;
	socklen_t len = sizeof uc;

	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 1 || !get_i32(env, argv[0], &fd)) {
		napi_throw_type_error(env, NULL, "peerCred(fd: number)");
		return NULL;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0) {
		napi_create_int32(env, -errno, &ret);
		return ret;
	}
	napi_create_array_with_length(env, 3, &ret);
	int32_t v[3] = {(int32_t)uc.pid, (int32_t)uc.uid, (int32_t)uc.gid};
	for (uint32_t i = 0; i < 3; i++) {
		napi_value n;
		napi_create_int32(env, v[i], &n);
		napi_set_element(env, ret, i, n);
	}
	return ret;
}

/* ---- codec accelerators -------------------------------------------------
 * crc32c(crc, buf, start, end) -> CRC-32C (Castagnoli, reflected) continued
 *                                from `crc` (0 to start), SSE4.2 when the CPU
 *                                has it (checked at load: crc32cHw)
 * xxh64(buf, out, outOff)        XXH64 with HAMMER2's seed, 8 bytes LE into out
 * lz4Compress(src, dst, dstOff, cap) -> length of one raw LZ4 block written
 *                                at dst[dstOff..], 0 if it needs more than cap
 *                                bytes (given up as soon as that is certain)
 * isZero(buf)                    every byte zero?
 * Written from the algorithm descriptions (CRC-32C, the XXH64 spec, the LZ4
 * block format). The JS side keeps its own implementations as fallbacks.
 */
#include <string.h>

static uint32_t crc_tab[8][256];
static int crc_hw;

static void codec_init(void) {
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t c = n;
		for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_tab[0][n] = c;
	}
	for (uint32_t n = 0; n < 256; n++)
		for (int k = 1; k < 8; k++)
			crc_tab[k][n] = crc_tab[0][crc_tab[k - 1][n] & 0xff] ^ (crc_tab[k - 1][n] >> 8);
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n) {
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		uint32_t a = (uint32_t)w ^ c, b = (uint32_t)(w >> 32);
		c = crc_tab[7][a & 0xff] ^ crc_tab[6][(a >> 8) & 0xff] ^ crc_tab[5][(a >> 16) & 0xff] ^
		    crc_tab[4][a >> 24] ^ crc_tab[3][b & 0xff] ^ crc_tab[2][(b >> 8) & 0xff] ^
		    crc_tab[1][(b >> 16) & 0xff] ^ crc_tab[0][b >> 24];
		p += 8;
		n -= 8;
	}
	while (n--) c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse(uint32_t c, const uint8_t *p, size_t n) {
	uint64_t c64 = c;
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c64 = __builtin_ia32_crc32di(c64, w);
		p += 8;
		n -= 8;
	}
	uint32_t c32 = (uint32_t)c64;
	while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}
#endif

static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n) {
	uint32_t c = ~crc;
#if defined(__x86_64__)
	if (crc_hw) return ~crc_sse(c, p, n);
#endif
	return ~crc_sw(c, p, n);
}

/* XXH64 */
#define XP1 0x9E3779B185EBCA87ULL
#define XP2 0xC2B2AE3D27D4EB4FULL
#define XP3 0x165667B19E3779F9ULL
#define XP4 0x85EBCA77C2B2AE63ULL
#define XP5 0x27D4EB2F165667C5ULL
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t xround(uint64_t acc, uint64_t in) { return rotl64(acc + in * XP2, 31) * XP1; }
static inline uint64_t xmerge(uint64_t h, uint64_t v) { return (h ^ xround(0, v)) * XP1 + XP4; }

static uint64_t xxh64(const uint8_t *p, size_t len, uint64_t seed) {
	const uint8_t *end = p + len;
	uint64_t h;
	if (len >= 32) {
		uint64_t v1 = seed + XP1 + XP2, v2 = seed + XP2, v3 = seed, v4 = seed - XP1;
		const uint8_t *lim = end - 32;
		do {
			v1 = xround(v1, rd64(p));
			v2 = xround(v2, rd64(p + 8));
			v3 = xround(v3, rd64(p + 16));
			v4 = xround(v4, rd64(p + 24));
			p += 32;
		} while (p <= lim);
		h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
		h = xmerge(h, v1);
		h = xmerge(h, v2);
		h = xmerge(h, v3);
		h = xmerge(h, v4);
	} else {
		h = seed + XP5;
	}
	h += (uint64_t)len;
	while (p + 8 <= end) {
		h ^= xround(0, rd64(p));
		h = rotl64(h, 27) * XP1 + XP4;
		p += 8;
	}
	if (p + 4 <= end) {
		h ^= (uint64_t)rd32(p) * XP1;
		h = rotl64(h, 23) * XP2 + XP3;
		p += 4;
	}
	while (p < end) {
		h ^= (uint64_t)(*p++) * XP5;
		h = rotl64(h, 11) * XP1;
	}
	h ^= h >> 33;
	h *= XP2;
	h ^= h >> 29;
	h *= XP3;
	h ^= h >> 32;
	return h;
}

/* LZ4 block compression: greedy, one hash-table probe per position, skipping
 * faster through data that does not match. Block format rules: the last 5
 * bytes are literals, and no match starts within the last 12 bytes. */
#define LZ_HASHLOG 13
static inline uint32_t lz_hash(uint32_t v) { return (v * 2654435761u) >> (32 - LZ_HASHLOG); }

/* returns new op, or NULL when out of room */
static uint8_t *lz_len(uint8_t *op, uint8_t *oend, size_t n) {
	while (n >= 255) {
		if (op >= oend) return NULL;
		*op++ = 255;
		n -= 255;
	}
	if (op >= oend) return NULL;
	*op++ = (uint8_t)n;
	return op;
}

static size_t lz4_compress(const uint8_t *src, size_t n, uint8_t *dst, size_t cap) {
	uint8_t *op = dst, *oend = dst + cap;
	size_t anchor = 0, ip = 0;
	uint32_t lz_table[1 << LZ_HASHLOG]; /* on the stack: worker threads may share the module */
	if (n >= 13) {
		const size_t mflimit = n - 12, mlimit = n - 5;
		unsigned misses = 0;
		memset(lz_table, 0xff, sizeof lz_table);
		while (ip < mflimit) {
			uint32_t seq = rd32(src + ip);
			uint32_t h = lz_hash(seq);
			uint32_t ref = lz_table[h];
			lz_table[h] = (uint32_t)ip;
			if (ref >= ip || ip - ref > 65535 || rd32(src + ref) != seq) {
				ip += 1 + (misses++ >> 6);
				continue;
			}
			misses = 0;
			size_t r = ref;
			while (ip > anchor && r > 0 && src[ip - 1] == src[r - 1]) {
				ip--;
				r--;
			}
			size_t m = ip + 4, q = r + 4;
			while (m + 8 <= mlimit) {
				uint64_t x = rd64(src + m) ^ rd64(src + q);
				if (x) {
					m += (size_t)__builtin_ctzll(x) >> 3;
					goto found;
				}
				m += 8;
				q += 8;
			}
			while (m < mlimit && src[m] == src[q]) {
				m++;
				q++;
			}
		found:;
			size_t lit = ip - anchor, ml = m - ip - 4;
			if (op + 1 + lit + lit / 255 + 2 + 1 > oend) return 0;
			uint8_t *tok = op++;
			*tok = (uint8_t)((lit >= 15 ? 15 : lit) << 4);
			if (lit >= 15 && !(op = lz_len(op, oend, lit - 15))) return 0;
			if (op + lit + 8 <= oend && anchor + lit + 8 <= n) {
				/* short literal runs dominate text: copy 8 bytes at a time, overrunning */
				const uint8_t *s8 = src + anchor;
				uint8_t *d8 = op, *e8 = op + lit;
				do {
					memcpy(d8, s8, 8);
					d8 += 8;
					s8 += 8;
				} while (d8 < e8);
			} else {
				memcpy(op, src + anchor, lit);
			}
			op += lit;
			if (op + 2 > oend) return 0;
			size_t off = ip - r;
			*op++ = (uint8_t)off;
			*op++ = (uint8_t)(off >> 8);
			*tok |= (uint8_t)(ml >= 15 ? 15 : ml);
			if (ml >= 15 && !(op = lz_len(op, oend, ml - 15))) return 0;
			ip = m;
			anchor = ip;
			if (ip - 2 < mflimit) lz_table[lz_hash(rd32(src + ip - 2))] = (uint32_t)(ip - 2);
		}
	}
	size_t lit = n - anchor;
	if (op + 1 + lit + lit / 255 + 1 > oend) return 0;
	uint8_t *tok = op++;
	*tok = (uint8_t)((lit >= 15 ? 15 : lit) << 4);
	if (lit >= 15 && !(op = lz_len(op, oend, lit - 15))) return 0;
	memcpy(op, src + anchor, lit);
	op += lit;
	return (size_t)(op - dst);
}

static int bytes_of(napi_env env, napi_value v, uint8_t **p, size_t *len) {
	bool is = false;
	if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
		napi_typedarray_type t;
		napi_value ab;
		size_t off;
		void *data;
		if (napi_get_typedarray_info(env, v, &t, len, &data, &ab, &off) != napi_ok || t != napi_uint8_array) return 0;
		*p = data;
		return 1;
	}
	return 0;
}

static napi_value js_crc32c(napi_env env, napi_callback_info info) {
	size_t argc = 4;
	napi_value argv[4], ret;
	uint32_t crc;
	uint8_t *p;
	size_t len;
	int64_t start, end;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 4 || napi_get_value_uint32(env, argv[0], &crc) != napi_ok || !bytes_of(env, argv[1], &p, &len) ||
	    napi_get_value_int64(env, argv[2], &start) != napi_ok || napi_get_value_int64(env, argv[3], &end) != napi_ok ||
	    start < 0 || end < start || (size_t)end > len) {
		napi_throw_type_error(env, NULL, "crc32c(crc, bytes, start, end)");
		return NULL;
	}
	napi_create_uint32(env, crc32c(crc, p + start, (size_t)(end - start)), &ret);
	return ret;
}

static napi_value js_xxh64(napi_env env, napi_callback_info info) {
	size_t argc = 3;
	napi_value argv[3];
	uint8_t *p, *o;
	size_t len, olen;
	int64_t off;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 3 || !bytes_of(env, argv[0], &p, &len) || !bytes_of(env, argv[1], &o, &olen) ||
	    napi_get_value_int64(env, argv[2], &off) != napi_ok || off < 0 || (size_t)off + 8 > olen) {
		napi_throw_type_error(env, NULL, "xxh64(bytes, out, outOff)");
		return NULL;
	}
	uint64_t h = xxh64(p, len, 0x4d617474446c6c6eULL);
	for (int i = 0; i < 8; i++) o[off + i] = (uint8_t)(h >> (8 * i));
	return NULL;
}

static napi_value js_lz4(napi_env env, napi_callback_info info) {
	size_t argc = 4;
	napi_value argv[4], ret;
	uint8_t *s, *d;
	size_t slen, dlen;
	int64_t off, cap;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 4 || !bytes_of(env, argv[0], &s, &slen) || !bytes_of(env, argv[1], &d, &dlen) ||
	    napi_get_value_int64(env, argv[2], &off) != napi_ok || napi_get_value_int64(env, argv[3], &cap) != napi_ok ||
	    off < 0 || cap < 0 || (size_t)(off + cap) > dlen || slen > 0x7fffffff) {
		napi_throw_type_error(env, NULL, "lz4Compress(src, dst, dstOff, cap)");
		return NULL;
	}
	napi_create_uint32(env, (uint32_t)lz4_compress(s, slen, d + off, (size_t)cap), &ret);
	return ret;
}

/* One raw LZ4 block src[0,slen) into dst[0,dlen): bytes produced, or -1 for
   malformed input or output that would not fit. Never reads or writes out
   of bounds, whatever the input (same checks as media/lz4.ts). */
static int64_t lz4_decompress(const uint8_t *src, size_t slen, uint8_t *dst, size_t dlen) {
	size_t ip = 0, op = 0;
	while (ip < slen) {
		unsigned token = src[ip++];
		size_t lit = token >> 4;
		if (lit == 15) {
			unsigned b;
			do {
				if (ip >= slen) return -1;
				b = src[ip++];
				lit += b;
			} while (b == 255);
		}
		if (lit > slen - ip || lit > dlen - op) return -1;
		memcpy(dst + op, src + ip, lit);
		ip += lit;
		op += lit;
		if (ip >= slen) break; /* the last sequence has only literals */
		if (slen - ip < 2) return -1;
		size_t off = (size_t)src[ip] | ((size_t)src[ip + 1] << 8);
		ip += 2;
		if (off == 0 || off > op) return -1;
		size_t mlen = (token & 15) + 4;
		if ((token & 15) == 15) {
			unsigned b;
			do {
				if (ip >= slen) return -1;
				b = src[ip++];
				mlen += b;
			} while (b == 255);
		}
		if (mlen > dlen - op) return -1;
		const uint8_t *from = dst + op - off;
		if (off >= mlen) {
			memcpy(dst + op, from, mlen);
		} else {
			/* overlapping: repeats the last `off` bytes, byte by byte */
			for (size_t k = 0; k < mlen; k++) dst[op + k] = from[k];
		}
		op += mlen;
	}
	return (int64_t)op;
}

/* lz4Decompress(src, start, end, dst) -> bytes produced, or -1 */
static napi_value js_lz4d(napi_env env, napi_callback_info info) {
	size_t argc = 4;
	napi_value argv[4], ret;
	uint8_t *s, *d;
	size_t slen, dlen;
	int64_t start, end;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 4 || !bytes_of(env, argv[0], &s, &slen) || napi_get_value_int64(env, argv[1], &start) != napi_ok ||
	    napi_get_value_int64(env, argv[2], &end) != napi_ok || !bytes_of(env, argv[3], &d, &dlen) || start < 0 ||
	    end < start || (size_t)end > slen) {
		napi_throw_type_error(env, NULL, "lz4Decompress(src, start, end, dst)");
		return NULL;
	}
	napi_create_int64(env, lz4_decompress(s + start, (size_t)(end - start), d, dlen), &ret);
	return ret;
}

/* Every byte zero? (64 bytes at a time, stopping at the first that is not.) */
static int all_zero(const uint8_t *p, size_t len) {
	uint64_t acc = 0;
	size_t i = 0;
	for (; i + 64 <= len; i += 64) {
		for (int k = 0; k < 64; k += 8) acc |= rd64(p + i + k);
		if (acc) return 0;
	}
	for (; i < len; i++) acc |= p[i];
	return acc == 0;
}

static napi_value js_iszero(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1], ret;
	uint8_t *p;
	size_t len;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 1 || !bytes_of(env, argv[0], &p, &len)) {
		napi_throw_type_error(env, NULL, "isZero(bytes)");
		return NULL;
	}
	napi_get_boolean(env, all_zero(p, len), &ret);
	return ret;
}

/* A detached thread of ours: 1, or -1 if it could not be created. Signals
   stay with the threads that handle them (as fuse_ll's threads). */
static int start_thread(void *(*fn)(void *)) {
	sigset_t all, old;
	pthread_t t;
	pthread_attr_t a;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int ok = pthread_create(&t, &a, fn, NULL) == 0;
	pthread_attr_destroy(&a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ok ? 1 : -1;
}

/* The data of an external made by us with `tag`, or NULL for anything else. */
static void *tagged(napi_env env, napi_value v, const napi_type_tag *tag) {
	bool ours = false;
	void *data = NULL;
	if (napi_check_object_type_tag(env, v, tag, &ours) != napi_ok || !ours) return NULL;
	if (napi_get_value_external(env, v, &data) != napi_ok) return NULL;
	return data;
}

/* ---- sealing data blocks ahead of the commit -----------------------------
 * sealStart(block, zeroTest, tryLz4, check) -> job (null: no thread)
 * sealResult(job, checkOut)  -> 0 (all zeros: a hole), 2 (store as it is) or
 *                               the LZ4 block to store (a Buffer), with the
 *                               check code of what is stored in checkOut
 * sealCancel(job)            the block is about to change: drop the job
 * sealPending(job)           the thread has not finished it yet
 * A whole 64 KiB block that a write hands over is final until the commit, so
 * its zero test, compression and check code can be worked out on a thread of
 * our own while the JS thread takes the next requests. The job holds a
 * reference to the block until the thread is done with it, then a weak one,
 * so that a block dropped before its commit is not kept. sealResult does a
 * job the thread has not started itself and waits for one it is working on;
 * a job collected before it started is dropped undone.
 * What is stored is laid out exactly as encodeData does it in JS: the
 * compressed length in 4 bytes LE, the LZ4 block, zeros up to a power of two
 * of at least 1 KiB, and only when that is at most half the block.
 */
enum { SEAL_ZERO = 0, SEAL_LZ4 = 1, SEAL_RAW = 2 };
enum { CHK_NONE = 0, CHK_CRC32C = 2, CHK_XXH64 = 3 };
enum { QUEUED = 0, RUNNING = 1, DONE = 2 };

typedef struct seal_job {
	struct seal_job *next, *prev; /* in the queue while state is QUEUED */
	const uint8_t *src;
	size_t len;
	int zero_test, try_lz4, check;
	int state;           /* under seal_lock */
	int listed;          /* in the done list (under seal_lock) */
	int taken;
	int kind;
	uint8_t *stored;     /* the LZ4 block (malloc), SEAL_LZ4 only */
	size_t stored_len;
	uint8_t chk[8];
	napi_ref src_ref;    /* JS thread only */
	napi_env env;        /* whose reference it is (worker threads have their own) */
} seal_job;

/* Marks our jobs, so that sealResult is never handed some other external. */
static const napi_type_tag SEAL_TAG = {0x68616d6d65723273ULL, 0x7365616c6a6f6221ULL};

static pthread_mutex_t seal_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t seal_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t seal_done = PTHREAD_COND_INITIALIZER;
static seal_job *seal_head, *seal_tail;
/* Jobs the thread finished whose block is still held strongly: the JS
   thread makes those references weak (seal_drain), so that a block dropped
   before its commit (overwritten, truncated, its file deleted) can go. */
static seal_job *done_head;
static int seal_started;

static void seal_compute(seal_job *j) {
	const uint8_t *p = j->src;
	size_t n = j->len;
	if (j->zero_test && all_zero(p, n)) {
		j->kind = SEAL_ZERO;
		return;
	}
	j->kind = SEAL_RAW;
	if (j->try_lz4 && n > 8) {
		size_t half = n >> 1;
		uint8_t *out = malloc(half);
		size_t clen = out ? lz4_compress(p, n, out + 4, half - 4) : 0;
		size_t size = 1024;
		while (size < clen + 4) size <<= 1;
		if (clen && size <= half && size < n) {
			for (int i = 0; i < 4; i++) out[i] = (uint8_t)(clen >> (8 * i));
			memset(out + 4 + clen, 0, size - 4 - clen);
			j->kind = SEAL_LZ4;
			j->stored = out;
			j->stored_len = size;
			p = out;
			n = size;
		} else {
			free(out);
		}
	}
	memset(j->chk, 0, sizeof j->chk);
	if (j->check == CHK_XXH64) {
		uint64_t h = xxh64(p, n, 0x4d617474446c6c6eULL);
		for (int i = 0; i < 8; i++) j->chk[i] = (uint8_t)(h >> (8 * i));
	} else if (j->check == CHK_CRC32C) {
		uint32_t c = crc32c(0, p, n);
		for (int i = 0; i < 4; i++) j->chk[i] = (uint8_t)(c >> (8 * i));
	}
}

/* Take a queued job out of the queue (caller holds seal_lock). */
static void seal_unlink(seal_job *j) {
	if (j->prev) j->prev->next = j->next;
	else seal_head = j->next;
	if (j->next) j->next->prev = j->prev;
	else seal_tail = j->prev;
	j->next = j->prev = NULL;
}

static void *seal_thread(void *arg) {
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&seal_lock);
		while (!seal_head) pthread_cond_wait(&seal_work, &seal_lock);
		seal_job *j = seal_head;
		seal_unlink(j);
		j->state = RUNNING;
		pthread_mutex_unlock(&seal_lock);
		seal_compute(j);
		pthread_mutex_lock(&seal_lock);
		j->state = DONE;
		j->prev = NULL;
		j->next = done_head;
		if (done_head) done_head->prev = j;
		done_head = j;
		j->listed = 1;
		pthread_cond_broadcast(&seal_done);
		pthread_mutex_unlock(&seal_lock);
	}
	return NULL;
}

/* Off the done list (caller holds seal_lock). */
static void seal_unlist(seal_job *j) {
	if (!j->listed) return;
	if (j->prev) j->prev->next = j->next;
	else done_head = j->next;
	if (j->next) j->next->prev = j->prev;
	j->next = j->prev = NULL;
	j->listed = 0;
}

/* JS thread: the thread no longer reads the blocks of finished jobs; hold
   them weakly. Only this env's jobs: a reference belongs to its env. */
static void seal_drain(napi_env env) {
	for (;;) {
		pthread_mutex_lock(&seal_lock);
		seal_job *j = done_head;
		while (j && j->env != env) j = j->next;
		if (j) seal_unlist(j);
		pthread_mutex_unlock(&seal_lock);
		if (!j) return;
		uint32_t left;
		if (j->src_ref) napi_reference_unref(env, j->src_ref, &left);
	}
}

/* Make sure the job is done: one the thread has not started yet is done
   here (the caller needs it now), one it is working on is waited for.
   `skip`: a job nobody needs any more is only taken out of the queue. */
static void seal_finish(seal_job *j, int skip) {
	pthread_mutex_lock(&seal_lock);
	if (j->state == QUEUED) {
		seal_unlink(j);
		j->state = RUNNING;
		pthread_mutex_unlock(&seal_lock);
		if (!skip) seal_compute(j);
		pthread_mutex_lock(&seal_lock);
		j->state = DONE;
	}
	while (j->state != DONE) pthread_cond_wait(&seal_done, &seal_lock);
	pthread_mutex_unlock(&seal_lock);
}

static void seal_release(napi_env env, seal_job *j) {
	if (j->src_ref) {
		napi_delete_reference(env, j->src_ref);
		j->src_ref = NULL;
	}
}

/* The job done (or dropped undone: `skip`), off the done list, its block let go of (JS thread). */
static void seal_settle(napi_env env, seal_job *j, int skip) {
	seal_finish(j, skip);
	pthread_mutex_lock(&seal_lock);
	seal_unlist(j);
	pthread_mutex_unlock(&seal_lock);
	seal_release(env, j);
}

static void seal_finalize(napi_env env, void *data, void *hint) {
	(void)hint;
	seal_job *j = data;
	seal_settle(env, j, 1); /* the thread may still be reading the block */
	if (!j->taken) free(j->stored);
	free(j);
}

static void free_stored(napi_env env, void *data, void *hint) {
	(void)env;
	(void)hint;
	free(data);
}

static napi_value js_seal_start(napi_env env, napi_callback_info info) {
	size_t argc = 4;
	napi_value argv[4], ret;
	uint8_t *p;
	size_t len;
	bool zero = false, lz4 = false;
	int32_t check;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 4 || !bytes_of(env, argv[0], &p, &len) || napi_get_value_bool(env, argv[1], &zero) != napi_ok ||
	    napi_get_value_bool(env, argv[2], &lz4) != napi_ok || !get_i32(env, argv[3], &check) ||
	    (check != CHK_NONE && check != CHK_CRC32C && check != CHK_XXH64)) {
		napi_throw_type_error(env, NULL, "sealStart(block, zeroTest, tryLz4, check: 0 | 2 | 3)");
		return NULL;
	}
	if (len > 0x7fffffff) {
		napi_throw_range_error(env, NULL, "sealStart: block too large");
		return NULL;
	}
	seal_drain(env);
	pthread_mutex_lock(&seal_lock);
	if (!seal_started) seal_started = start_thread(seal_thread);
	int no_thread = seal_started < 0;
	pthread_mutex_unlock(&seal_lock);
	if (no_thread) {
		napi_value none;
		napi_get_null(env, &none);
		return none;
	}
	seal_job *j = calloc(1, sizeof *j);
	if (!j) {
		napi_throw_error(env, "ENOMEM", "sealStart: out of memory");
		return NULL;
	}
	j->src = p;
	j->len = len;
	j->zero_test = zero;
	j->try_lz4 = lz4;
	j->check = check;
	j->env = env;
	if (napi_create_reference(env, argv[0], 1, &j->src_ref) != napi_ok ||
	    napi_create_external(env, j, seal_finalize, NULL, &ret) != napi_ok) {
		if (j->src_ref) napi_delete_reference(env, j->src_ref);
		free(j);
		napi_throw_error(env, NULL, "sealStart: cannot hold the block");
		return NULL;
	}
	if (napi_type_tag_object(env, ret, &SEAL_TAG) != napi_ok) {
		/* Never queued: its finalizer only lets go of the block. */
		j->state = DONE;
		j->taken = 1;
		napi_throw_error(env, NULL, "sealStart: cannot tag the job");
		return NULL;
	}
	pthread_mutex_lock(&seal_lock);
	j->prev = seal_tail;
	if (seal_tail) seal_tail->next = j;
	else seal_head = j;
	seal_tail = j;
	pthread_cond_signal(&seal_work);
	pthread_mutex_unlock(&seal_lock);
	return ret;
}

static napi_value js_seal_drain(napi_env env, napi_callback_info info) {
	(void)info;
	seal_drain(env);
	return NULL;
}

/* The job behind a sealStart result, or NULL for anything else. */
static seal_job *job_of(napi_env env, napi_value v) {
	return tagged(env, v, &SEAL_TAG);
}

/* sealPending(job): whether the thread has yet to finish it (tests wait on this). */
static napi_value js_seal_pending(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1], ret;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	seal_job *j = argc < 1 ? NULL : job_of(env, argv[0]);
	if (!j) {
		napi_throw_type_error(env, NULL, "sealPending(job)");
		return NULL;
	}
	pthread_mutex_lock(&seal_lock);
	int pending = j->state != DONE;
	pthread_mutex_unlock(&seal_lock);
	napi_get_boolean(env, pending, &ret);
	return ret;
}

/* sealCancel(job): its block is about to change. A queued job is dropped,
   one the thread is reading is waited for (so the change cannot race the
   read), and the block is let go of at once. */
static napi_value js_seal_cancel(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1];
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	seal_job *j = argc < 1 ? NULL : job_of(env, argv[0]);
	if (!j) {
		napi_throw_type_error(env, NULL, "sealCancel(job)");
		return NULL;
	}
	seal_settle(env, j, 1);
	if (!j->taken) {
		free(j->stored);
		j->stored = NULL;
		j->taken = 1;
	}
	return NULL;
}

static napi_value js_seal_result(napi_env env, napi_callback_info info) {
	size_t argc = 2;
	napi_value argv[2], ret;
	uint8_t *o;
	size_t olen;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	seal_job *j = argc < 2 ? NULL : job_of(env, argv[0]);
	if (!j || !bytes_of(env, argv[1], &o, &olen) || olen < 8) {
		napi_throw_type_error(env, NULL, "sealResult(job, checkOut)");
		return NULL;
	}
	if (j->taken) {
		napi_throw_error(env, NULL, "sealResult: already taken");
		return NULL;
	}
	seal_settle(env, j, 0);
	seal_drain(env);
	memcpy(o, j->chk, 8);
	if (j->kind != SEAL_LZ4) {
		j->taken = 1;
		napi_create_int32(env, j->kind, &ret);
		return ret;
	}
	if (napi_create_external_buffer(env, j->stored_len, j->stored, free_stored, NULL, &ret) != napi_ok) {
		/* Runtimes without external buffers: a copy. */
		void *copy;
		if (napi_create_buffer_copy(env, j->stored_len, j->stored, &copy, &ret) != napi_ok) {
			napi_throw_error(env, NULL, "sealResult: cannot hand the block over");
			return NULL;
		}
		free(j->stored);
	}
	j->stored = NULL;
	j->taken = 1;
	return ret;
}

/* ---- writing a commit behind the JS thread ---------------------------------
 * ioStart(steps) -> job (null: no thread)
 *   steps: [[0, fd, pos, buffers]]  pwritev of the buffers back to back at pos
 *          [[1, fd]]                fdatasync
 *          [[2, fd, pos, [buffer]]] pwrite from an aligned copy (O_DIRECT fd)
 * ioDone(job)  -> whether the thread has finished (or stopped at an error)
 * ioWait(job)  -> 0, or -errno of the step that failed; waits for the thread
 *                 and lets go of the buffers
 * A commit's blocks, its sync, its volume header and the second sync are
 * done in that order on a thread of ours, so that the JS thread takes the
 * next requests meanwhile. The steps array is held (and through it every
 * buffer) until ioWait; its buffers must not change before then.
 */
enum { IO_WRITE = 0, IO_SYNC = 1, IO_ALIGNED = 2 };

typedef struct io_step {
	int kind, fd, iovcnt;
	int64_t pos;
	struct iovec *iov;
} io_step;

typedef struct io_job {
	struct io_job *next;
	io_step *steps;
	int nsteps;
	int state;      /* QUEUED, RUNNING, DONE: under io_lock */
	int err;        /* 0 or -errno */
	napi_ref hold;  /* the steps array: JS thread only */
} io_job;

static const napi_type_tag IO_TAG = {0x68616d6d65723273ULL, 0x636f6d6d69746a6fULL};
static pthread_mutex_t io_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t io_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t io_done = PTHREAD_COND_INITIALIZER;
static io_job *io_head, *io_tail;
static int io_started;

static int io_writev(int fd, struct iovec *iov, int cnt, int64_t pos) {
	while (cnt > 0) {
		ssize_t n = pwritev(fd, iov, cnt > 1024 ? 1024 : cnt, pos);
		if (n < 0) {
			if (errno == EINTR) continue;
			return -errno;
		}
		if (n == 0) return -EIO;
		pos += n;
		/* Short: step past what went out and go on. */
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0 && n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int io_step_run(io_step *s) {
	if (s->kind == IO_SYNC) {
		while (fdatasync(s->fd) != 0) {
			if (errno != EINTR) return -errno;
		}
		return 0;
	}
	if (s->kind == IO_WRITE) return io_writev(s->fd, s->iov, s->iovcnt, s->pos);
	size_t len = s->iov[0].iov_len;
	void *a = NULL;
	if (posix_memalign(&a, 4096, len ? len : 4096) != 0) return -ENOMEM;
	memcpy(a, s->iov[0].iov_base, len);
	struct iovec one = {a, len};
	int r = io_writev(s->fd, &one, 1, s->pos);
	free(a);
	return r;
}

static void *io_thread(void *arg) {
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&io_lock);
		while (!io_head) pthread_cond_wait(&io_work, &io_lock);
		io_job *j = io_head;
		io_head = j->next;
		if (!io_head) io_tail = NULL;
		j->state = RUNNING;
		pthread_mutex_unlock(&io_lock);
		int err = 0;
		for (int i = 0; i < j->nsteps && !err; i++) err = io_step_run(&j->steps[i]);
		pthread_mutex_lock(&io_lock);
		j->err = err;
		j->state = DONE;
		pthread_cond_broadcast(&io_done);
		pthread_mutex_unlock(&io_lock);
	}
	return NULL;
}

static void io_free_steps(io_job *j) {
	for (int i = 0; i < j->nsteps; i++) free(j->steps[i].iov);
	free(j->steps);
	j->steps = NULL;
	j->nsteps = 0;
}

/* Wait for the thread, then let go of the buffers (JS thread). */
static void io_settle(napi_env env, io_job *j) {
	pthread_mutex_lock(&io_lock);
	while (j->state != DONE) pthread_cond_wait(&io_done, &io_lock);
	pthread_mutex_unlock(&io_lock);
	if (j->hold) {
		napi_delete_reference(env, j->hold);
		j->hold = NULL;
	}
	io_free_steps(j);
}

static void io_finalize(napi_env env, void *data, void *hint) {
	(void)hint;
	io_job *j = data;
	io_settle(env, j);
	free(j);
}

static int io_parse(napi_env env, napi_value steps, io_job *j) {
	uint32_t n;
	bool arr = false;
	if (napi_is_array(env, steps, &arr) != napi_ok || !arr || napi_get_array_length(env, steps, &n) != napi_ok) return 0;
	j->steps = calloc(n ? n : 1, sizeof *j->steps);
	if (!j->steps) return 0;
	for (uint32_t i = 0; i < n; i++) {
		napi_value s, v;
		int32_t kind, fd;
		uint32_t len = 0;
		io_step *st = &j->steps[i];
		j->nsteps = (int)i + 1;
		if (napi_get_element(env, steps, i, &s) != napi_ok || napi_get_element(env, s, 0, &v) != napi_ok || !get_i32(env, v, &kind) ||
		    napi_get_element(env, s, 1, &v) != napi_ok || !get_i32(env, v, &fd) || fd < 0)
			return 0;
		st->kind = kind;
		st->fd = fd;
		if (kind == IO_SYNC) continue;
		if (kind != IO_WRITE && kind != IO_ALIGNED) return 0;
		napi_value bufs;
		if (napi_get_element(env, s, 2, &v) != napi_ok || napi_get_value_int64(env, v, &st->pos) != napi_ok || st->pos < 0 ||
		    napi_get_element(env, s, 3, &bufs) != napi_ok || napi_get_array_length(env, bufs, &len) != napi_ok || len == 0 ||
		    (kind == IO_ALIGNED && len != 1))
			return 0;
		st->iov = calloc(len, sizeof *st->iov);
		if (!st->iov) return 0;
		st->iovcnt = (int)len;
		for (uint32_t k = 0; k < len; k++) {
			uint8_t *p;
			size_t bl;
			if (napi_get_element(env, bufs, k, &v) != napi_ok || !bytes_of(env, v, &p, &bl)) return 0;
			st->iov[k].iov_base = p;
			st->iov[k].iov_len = bl;
		}
	}
	return 1;
}

static napi_value js_io_start(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1], ret;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	pthread_mutex_lock(&io_lock);
	if (!io_started) io_started = start_thread(io_thread);
	int no_thread = io_started < 0;
	pthread_mutex_unlock(&io_lock);
	if (no_thread) {
		napi_get_null(env, &ret);
		return ret;
	}
	io_job *j = calloc(1, sizeof *j);
	if (!j) {
		napi_throw_error(env, "ENOMEM", "ioStart: out of memory");
		return NULL;
	}
	j->state = DONE; /* until queued: the finalizer then has nothing to wait for */
	if (argc < 1 || !io_parse(env, argv[0], j)) {
		io_free_steps(j);
		free(j);
		napi_throw_type_error(env, NULL, "ioStart([[0, fd, pos, buffers] | [1, fd] | [2, fd, pos, [buffer]], ...])");
		return NULL;
	}
	if (napi_create_reference(env, argv[0], 1, &j->hold) != napi_ok ||
	    napi_create_external(env, j, io_finalize, NULL, &ret) != napi_ok) {
		if (j->hold) napi_delete_reference(env, j->hold);
		io_free_steps(j);
		free(j);
		napi_throw_error(env, NULL, "ioStart: cannot hold the buffers");
		return NULL;
	}
	if (napi_type_tag_object(env, ret, &IO_TAG) != napi_ok) {
		napi_throw_error(env, NULL, "ioStart: cannot tag the job");
		return NULL;
	}
	pthread_mutex_lock(&io_lock);
	j->state = QUEUED;
	if (io_tail) io_tail->next = j;
	else io_head = j;
	io_tail = j;
	pthread_cond_signal(&io_work);
	pthread_mutex_unlock(&io_lock);
	return ret;
}

static io_job *io_of(napi_env env, napi_value v) {
	return tagged(env, v, &IO_TAG);
}

static napi_value js_io_done(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1], ret;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	io_job *j = argc < 1 ? NULL : io_of(env, argv[0]);
	if (!j) {
		napi_throw_type_error(env, NULL, "ioDone(job)");
		return NULL;
	}
	pthread_mutex_lock(&io_lock);
	int done = j->state == DONE;
	pthread_mutex_unlock(&io_lock);
	napi_get_boolean(env, done, &ret);
	return ret;
}

static napi_value js_io_wait(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value argv[1], ret;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	io_job *j = argc < 1 ? NULL : io_of(env, argv[0]);
	if (!j) {
		napi_throw_type_error(env, NULL, "ioWait(job)");
		return NULL;
	}
	io_settle(env, j);
	napi_create_int32(env, j->err, &ret);
	return ret;
}

/* trimMemory(): give memory free()d to malloc back to the kernel. Block
   buffers come and go in bursts (commits, sequential reads); glibc keeps
   the freed pages of its heap, so without this the daemon's RSS only ever
   grows to its high-water mark. */
static napi_value js_trim(napi_env env, napi_callback_info info) {
	(void)info;
	napi_value ret;
	napi_get_boolean(env, malloc_trim(0) != 0, &ret);
	return ret;
}

/* holdFreedMemory(trimBytes, mmapBytes): let free() keep what it frees.
   glibc gives the top of its heap back once more than M_TRIM_THRESHOLD is
   free there, and serves blocks from M_MMAP_THRESHOLD up with mmap, so that
   their free() is a munmap; either way the next burst of allocations faults
   fresh pages in, which costs ~11 us a page on a VM that reports free
   memory to its host (a 16 KiB buffer: 45 us). Raising both keeps freed
   memory in the process while it is busy; trimMemory() gives it back when
   it is idle. Returns true if glibc took both settings. */
static napi_value js_hold(napi_env env, napi_callback_info info) {
	size_t argc = 2;
	napi_value argv[2], ret;
	int32_t trim, mm;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 2 || !get_i32(env, argv[0], &trim) || !get_i32(env, argv[1], &mm) || trim < 0 || mm < 0) {
		napi_throw_type_error(env, NULL, "holdFreedMemory(trimBytes, mmapBytes)");
		return NULL;
	}
	/* Both are tried whatever the first gives. */
	int t = mallopt(M_TRIM_THRESHOLD, trim) == 1;
	int m = mallopt(M_MMAP_THRESHOLD, mm) == 1;
	int ok = t && m;
	napi_get_boolean(env, ok, &ret);
	return ret;
}

/* mallocStats() -> [inUse, free, mmapped] bytes of malloc (every arena), or
   null where glibc cannot say: RSS alone cannot tell memory in use from
   memory malloc holds free between its chunks. */
static napi_value js_malloc_stats(napi_env env, napi_callback_info info) {
	(void)info;
	napi_value ret;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	struct mallinfo2 m = mallinfo2();
	double v[3] = {(double)m.uordblks, (double)m.fordblks, (double)m.hblkhd};
	napi_create_array_with_length(env, 3, &ret);
	for (uint32_t i = 0; i < 3; i++) {
		napi_value x;
		napi_create_double(env, v[i], &x);
		napi_set_element(env, ret, i, x);
	}
#else
	napi_get_null(env, &ret);
#endif
	return ret;
}

/* pwriteAligned(fd, buf, pos): the volume header through an O_DIRECT
   descriptor, which needs an aligned buffer. Such a write goes to the
   device as one request that a process kill does not cut short (a buffered
   write may stop at a page boundary when a fatal signal arrives). */
static napi_value js_pwrite_aligned(napi_env env, napi_callback_info info) {
	size_t argc = 3;
	napi_value argv[3], ret;
	int32_t fd;
	int64_t pos;
	uint8_t *p;
	size_t len;
	napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
	if (argc < 3 || !get_i32(env, argv[0], &fd) || !bytes_of(env, argv[1], &p, &len) ||
	    napi_get_value_int64(env, argv[2], &pos) != napi_ok) {
		napi_throw_type_error(env, NULL, "pwriteAligned(fd, bytes, pos)");
		return NULL;
	}
	void *a = NULL;
	int64_t r;
	if (posix_memalign(&a, 4096, len ? len : 4096) != 0) {
		r = -ENOMEM;
	} else {
		memcpy(a, p, len);
		size_t done = 0;
		r = 0;
		while (done < len) {
			ssize_t n = pwrite(fd, (uint8_t *)a + done, len - done, pos + (off_t)done);
			if (n < 0) {
				if (errno == EINTR) continue;
				r = -errno;
				break;
			}
			if (n == 0) { r = -EIO; break; }
			done += (size_t)n;
		}
		if (r == 0) r = (int64_t)done;
		free(a);
	}
	napi_create_int64(env, r, &ret);
	return ret;
}

static napi_value init(napi_env env, napi_value exports) {
	static const struct { const char *name; napi_callback fn; } fns[] = {
		{"trimMemory", js_trim}, {"holdFreedMemory", js_hold}, {"mallocStats", js_malloc_stats}, {"flock", js_flock}, {"blockDeviceSize", js_blksize},
		{"peerCred", js_peercred}, {"pipeSize", js_pipe_size}, {"mkfifo", js_mkfifo},
		{"crc32c", js_crc32c}, {"xxh64", js_xxh64}, {"lz4Compress", js_lz4},
		{"lz4Decompress", js_lz4d}, {"isZero", js_iszero}, {"pwriteAligned", js_pwrite_aligned},
		{"sealStart", js_seal_start}, {"sealResult", js_seal_result}, {"sealDrain", js_seal_drain},
		{"sealCancel", js_seal_cancel}, {"sealPending", js_seal_pending},
		{"ioStart", js_io_start}, {"ioDone", js_io_done}, {"ioWait", js_io_wait},
	};
	codec_init();
	for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
		napi_value f;
		napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
		napi_set_named_property(env, exports, fns[i].name, f);
	}
	napi_value hw;
	napi_get_boolean(env, crc_hw != 0, &hw);
	napi_set_named_property(env, exports, "crc32cHw", hw);
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

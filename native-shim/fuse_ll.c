/*
 * fuse_ll: a small N-API binding of libfuse3's low-level (inode based) API.
 *
 * Threading
 * ---------
 * A native "session thread" per mount does what can block for long:
 * fuse_session_new, fuse_session_mount (which may run fusermount3) and, at
 * the end, fuse_session_unmount.  Requests are served on the JS thread
 * itself: the /dev/fuse fd (non-blocking) is watched by a uv_poll handle on
 * Node's event loop, and its callback reads and processes requests with
 * fuse_session_receive_buf / fuse_session_process_buf; each low-level
 * callback calls the JS dispatch function directly (napi_make_callback, so
 * promise jobs run after each request).  No thread hop per request: a
 * request costs one kernel wakeup of this process, not two.
 *
 * After a request the callback keeps reading the (non-blocking) fd for a
 * short while (spinUs, 50 us by default) before it returns to the event
 * loop.  A client that issues requests back to back (stat after stat,
 * create after create) then finds the daemon awake: on virtual machines a
 * cross-CPU wakeup of a sleeping thread costs 100-300 us, several times
 * the rest of the round trip.  The spin stops as soon as a gap exceeds the
 * window, and a callback returns to the event loop after a few
 * milliseconds of continuous work so timers and I/O still run.
 *
 * JS answers through the reply functions below, at once or later (many
 * requests may be outstanding); they call fuse_reply_* under the session
 * lock, so a reply never writes to a device the session thread closed.
 *
 * Every request is answered exactly once: the reply functions refuse a second
 * answer (they throw), a request whose JS object is garbage-collected without
 * an answer is answered EIO by the finalizer, and a request that cannot be
 * handed to JS (the environment is shutting down) is answered EIO here.
 *
 * Shutdown
 * --------
 * unmount(): a helper thread detaches the mount (umount2 MNT_DETACH as root,
 * otherwise `fusermount3 -u -z`).  The kernel then ends the connection, the
 * request loop reads ENODEV and stops.  abort(): the request loop stops at
 * once (from another thread through a uv_async handle).  Either way the
 * session thread then runs fuse_session_unmount (closes the device, the
 * kernel fails what is pending, detaches the mount) and reports the end.
 * Neither ever blocks the JS thread.  The libfuse session is destroyed on
 * the JS thread once the end was reported and every request handed to JS
 * has been answered, so a late reply never touches freed memory.  A process
 * that exits while mounted (process.exit, uncaught exception) stops and
 * unmounts its sessions from an atexit handler.
 *
 * Signals are blocked in the native threads; SIGINT/SIGTERM stay with Node.
 */
#define FUSE_USE_VERSION 35
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <malloc.h>

extern char **environ;

/* Bump when the interface with lowlevel.ts changes (arguments, layouts, functions). */
#define FUSE_LL_ABI 2

/* ---- operation codes (mirrored in src/fuse/lowlevel.ts, checked at load) ---- */
enum {
	OP_LOOKUP = 1, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD,
	OP_MKDIR, OP_UNLINK, OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN,
	OP_READ, OP_WRITE, OP_FLUSH, OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR,
	OP_RELEASEDIR, OP_FSYNCDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR,
	OP_LISTXATTR, OP_REMOVEXATTR, OP_ACCESS, OP_CREATE, OP_FORGET_MULTI,
	OP_FALLOCATE, OP_READDIRPLUS,
	OP_COUNT,
	/* events (no request) */
	EV_INIT = 100, EV_DESTROY = 101, EV_ENDED = 102,
	EV_MOUNTED = 103, /* internal: session thread -> JS thread, starts the request loop */
};

static const struct { const char *name; int op; } op_names[] = {
	{"lookup", OP_LOOKUP}, {"forget", OP_FORGET}, {"getattr", OP_GETATTR},
	{"setattr", OP_SETATTR}, {"readlink", OP_READLINK}, {"mknod", OP_MKNOD},
	{"mkdir", OP_MKDIR}, {"unlink", OP_UNLINK}, {"rmdir", OP_RMDIR},
	{"symlink", OP_SYMLINK}, {"rename", OP_RENAME}, {"link", OP_LINK},
	{"open", OP_OPEN}, {"read", OP_READ}, {"write", OP_WRITE},
	{"flush", OP_FLUSH}, {"release", OP_RELEASE}, {"fsync", OP_FSYNC},
	{"opendir", OP_OPENDIR}, {"readdir", OP_READDIR},
	{"releasedir", OP_RELEASEDIR}, {"fsyncdir", OP_FSYNCDIR},
	{"statfs", OP_STATFS}, {"setxattr", OP_SETXATTR},
	{"getxattr", OP_GETXATTR}, {"listxattr", OP_LISTXATTR},
	{"removexattr", OP_REMOVEXATTR}, {"access", OP_ACCESS},
	{"create", OP_CREATE}, {"forgetMulti", OP_FORGET_MULTI},
	{"fallocate", OP_FALLOCATE}, {"readdirplus", OP_READDIRPLUS},
	{"EV_INIT", EV_INIT}, {"EV_DESTROY", EV_DESTROY}, {"EV_ENDED", EV_ENDED},
};

/* ---- packed layouts shared with lowlevel.ts (little-endian) ----
 * attr (ATTR_SIZE bytes):
 *   0 ino u64 | 8 size u64 | 16 blocks u64 | 24 atime.sec i64 | 32 mtime.sec i64
 *   40 ctime.sec i64 | 48 atime.nsec u32 | 52 mtime.nsec u32 | 56 ctime.nsec u32
 *   60 mode u32 | 64 nlink u32 | 68 uid u32 | 72 gid u32 | 76 blksize u32
 *   80 rdev u64 | 88 reserved
 * entry (ENTRY_SIZE bytes):
 *   0 ino u64 | 8 generation u64 | 16 attr_timeout f64 | 24 entry_timeout f64
 *   32 attr
 * dirent: 0 ino u64 | 8 next-offset u64 | 16 mode u32 | 20 namelen u32 | 24 name, padded to 8
 * dirent plus: 0 next-offset u64 | 8 namelen u32 | 12 pad | 16 entry | name, padded to 8
 */
#define ATTR_SIZE 96
#define ENTRY_SIZE (32 + ATTR_SIZE)
#define DIRENT_HDR 24
#define DIRENTPLUS_HDR (16 + ENTRY_SIZE)

static uint64_t ld64(const unsigned char *p) {
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
	return v;
}
static uint32_t ld32(const unsigned char *p) {
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static double ldf64(const unsigned char *p) {
	uint64_t v = ld64(p);
	double d;
	memcpy(&d, &v, sizeof d);
	return d;
}
static void st64(unsigned char *p, uint64_t v) {
	for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void st32(unsigned char *p, uint32_t v) {
	for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void unpack_attr(const unsigned char *p, struct stat *st) {
	memset(st, 0, sizeof *st);
	st->st_ino = (ino_t)ld64(p);
	st->st_size = (off_t)ld64(p + 8);
	st->st_blocks = (blkcnt_t)ld64(p + 16);
	st->st_atim.tv_sec = (time_t)(int64_t)ld64(p + 24);
	st->st_mtim.tv_sec = (time_t)(int64_t)ld64(p + 32);
	st->st_ctim.tv_sec = (time_t)(int64_t)ld64(p + 40);
	st->st_atim.tv_nsec = ld32(p + 48);
	st->st_mtim.tv_nsec = ld32(p + 52);
	st->st_ctim.tv_nsec = ld32(p + 56);
	st->st_mode = ld32(p + 60);
	st->st_nlink = ld32(p + 64);
	st->st_uid = ld32(p + 68);
	st->st_gid = ld32(p + 72);
	st->st_blksize = ld32(p + 76);
	st->st_rdev = (dev_t)ld64(p + 80);
}

static void pack_attr(unsigned char *p, const struct stat *st) {
	memset(p, 0, ATTR_SIZE);
	st64(p, st->st_ino);
	st64(p + 8, (uint64_t)st->st_size);
	st64(p + 16, (uint64_t)st->st_blocks);
	st64(p + 24, (uint64_t)(int64_t)st->st_atim.tv_sec);
	st64(p + 32, (uint64_t)(int64_t)st->st_mtim.tv_sec);
	st64(p + 40, (uint64_t)(int64_t)st->st_ctim.tv_sec);
	st32(p + 48, (uint32_t)st->st_atim.tv_nsec);
	st32(p + 52, (uint32_t)st->st_mtim.tv_nsec);
	st32(p + 56, (uint32_t)st->st_ctim.tv_nsec);
	st32(p + 60, st->st_mode);
	st32(p + 64, (uint32_t)st->st_nlink);
	st32(p + 68, st->st_uid);
	st32(p + 72, st->st_gid);
	st32(p + 76, (uint32_t)st->st_blksize);
	st64(p + 80, (uint64_t)st->st_rdev);
}

static void unpack_entry(const unsigned char *p, struct fuse_entry_param *e) {
	memset(e, 0, sizeof *e);
	e->ino = ld64(p);
	e->generation = ld64(p + 8);
	e->attr_timeout = ldf64(p + 16);
	e->entry_timeout = ldf64(p + 24);
	unpack_attr(p + 32, &e->attr);
}

/* ---- libfuse log capture: keep the last error line for JS messages ---- */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[512];
static char log_line[512]; /* libfuse sometimes logs one line in pieces */

static void log_func(enum fuse_log_level level, const char *fmt, va_list ap) {
	char piece[512];
	vsnprintf(piece, sizeof piece, fmt, ap);
	fputs(piece, stderr);
	if (level > FUSE_LOG_ERR) return;
	pthread_mutex_lock(&log_lock);
	size_t used = strlen(log_line);
	snprintf(log_line + used, sizeof log_line - used, "%s", piece);
	size_t n = strlen(log_line);
	if (n && log_line[n - 1] == '\n') {
		while (n && log_line[n - 1] == '\n') log_line[--n] = 0;
		snprintf(last_log, sizeof last_log, "%s", log_line);
		log_line[0] = 0;
	}
	pthread_mutex_unlock(&log_lock);
}

/* ---- receive buffers ----
 * The loop reads each request into a block of libfuse's buffer size. A large
 * write is handed to JS inside its block (no copy) and the loop takes another
 * block; blocks come back through the Buffer's finalizer into a small pool,
 * so steady streaming reuses memory that is already mapped instead of
 * mmap/munmap'ing (and faulting in) a fresh MiB per request.
 */
#define POOL_MAX 8
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *pool[POOL_MAX];
static size_t pool_n;
static size_t blk_size; /* usable size of libfuse's own receive buffer, once seen */

static void *block_get(void) {
	void *b = NULL;
	pthread_mutex_lock(&pool_lock);
	if (pool_n) b = pool[--pool_n];
	size_t size = blk_size;
	pthread_mutex_unlock(&pool_lock);
	return b ? b : malloc(size);
}

static void block_put(void *b) {
	if (!b) return;
	pthread_mutex_lock(&pool_lock);
	if (pool_n < POOL_MAX && malloc_usable_size(b) >= blk_size) {
		pool[pool_n++] = b;
		b = NULL;
	}
	pthread_mutex_unlock(&pool_lock);
	free(b);
}

/* ---- session ---- */
enum { S_STARTING, S_RUNNING, S_ENDED };

typedef struct sess {
	napi_threadsafe_function tsfn;
	struct fuse_session *se;
	struct fuse_conn_info *conn;
	struct fuse_conn_info_opts *copts;
	char *mountpoint;
	char **argv;
	int argc;
	uint32_t opmask_lo; /* bit per op code (< 64) */
	uint32_t opmask_hi;
	unsigned max_write;
	int writeback, atomic_trunc, killpriv, async_read, rdplus_auto;
	int latin1;
	uint64_t spin_ns; /* keep reading this long after a request before sleeping */
	int guard_fd; /* see protect_auto_unmount */
	int unmount_sock; /* our end of fusermount3's auto_unmount socket: closed when the session ends */
	char *cur_block; /* the receive buffer being processed */
	int cur_taken;   /* ... handed to a write request */
	/* the request loop (JS thread) */
	napi_ref cb_ref;          /* the JS dispatch function */
	napi_async_context actx;  /* for napi_make_callback */
	uv_poll_t poll;           /* /dev/fuse readable */
	uv_async_t stopper;       /* stop requests from other threads */
	struct fuse_buf fbuf;     /* receive buffer */
	int loop_started;         /* handles initialised (JS thread) */
	int dispatching;          /* inside fuse_session_process_buf (JS thread) */
	int loop_active;          /* stopper usable (guarded by lock) */
	int loop_done;            /* loop over: session thread may tear down (lock) */
	int end_ok;
	char end_msg[512];
	atomic_int stop_flag;     /* abort requested */
	pthread_mutex_t lock; /* replies vs closing the device; state */
	pthread_cond_t cond;
	int state;
	int exit_requested;
	int unmounter_started;
	int init_seen, init_posted, in_loop;
	int finished;        /* session thread done (guarded by lock) */
	int ended_js;        /* JS thread has seen EV_ENDED */
	atomic_int shutting_down; /* process/env teardown: no more JS */
	atomic_int inflight; /* requests handed to JS, not answered yet */
	atomic_int refs;
	napi_env env;
	struct sess *next;
} sess;

static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static sess *sessions;

static int has_op(const sess *s, int op) {
	return op < 32 ? (s->opmask_lo >> op) & 1 : (s->opmask_hi >> (op - 32)) & 1;
}

static void sess_free(sess *s) {
	for (int i = 0; i < s->argc; i++) free(s->argv[i]);
	free(s->argv);
	free(s->mountpoint);
	free(s->copts);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}

static void sess_unref(sess *s) {
	if (atomic_fetch_sub(&s->refs, 1) == 1) {
		/* The libfuse session is gone unless JS never saw the end
		   (environment teardown); then leak rather than race. */
		if (s->se == NULL) sess_free(s);
	}
}

/* Called on the JS thread: destroy libfuse's session once it has ended and
   nothing handed to JS is still unanswered. */
static void maybe_destroy(sess *s) {
	if (s->ended_js && atomic_load(&s->inflight) == 0 && s->se) {
		struct fuse_session *se = s->se;
		s->se = NULL;
		fuse_session_destroy(se);
	}
}

/* ---- request records ---- */
typedef struct llreq {
	int op;
	int done;
	sess *s;
	fuse_req_t req;
	uint32_t uid, gid, pid, umask;
	fuse_ino_t ino, ino2;
	char *name, *name2;
	size_t namelen, name2len;
	char *data;
	size_t datalen;
	void *block; /* data points into this receive block (writes) */
	uint64_t off, len;
	size_t size;
	uint64_t fh;
	int has_fh;
	int flags;
	uint32_t mode;
	uint64_t rdev;
	int to_set, datasync, writepage;
	uint64_t lock_owner;
	unsigned char attr[ATTR_SIZE];
} llreq;

typedef struct ev {
	int op;
	int ok;
	char msg[512];
	uint32_t proto_major, proto_minor, max_write, max_read, max_readahead;
	uint32_t capable, want, max_background, congestion_threshold, time_gran;
} ev;

static llreq *mkreq(fuse_req_t req, int op) {
	sess *s = fuse_req_userdata(req);
	llreq *r = calloc(1, sizeof *r);
	if (!r) return NULL;
	const struct fuse_ctx *c = fuse_req_ctx(req);
	r->op = op;
	r->s = s;
	r->req = req;
	r->uid = c->uid;
	r->gid = c->gid;
	r->pid = (uint32_t)c->pid;
	r->umask = c->umask;
	atomic_fetch_add(&s->refs, 1);
	return r;
}

static void freereq(llreq *r) {
	sess *s = r->s;
	free(r->name);
	free(r->name2);
	free(r->block ? NULL : r->data);
	block_put(r->block);
	free(r);
	sess_unref(s);
}

static int reply_locked_err(llreq *r, int err) {
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_err(r->req, err);
	pthread_mutex_unlock(&r->s->lock);
	return rc;
}

/* A request that never reached JS. */
static void fail_native(llreq *r) {
	if (r->op == OP_FORGET || r->op == OP_FORGET_MULTI) {
		freereq(r);
		return;
	}
	if (!r->done) {
		r->done = 1;
		reply_locked_err(r, EIO);
		atomic_fetch_sub(&r->s->inflight, 1);
	}
	freereq(r);
}

static int deliver(sess *s, void *data); /* JS thread: hand to the dispatch function */

/* A request, from a low-level callback (JS thread, inside the request loop). */
static void post(llreq *r) {
	sess *s = r->s;
	if (r->op != OP_FORGET && r->op != OP_FORGET_MULTI) atomic_fetch_add(&s->inflight, 1);
	if (atomic_load(&s->shutting_down) || !deliver(s, r)) fail_native(r);
}

/* An event from the JS thread. */
static void post_event(sess *s, ev *e) {
	if (atomic_load(&s->shutting_down) || !deliver(s, e)) free(e);
}

/* An event from the session thread. */
static int post_event_tsfn(sess *s, ev *e) {
	if (atomic_load(&s->shutting_down) ||
	    napi_call_threadsafe_function(s->tsfn, e, napi_tsfn_nonblocking) != napi_ok) {
		free(e);
		return 0;
	}
	return 1;
}

static char *dupn(const char *p, size_t *len) {
	size_t n = strlen(p);
	char *d = malloc(n + 1);
	if (d) memcpy(d, p, n + 1);
	*len = n;
	return d;
}

#define NEWREQ(op)                                   \
	llreq *r = mkreq(req, op);                   \
	if (!r) {                                    \
		fuse_reply_err(req, ENOMEM);         \
		return;                              \
	}
#define SETFH(fi)                                    \
	do {                                         \
		if (fi) {                            \
			r->fh = (fi)->fh;            \
			r->has_fh = 1;               \
		}                                    \
	} while (0)
#define NAME(field, lenf, src)                       \
	do {                                         \
		r->field = dupn(src, &r->lenf);      \
		if (!r->field) {                     \
			fail_native(r);              \
			return;                      \
		}                                    \
	} while (0)

/* ---- low-level callbacks (session thread) ---- */
static void ll_init(void *ud, struct fuse_conn_info *c) {
	sess *s = ud;
	unsigned cap = c->max_write; /* libfuse's buffer limit: 1 MiB with FUSE_MAX_PAGES */
	if (s->max_write) c->max_write = s->max_write;
#define WANT(on, bit)                                                    \
	do {                                                             \
		if ((on) && (c->capable & (bit))) c->want |= (bit);      \
		else if (!(on)) c->want &= ~(unsigned)(bit);             \
	} while (0)
	WANT(s->async_read, FUSE_CAP_ASYNC_READ);
	WANT(s->writeback, FUSE_CAP_WRITEBACK_CACHE);
	WANT(s->atomic_trunc, FUSE_CAP_ATOMIC_O_TRUNC);
	WANT(s->killpriv, FUSE_CAP_HANDLE_KILLPRIV);
	if (!s->rdplus_auto) c->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	/* The kernel keeps min(the mount's read_ahead_kb, this): put no limit
	   here, so the read_ahead_kb a mounter sets in sysfs (before or after
	   this reply) stands. -o max_readahead= still lowers it. */
	c->max_readahead = UINT_MAX;
	c->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
#undef WANT
	/* -o writeback_cache, max_write=, max_background=, ... override the above */
	if (s->copts) fuse_apply_conn_info_opts(s->copts, c);
	if (c->max_write > cap) c->max_write = cap;
	if (c->max_write < 4096) c->max_write = 4096;
	s->conn = c;
	s->init_seen = 1;
}

static void ll_destroy(void *ud) {
	sess *s = ud;
	if (!s->in_loop) return; /* fuse_session_destroy on the JS thread: JS already knows */
	ev *e = calloc(1, sizeof *e);
	if (!e) return;
	e->op = EV_DESTROY;
	post_event(s, e);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
	NEWREQ(OP_LOOKUP);
	r->ino = parent;
	NAME(name, namelen, name);
	post(r);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
	llreq *r = mkreq(req, OP_FORGET);
	fuse_reply_none(req); /* forget takes no answer: give it at once */
	if (!r) return;
	r->req = NULL;
	r->done = 1;
	r->ino = ino;
	r->len = nlookup;
	post(r);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *fd) {
	llreq *r = mkreq(req, OP_FORGET_MULTI);
	if (r) {
		r->data = malloc(count * 16 + 1);
		if (r->data) {
			for (size_t i = 0; i < count; i++) {
				st64((unsigned char *)r->data + 16 * i, fd[i].ino);
				st64((unsigned char *)r->data + 16 * i + 8, fd[i].nlookup);
			}
			r->datalen = count * 16;
		}
	}
	fuse_reply_none(req);
	if (!r) return;
	r->req = NULL;
	r->done = 1;
	if (!r->data) {
		freereq(r);
		return;
	}
	post(r);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	NEWREQ(OP_GETATTR);
	r->ino = ino;
	SETFH(fi);
	post(r);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi) {
	NEWREQ(OP_SETATTR);
	r->ino = ino;
	r->to_set = to_set;
	pack_attr(r->attr, attr);
	SETFH(fi);
	post(r);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
	NEWREQ(OP_READLINK);
	r->ino = ino;
	post(r);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
	NEWREQ(OP_MKNOD);
	r->ino = parent;
	r->mode = mode;
	r->rdev = rdev;
	NAME(name, namelen, name);
	post(r);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
	NEWREQ(OP_MKDIR);
	r->ino = parent;
	r->mode = mode;
	NAME(name, namelen, name);
	post(r);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
	NEWREQ(OP_UNLINK);
	r->ino = parent;
	NAME(name, namelen, name);
	post(r);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
	NEWREQ(OP_RMDIR);
	r->ino = parent;
	NAME(name, namelen, name);
	post(r);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
	NEWREQ(OP_SYMLINK);
	r->ino = parent;
	NAME(name, namelen, name);
	NAME(name2, name2len, link);
	post(r);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags) {
	NEWREQ(OP_RENAME);
	r->ino = parent;
	r->ino2 = newparent;
	r->flags = (int)flags;
	NAME(name, namelen, name);
	NAME(name2, name2len, newname);
	post(r);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
	NEWREQ(OP_LINK);
	r->ino = ino;
	r->ino2 = newparent;
	NAME(name, namelen, newname);
	post(r);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	NEWREQ(OP_OPEN);
	r->ino = ino;
	r->flags = fi->flags;
	post(r);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
	NEWREQ(OP_READ);
	r->ino = ino;
	r->size = size;
	r->off = (uint64_t)off;
	SETFH(fi);
	post(r);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi) {
	NEWREQ(OP_WRITE);
	r->ino = ino;
	r->off = (uint64_t)off;
	r->writepage = fi->writepage;
	SETFH(fi);
	sess *s = r->s;
	r->datalen = size;
	if (s->cur_block && !s->cur_taken && size >= blk_size / 2 && buf >= s->cur_block &&
	    buf + size <= s->cur_block + blk_size) {
		/* large: take the whole receive block, the loop gets a new one */
		r->block = s->cur_block;
		r->data = (char *)buf;
		s->cur_taken = 1;
	} else {
		/* small: copy, the loop reuses its buffer */
		r->data = malloc(size ? size : 1);
		if (!r->data) {
			fail_native(r);
			return;
		}
		memcpy(r->data, buf, size);
	}
	post(r);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	NEWREQ(OP_FLUSH);
	r->ino = ino;
	r->lock_owner = fi->lock_owner;
	SETFH(fi);
	post(r);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	NEWREQ(OP_RELEASE);
	r->ino = ino;
	r->flags = fi->flags;
	SETFH(fi);
	post(r);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
	NEWREQ(OP_FSYNC);
	r->ino = ino;
	r->datasync = datasync;
	SETFH(fi);
	post(r);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	NEWREQ(OP_OPENDIR);
	r->ino = ino;
	r->flags = fi->flags;
	post(r);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
	NEWREQ(OP_READDIR);
	r->ino = ino;
	r->size = size;
	r->off = (uint64_t)off;
	SETFH(fi);
	post(r);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi) {
	NEWREQ(OP_READDIRPLUS);
	r->ino = ino;
	r->size = size;
	r->off = (uint64_t)off;
	SETFH(fi);
	post(r);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	NEWREQ(OP_RELEASEDIR);
	r->ino = ino;
	SETFH(fi);
	post(r);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
	NEWREQ(OP_FSYNCDIR);
	r->ino = ino;
	r->datasync = datasync;
	SETFH(fi);
	post(r);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
	NEWREQ(OP_STATFS);
	r->ino = ino;
	post(r);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags) {
	NEWREQ(OP_SETXATTR);
	r->ino = ino;
	r->flags = flags;
	NAME(name, namelen, name);
	r->data = malloc(size ? size : 1);
	if (!r->data) {
		fail_native(r);
		return;
	}
	memcpy(r->data, value, size);
	r->datalen = size;
	post(r);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
	NEWREQ(OP_GETXATTR);
	r->ino = ino;
	r->size = size;
	NAME(name, namelen, name);
	post(r);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
	NEWREQ(OP_LISTXATTR);
	r->ino = ino;
	r->size = size;
	post(r);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
	NEWREQ(OP_REMOVEXATTR);
	r->ino = ino;
	NAME(name, namelen, name);
	post(r);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) {
	NEWREQ(OP_ACCESS);
	r->ino = ino;
	r->flags = mask;
	post(r);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi) {
	NEWREQ(OP_CREATE);
	r->ino = parent;
	r->mode = mode;
	r->flags = fi->flags;
	NAME(name, namelen, name);
	post(r);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi) {
	NEWREQ(OP_FALLOCATE);
	r->ino = ino;
	r->flags = mode;
	r->off = (uint64_t)offset;
	r->len = (uint64_t)length;
	SETFH(fi);
	post(r);
}

/* ---- the session thread ---- */
static void post_ended(sess *s, int ok, const char *msg) {
	ev *e = calloc(1, sizeof *e);
	if (!e) return;
	e->op = EV_ENDED;
	e->ok = ok;
	snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "");
	post_event_tsfn(s, e);
}

static void post_init(sess *s) {
	struct fuse_conn_info *c = s->conn;
	ev *e = calloc(1, sizeof *e);
	s->init_posted = 1;
	if (!e) return;
	e->op = EV_INIT;
	e->ok = 1;
	e->proto_major = c->proto_major;
	e->proto_minor = c->proto_minor;
	e->max_write = c->max_write;
	e->max_read = c->max_read;
	e->max_readahead = c->max_readahead;
	e->capable = c->capable;
	e->want = c->want;
	e->max_background = c->max_background;
	e->congestion_threshold = c->congestion_threshold;
	e->time_gran = c->time_gran;
	post_event(s, e);
}

static void start_unmounter(sess *s);

static void take_last_log(char *out, size_t n, const char *fallback) {
	pthread_mutex_lock(&log_lock);
	snprintf(out, n, "%s", last_log[0] ? last_log : fallback);
	last_log[0] = 0;
	pthread_mutex_unlock(&log_lock);
}

/* The fds open now (a sorted list), to tell what fuse_session_mount adds. */
static size_t fd_snapshot(int **out) {
	size_t n = 0, cap = 64;
	int *v = malloc(cap * sizeof *v);
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	if (!d || !v) {
		if (d) closedir(d);
		free(v);
		*out = NULL;
		return 0;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		if (n == cap) {
			int *nv = realloc(v, (cap *= 2) * sizeof *v);
			if (!nv) break;
			v = nv;
		}
		v[n++] = atoi(e->d_name);
	}
	closedir(d);
	*out = v;
	return n;
}

/*
 * With -o auto_unmount libfuse mounts through fusermount3, which stays alive
 * and unmounts when a socket held by this process closes, but only if
 * opening the mountpoint then fails with ENOTCONN. When the process dies,
 * the kernel releases its files last-fd-first; if the socket is released
 * before /dev/fuse, fusermount3 races the connection abort, gets
 * ECONNABORTED and leaves a dead mount. So: keep a duplicate of the device
 * fd numbered above the socket (released first), and mark the socket
 * close-on-exec so child processes do not hold it (libfuse leaves it
 * inheritable).
 */
static void protect_auto_unmount(sess *s, const int *before, size_t nbefore) {
	int fuse_fd = fuse_session_fd(s->se), max_sock = -1;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	if (!d) return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		int fd = atoi(e->d_name), known = 0;
		if (fd == fuse_fd || fd == dirfd(d)) continue;
		for (size_t i = 0; i < nbefore && !known; i++) known = before[i] == fd;
		struct stat st;
		int fl = fcntl(fd, F_GETFD);
		if (known || fl < 0 || (fl & FD_CLOEXEC) || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
		fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
		if (fd > max_sock) max_sock = fd;
	}
	closedir(d);
	if (max_sock > fuse_fd) s->guard_fd = fcntl(fuse_fd, F_DUPFD_CLOEXEC, max_sock + 1);
	s->unmount_sock = max_sock;
}

static void *session_thread(void *arg) {
	sess *s = arg;
	char msg[512];
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_lowlevel_ops ops;
	int ok = 0;

	pthread_setname_np(pthread_self(), "fuse_ll");
	memset(&ops, 0, sizeof ops);
	ops.init = ll_init;
	ops.destroy = ll_destroy;
#define REG(op, field, fn) if (has_op(s, op)) ops.field = fn
	REG(OP_LOOKUP, lookup, ll_lookup);
	REG(OP_FORGET, forget, ll_forget);
	REG(OP_FORGET_MULTI, forget_multi, ll_forget_multi);
	REG(OP_GETATTR, getattr, ll_getattr);
	REG(OP_SETATTR, setattr, ll_setattr);
	REG(OP_READLINK, readlink, ll_readlink);
	REG(OP_MKNOD, mknod, ll_mknod);
	REG(OP_MKDIR, mkdir, ll_mkdir);
	REG(OP_UNLINK, unlink, ll_unlink);
	REG(OP_RMDIR, rmdir, ll_rmdir);
	REG(OP_SYMLINK, symlink, ll_symlink);
	REG(OP_RENAME, rename, ll_rename);
	REG(OP_LINK, link, ll_link);
	REG(OP_OPEN, open, ll_open);
	REG(OP_READ, read, ll_read);
	REG(OP_WRITE, write, ll_write);
	REG(OP_FLUSH, flush, ll_flush);
	REG(OP_RELEASE, release, ll_release);
	REG(OP_FSYNC, fsync, ll_fsync);
	REG(OP_OPENDIR, opendir, ll_opendir);
	REG(OP_READDIR, readdir, ll_readdir);
	REG(OP_READDIRPLUS, readdirplus, ll_readdirplus);
	REG(OP_RELEASEDIR, releasedir, ll_releasedir);
	REG(OP_FSYNCDIR, fsyncdir, ll_fsyncdir);
	REG(OP_STATFS, statfs, ll_statfs);
	REG(OP_SETXATTR, setxattr, ll_setxattr);
	REG(OP_GETXATTR, getxattr, ll_getxattr);
	REG(OP_LISTXATTR, listxattr, ll_listxattr);
	REG(OP_REMOVEXATTR, removexattr, ll_removexattr);
	REG(OP_ACCESS, access, ll_access);
	REG(OP_CREATE, create, ll_create);
	REG(OP_FALLOCATE, fallocate, ll_fallocate);
#undef REG

	for (int i = 0; i < s->argc; i++) {
		if (fuse_opt_add_arg(&args, s->argv[i]) != 0) {
			snprintf(msg, sizeof msg, "out of memory");
			goto out;
		}
	}
	/* Connection options (max_write=, writeback_cache, ...) are taken out
	   here and applied in init; the rest go to libfuse's session and mount
	   option parsers, which reject anything unknown. */
	s->copts = fuse_parse_conn_info_opts(&args);
	if (!s->copts) {
		take_last_log(msg, sizeof msg, "invalid connection options");
		goto out;
	}
	s->se = fuse_session_new(&args, &ops, sizeof ops, s);
	if (!s->se) {
		take_last_log(msg, sizeof msg, "fuse_session_new failed (invalid options?)");
		goto out;
	}
	/* One mount at a time: the auto_unmount socket is found as the new
	   socket between the snapshot and the mount, which another session
	   mounting at the same moment would confuse. */
	static pthread_mutex_t mount_lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&mount_lock);
	int *before = NULL;
	size_t nbefore = fd_snapshot(&before);
	if (fuse_session_mount(s->se, s->mountpoint) != 0) {
		pthread_mutex_unlock(&mount_lock);
		free(before);
		take_last_log(msg, sizeof msg, "mount failed");
		/* Nothing was handed to JS yet: destroy here. */
		fuse_session_destroy(s->se);
		s->se = NULL;
		goto out;
	}

	protect_auto_unmount(s, before, nbefore);
	pthread_mutex_unlock(&mount_lock);
	free(before);

	pthread_mutex_lock(&s->lock);
	s->state = S_RUNNING;
	int want_exit = s->exit_requested;
	pthread_mutex_unlock(&s->lock);
	if (want_exit) start_unmounter(s);

	int fd = fuse_session_fd(s->se);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	s->in_loop = 1;
	ok = 1;
	snprintf(msg, sizeof msg, "aborted");
	/* Hand the device to the JS thread's request loop and wait for its end. */
	ev *me = atomic_load(&s->stop_flag) ? NULL : calloc(1, sizeof *me);
	if (me) me->op = EV_MOUNTED;
	if (me && post_event_tsfn(s, me)) {
		pthread_mutex_lock(&s->lock);
		while (!s->loop_done) pthread_cond_wait(&s->cond, &s->lock);
		ok = s->end_ok;
		snprintf(msg, sizeof msg, "%s", s->end_msg);
		pthread_mutex_unlock(&s->lock);
	}
	s->in_loop = 0;
	/* also quiets libfuse about late replies to a closed device */
	fuse_session_exit(s->se);
	if (!s->init_posted && ok) {
		take_last_log(msg, sizeof msg, "the kernel's FUSE_INIT failed");
		ok = 0;
	}

	/* Close the device and detach the mount if it is still there. Replies
	   from JS hold the lock, so none writes to a closed (reused) fd. */
	pthread_mutex_lock(&s->lock);
	if (s->guard_fd >= 0) close(s->guard_fd);
	s->guard_fd = -1;
	fuse_session_unmount(s->se);
	/* libfuse keeps its end of the auto_unmount socket for the life of the
	   process; a daemon serving several mounts ends sessions while it runs,
	   so let that mount's fusermount3 helper go now (the mount is gone). */
	if (s->unmount_sock >= 0) close(s->unmount_sock);
	s->unmount_sock = -1;
	pthread_mutex_unlock(&s->lock);

out:
	fuse_opt_free_args(&args);
	pthread_mutex_lock(&s->lock);
	s->state = S_ENDED;
	pthread_mutex_unlock(&s->lock);
	if (!atomic_load(&s->shutting_down)) {
		post_ended(s, ok, msg);
		napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
	}
	pthread_mutex_lock(&sessions_lock);
	for (sess **pp = &sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	pthread_mutex_unlock(&sessions_lock);
	pthread_mutex_lock(&s->lock);
	s->finished = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	sess_unref(s);
	return NULL;
}

/* ---- the request loop (JS thread) ---- */
static uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Return to the event loop after this much continuous work. */
#define LOOP_BUDGET_NS 4000000u

static void on_loop_handle_closed(uv_handle_t *h) {
	sess_unref(h->data);
}

/* End the request loop (JS thread; idempotent) and let the session thread
   tear down. Safe before the loop started: then it only reports the end. */
static void stop_loop(sess *s, int ok, const char *msg) {
	pthread_mutex_lock(&s->lock);
	if (s->loop_done) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	s->loop_active = 0;
	pthread_mutex_unlock(&s->lock);
	if (s->loop_started) {
		/* uv_poll_stop takes the fd out of epoll at once, before the
		   session thread closes it */
		uv_poll_stop(&s->poll);
		atomic_fetch_add(&s->refs, 2);
		uv_close((uv_handle_t *)&s->poll, on_loop_handle_closed);
		uv_close((uv_handle_t *)&s->stopper, on_loop_handle_closed);
		s->loop_started = 0;
	}
	block_put(s->fbuf.mem);
	s->fbuf.mem = NULL;
	pthread_mutex_lock(&s->lock);
	s->loop_done = 1;
	s->end_ok = ok;
	snprintf(s->end_msg, sizeof s->end_msg, "%s", msg);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void on_readable(uv_poll_t *h, int status, int events) {
	(void)events;
	sess *s = h->data;
	char msg[512];
	uint64_t t0 = now_ns(), last = t0;
	for (;;) {
		if (atomic_load(&s->stop_flag)) {
			stop_loop(s, 1, "aborted");
			return;
		}
		if (!s->fbuf.mem && blk_size) {
			s->fbuf.mem = block_get();
			if (!s->fbuf.mem) {
				stop_loop(s, 0, "out of memory");
				return;
			}
		}
		int res = fuse_session_receive_buf(s->se, &s->fbuf);
		if (res == -EINTR) continue;
		if (res == -EAGAIN) {
			if (status < 0) {
				/* libuv stopped watching after a poll error */
				stop_loop(s, 0, "polling /dev/fuse failed");
				return;
			}
			uint64_t t = now_ns();
			if (s->spin_ns && t - last < s->spin_ns && t - t0 < LOOP_BUDGET_NS) {
				__builtin_ia32_pause();
				continue;
			}
			return;
		}
		if (res <= 0) {
			if (res < 0) snprintf(msg, sizeof msg, "reading /dev/fuse: %s", strerror(-res));
			stop_loop(s, res == 0, res == 0 ? "unmounted" : msg);
			return;
		}
		if (!blk_size) {
			/* libfuse allocated its buffer: blocks of that size fit every read */
			pthread_mutex_lock(&pool_lock);
			if (!blk_size) blk_size = malloc_usable_size(s->fbuf.mem);
			pthread_mutex_unlock(&pool_lock);
		}
		napi_handle_scope scope;
		int scoped = napi_open_handle_scope(s->env, &scope) == napi_ok;
		s->cur_block = s->fbuf.mem;
		s->cur_taken = 0;
		s->dispatching = 1;
		fuse_session_process_buf(s->se, &s->fbuf);
		s->dispatching = 0;
		if (s->cur_taken) s->fbuf.mem = NULL;
		s->cur_block = NULL;
		if (s->init_seen && !s->init_posted) post_init(s);
		if (scoped) napi_close_handle_scope(s->env, scope);
		last = now_ns();
		if (last - t0 >= LOOP_BUDGET_NS) return;
	}
}

static void on_stop_request(uv_async_t *a) {
	sess *s = a->data;
	if (atomic_load(&s->stop_flag)) stop_loop(s, 1, "aborted");
}

/* EV_MOUNTED arrived: watch the device (JS thread). */
static void start_loop(sess *s) {
	uv_loop_t *loop = NULL;
	if (atomic_load(&s->stop_flag)) {
		stop_loop(s, 1, "aborted");
		return;
	}
	if (napi_get_uv_event_loop(s->env, &loop) != napi_ok || !loop) {
		stop_loop(s, 0, "no event loop to serve /dev/fuse from");
		return;
	}
	s->poll.data = s;
	s->stopper.data = s;
	if (uv_poll_init(loop, &s->poll, fuse_session_fd(s->se)) != 0) {
		stop_loop(s, 0, "cannot watch /dev/fuse");
		return;
	}
	if (uv_async_init(loop, &s->stopper, on_stop_request) != 0) {
		atomic_fetch_add(&s->refs, 1);
		uv_close((uv_handle_t *)&s->poll, on_loop_handle_closed);
		stop_loop(s, 0, "cannot set up the request loop");
		return;
	}
	uv_unref((uv_handle_t *)&s->stopper); /* the poll handle keeps the process alive */
	s->loop_started = 1;
	uv_poll_start(&s->poll, UV_READABLE, on_readable);
	pthread_mutex_lock(&s->lock);
	s->loop_active = 1;
	pthread_mutex_unlock(&s->lock);
}

/* Ask the request loop to stop, from any thread. */
static void request_stop(sess *s) {
	atomic_store(&s->stop_flag, 1);
	pthread_mutex_lock(&s->lock);
	if (s->loop_active) uv_async_send(&s->stopper);
	pthread_mutex_unlock(&s->lock);
}

static void *unmounter_thread(void *arg) {
	sess *s = arg;
	int ok = 0;
	if (geteuid() == 0) {
		ok = umount2(s->mountpoint, MNT_DETACH) == 0;
	} else {
		const char *progs[] = {"fusermount3", "fusermount"};
		for (int i = 0; i < 2 && !ok; i++) {
			char *argv[] = {(char *)progs[i], "-u", "-q", "-z", "--", s->mountpoint, NULL};
			posix_spawnattr_t at;
			sigset_t none;
			pid_t pid;
			int st;
			sigemptyset(&none);
			posix_spawnattr_init(&at);
			posix_spawnattr_setsigmask(&at, &none);
			posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
			if (posix_spawnp(&pid, progs[i], NULL, &at, argv, environ) == 0 &&
			    waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
				ok = 1;
			posix_spawnattr_destroy(&at);
		}
	}
	/* Could not detach (or it was already gone): stop the loop directly. */
	if (!ok) request_stop(s);
	sess_unref(s);
	return NULL;
}

static int spawn_blocked(pthread_t *t, void *(*fn)(void *), void *arg, int detach) {
	sigset_t all, old;
	pthread_attr_t at;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&at);
	if (detach) pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(t, &at, fn, arg);
	pthread_attr_destroy(&at);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static void start_unmounter(sess *s) {
	pthread_t t;
	pthread_mutex_lock(&s->lock);
	int already = s->unmounter_started;
	s->unmounter_started = 1;
	pthread_mutex_unlock(&s->lock);
	if (already) return;
	atomic_fetch_add(&s->refs, 1);
	if (spawn_blocked(&t, unmounter_thread, s, 1) != 0) {
		atomic_fetch_sub(&s->refs, 1);
		request_stop(s);
	}
}

/* Process or environment teardown: stop the loop, unmount, wait a little. */
static void emergency_stop(sess *s) {
	atomic_store(&s->shutting_down, 1);
	atomic_store(&s->stop_flag, 1);
	/* JS thread (atexit, env cleanup): no request loop callback runs or
	   returns any more */
	stop_loop(s, 1, "aborted");
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 3;
	pthread_mutex_lock(&s->lock);
	while (!s->finished)
		if (pthread_cond_timedwait(&s->cond, &s->lock, &dl) == ETIMEDOUT) break;
	pthread_mutex_unlock(&s->lock);
}

static void at_exit(void) {
	for (;;) {
		pthread_mutex_lock(&sessions_lock);
		sess *s = sessions;
		if (s) {
			sessions = s->next;
			atomic_fetch_add(&s->refs, 1);
		}
		pthread_mutex_unlock(&sessions_lock);
		if (!s) break;
		emergency_stop(s);
		/* no unref: memory goes with the process */
	}
}

static void env_cleanup(void *arg) {
	sess *s = arg;
	pthread_mutex_lock(&s->lock);
	int running = !s->finished;
	pthread_mutex_unlock(&s->lock);
	if (running) emergency_stop(s);
	sess_unref(s);
}

/* ---- JS side ---- */
#define CHECK(call)                                                        \
	do {                                                               \
		if ((call) != napi_ok) {                                   \
			napi_throw_error(env, NULL, "fuse_ll: N-API call failed: " #call); \
			return NULL;                                       \
		}                                                          \
	} while (0)

static napi_value mk_num(napi_env env, double v) {
	napi_value r;
	napi_create_double(env, v, &r);
	return r;
}
static napi_value mk_big(napi_env env, uint64_t v) {
	napi_value r;
	napi_create_bigint_uint64(env, v, &r);
	return r;
}
static napi_value mk_str(napi_env env, sess *s, const char *p, size_t n) {
	napi_value r;
	if (s->latin1) napi_create_string_latin1(env, p, n, &r);
	else napi_create_string_utf8(env, p, n, &r);
	return r;
}
static napi_value mk_bool(napi_env env, int v) {
	napi_value r;
	napi_get_boolean(env, v != 0, &r);
	return r;
}
static napi_value mk_undef(napi_env env) {
	napi_value r;
	napi_get_undefined(env, &r);
	return r;
}
static napi_value mk_fh(napi_env env, llreq *r) {
	return r->has_fh ? mk_num(env, (double)r->fh) : mk_undef(env);
}

static void free_data_cb(napi_env env, void *data, void *hint) {
	(void)env;
	if (hint) block_put(hint); /* data points into this block */
	else free(data);
}

/* Hand r->data to JS as a Buffer without copying. */
static napi_value take_buffer(napi_env env, llreq *r) {
	napi_value b;
	void *copy;
	if (napi_create_external_buffer(env, r->datalen, r->data, free_data_cb, r->block, &b) == napi_ok) {
		r->data = NULL;
		r->block = NULL;
		return b;
	}
	/* runtimes that forbid external buffers */
	napi_create_buffer_copy(env, r->datalen, r->data, &copy, &b);
	return b;
}

/* The dispatch function's reference and the async context (JS thread). */
static void release_js(napi_env env, sess *s) {
	if (s->cb_ref) napi_delete_reference(env, s->cb_ref);
	s->cb_ref = NULL;
	if (s->actx) napi_async_destroy(env, s->actx);
	s->actx = NULL;
}

/* Call the dispatch function; promise jobs and nextTicks run afterwards when
   this is the outermost call (the request loop), as for any event callback. */
static napi_status invoke(napi_env env, sess *s, napi_value cb, size_t n, napi_value *argv) {
	napi_value recv;
	/* napi_make_callback wants an object as `this` */
	if (s->actx && napi_get_global(env, &recv) == napi_ok)
		return napi_make_callback(env, s->actx, recv, cb, n, argv, NULL);
	napi_get_undefined(env, &recv);
	return napi_call_function(env, recv, cb, n, argv, NULL);
}

static void req_finalize(napi_env env, void *data, void *hint) {
	(void)env;
	(void)hint;
	llreq *r = data;
	if (!r->done) {
		fprintf(stderr, "fuse_ll: request (op %d) was garbage-collected without a reply; answered EIO\n", r->op);
		r->done = 1;
		reply_locked_err(r, EIO);
		atomic_fetch_sub(&r->s->inflight, 1);
		maybe_destroy(r->s);
	}
	freereq(r);
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
	sess *s = context;
	int op = *(int *)data;

	if (op == EV_MOUNTED) {
		free(data);
		if (env) start_loop(s);
		else stop_loop(s, 0, "the JS environment is gone");
		return;
	}
	if (op >= EV_INIT) {
		ev *e = data;
		if (env && cb) {
			napi_value argv[8], obj;
			int n = 0;
			argv[n++] = mk_num(env, op);
			argv[n++] = mk_undef(env);
			napi_create_object(env, &obj);
#define PROP(name, val) napi_set_named_property(env, obj, name, val)
			PROP("ok", mk_bool(env, e->ok));
			PROP("message", mk_str(env, s, e->msg, strlen(e->msg)));
			if (op == EV_INIT) {
				PROP("protoMajor", mk_num(env, e->proto_major));
				PROP("protoMinor", mk_num(env, e->proto_minor));
				PROP("maxWrite", mk_num(env, e->max_write));
				PROP("maxRead", mk_num(env, e->max_read));
				PROP("maxReadahead", mk_num(env, e->max_readahead));
				PROP("capable", mk_num(env, e->capable));
				PROP("want", mk_num(env, e->want));
				PROP("maxBackground", mk_num(env, e->max_background));
				PROP("congestionThreshold", mk_num(env, e->congestion_threshold));
				PROP("timeGran", mk_num(env, e->time_gran));
			}
#undef PROP
			argv[n++] = obj;
			if (op == EV_ENDED) {
				s->ended_js = 1;
				maybe_destroy(s);
			}
			napi_status st = invoke(env, s, cb, n, argv);
			if (st == napi_pending_exception) {
				napi_value exc;
				napi_get_and_clear_last_exception(env, &exc);
				napi_fatal_exception(env, exc);
			}
			if (op == EV_ENDED) {
				/* the session is over: the env cleanup hook has nothing to do */
				napi_remove_env_cleanup_hook(env, env_cleanup, s);
				release_js(env, s);
				free(e);
				sess_unref(s);
				return;
			}
		}
		free(e);
		return;
	}

	llreq *r = data;
	if (!env || !cb) {
		fail_native(r);
		return;
	}
	napi_value argv[12], h;
	int n = 0;
	if (op == OP_FORGET || op == OP_FORGET_MULTI) {
		h = mk_undef(env);
	} else if (napi_create_external(env, r, req_finalize, NULL, &h) != napi_ok) {
		fail_native(r);
		return;
	}
	argv[n++] = mk_num(env, op);
	argv[n++] = h;
	argv[n++] = mk_num(env, r->uid);
	argv[n++] = mk_num(env, r->gid);
	argv[n++] = mk_num(env, r->pid);
	argv[n++] = mk_num(env, r->umask);
	argv[n++] = mk_big(env, r->ino);
	switch (op) {
	case OP_LOOKUP: case OP_UNLINK: case OP_RMDIR: case OP_REMOVEXATTR:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		break;
	case OP_FORGET:
		argv[n++] = mk_num(env, (double)r->len);
		break;
	case OP_FORGET_MULTI:
		argv[n++] = take_buffer(env, r);
		break;
	case OP_GETATTR: case OP_RELEASEDIR:
		argv[n++] = mk_fh(env, r);
		break;
	case OP_SETATTR: {
		napi_value b;
		void *p;
		napi_create_buffer_copy(env, ATTR_SIZE, r->attr, &p, &b);
		argv[n++] = mk_num(env, r->to_set);
		argv[n++] = b;
		argv[n++] = mk_fh(env, r);
		break;
	}
	case OP_READLINK: case OP_STATFS:
		break;
	case OP_MKNOD:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		argv[n++] = mk_num(env, r->mode);
		argv[n++] = mk_num(env, (double)r->rdev);
		break;
	case OP_MKDIR:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		argv[n++] = mk_num(env, r->mode);
		break;
	case OP_SYMLINK:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		argv[n++] = mk_str(env, s, r->name2, r->name2len);
		break;
	case OP_RENAME:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		argv[n++] = mk_big(env, r->ino2);
		argv[n++] = mk_str(env, s, r->name2, r->name2len);
		argv[n++] = mk_num(env, r->flags);
		break;
	case OP_LINK:
		argv[n++] = mk_big(env, r->ino2);
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		break;
	case OP_OPEN: case OP_OPENDIR: case OP_ACCESS:
		argv[n++] = mk_num(env, r->flags);
		break;
	case OP_READ:
		argv[n++] = mk_num(env, (double)r->size);
		argv[n++] = mk_num(env, (double)(int64_t)r->off);
		argv[n++] = mk_fh(env, r);
		break;
	case OP_WRITE:
		argv[n++] = take_buffer(env, r);
		argv[n++] = mk_num(env, (double)(int64_t)r->off);
		argv[n++] = mk_fh(env, r);
		argv[n++] = mk_bool(env, r->writepage);
		break;
	case OP_FLUSH:
		argv[n++] = mk_fh(env, r);
		argv[n++] = mk_big(env, r->lock_owner);
		break;
	case OP_RELEASE:
		argv[n++] = mk_fh(env, r);
		argv[n++] = mk_num(env, r->flags);
		break;
	case OP_FSYNC: case OP_FSYNCDIR:
		argv[n++] = mk_bool(env, r->datasync);
		argv[n++] = mk_fh(env, r);
		break;
	case OP_READDIR: case OP_READDIRPLUS:
		argv[n++] = mk_num(env, (double)r->size);
		argv[n++] = mk_big(env, r->off);
		argv[n++] = mk_fh(env, r);
		break;
	case OP_CREATE:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		argv[n++] = mk_num(env, r->mode);
		argv[n++] = mk_num(env, r->flags);
		break;
	case OP_FALLOCATE:
		argv[n++] = mk_num(env, r->flags);
		argv[n++] = mk_num(env, (double)(int64_t)r->off);
		argv[n++] = mk_num(env, (double)(int64_t)r->len);
		argv[n++] = mk_fh(env, r);
		break;
	case OP_GETXATTR:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		argv[n++] = mk_num(env, (double)r->size);
		break;
	case OP_LISTXATTR:
		argv[n++] = mk_num(env, (double)r->size);
		break;
	case OP_SETXATTR:
		argv[n++] = mk_str(env, s, r->name, r->namelen);
		argv[n++] = take_buffer(env, r);
		argv[n++] = mk_num(env, r->flags);
		break;
	}
	/* names were copied into JS strings: release them early */
	free(r->name);
	r->name = NULL;
	free(r->name2);
	r->name2 = NULL;

	napi_status st = invoke(env, s, cb, n, argv);
	if (st == napi_pending_exception) {
		napi_value exc;
		napi_get_and_clear_last_exception(env, &exc);
		if (!r->done && op != OP_FORGET && op != OP_FORGET_MULTI) {
			r->done = 1;
			reply_locked_err(r, EIO);
			atomic_fetch_sub(&s->inflight, 1);
		}
		napi_fatal_exception(env, exc);
	}
	if (op == OP_FORGET || op == OP_FORGET_MULTI) freereq(r);
}

/* JS thread, inside the request loop: call the dispatch function now.
   0: could not (the caller fails the request or drops the event). */
static int deliver(sess *s, void *data) {
	napi_env env = s->env;
	napi_value cb;
	if (!s->cb_ref || napi_get_reference_value(env, s->cb_ref, &cb) != napi_ok || !cb) return 0;
	call_js(env, cb, s, data);
	return 1;
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
	(void)env;
	(void)hint;
	(void)data;
}

static void handle_finalize(napi_env env, void *data, void *hint) {
	(void)env;
	(void)hint;
	sess_unref(data);
}

static char *get_string(napi_env env, napi_value v) {
	size_t n;
	if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return NULL;
	char *p = malloc(n + 1);
	if (p) napi_get_value_string_utf8(env, v, p, n + 1, &n);
	return p;
}

static int get_prop_u32(napi_env env, napi_value obj, const char *name, uint32_t dflt) {
	napi_value v;
	napi_valuetype t;
	uint32_t out = dflt;
	if (napi_get_named_property(env, obj, name, &v) == napi_ok && napi_typeof(env, v, &t) == napi_ok) {
		if (t == napi_number) napi_get_value_uint32(env, v, &out);
		else if (t == napi_boolean) {
			bool b;
			napi_get_value_bool(env, v, &b);
			out = b;
		}
	}
	return (int)out;
}

/* create(mountpoint, args[], config, ops[], dispatch) -> handle */
static napi_value js_create(napi_env env, napi_callback_info info) {
	size_t argc = 5;
	napi_value a[5], handle, name;
	uint32_t len;
	bool isarr;
	CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
	if (argc < 5 || napi_is_array(env, a[1], &isarr) != napi_ok || !isarr) {
		napi_throw_type_error(env, NULL, "create(mountpoint, args[], config, ops[], dispatch)");
		return NULL;
	}
	sess *s = calloc(1, sizeof *s);
	if (!s) {
		napi_throw_error(env, NULL, "out of memory");
		return NULL;
	}
	s->guard_fd = -1;
	s->unmount_sock = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->env = env;
	s->mountpoint = get_string(env, a[0]);
	napi_get_array_length(env, a[1], &len);
	s->argv = calloc(len + 1, sizeof(char *));
	s->argc = (int)len;
	for (uint32_t i = 0; s->argv && i < len; i++) {
		napi_value v;
		napi_get_element(env, a[1], i, &v);
		s->argv[i] = get_string(env, v);
		if (!s->argv[i]) s->argc = (int)i;
	}
	s->max_write = (unsigned)get_prop_u32(env, a[2], "maxWrite", 0);
	s->writeback = get_prop_u32(env, a[2], "writebackCache", 0);
	s->atomic_trunc = get_prop_u32(env, a[2], "atomicOTrunc", 0);
	s->killpriv = get_prop_u32(env, a[2], "handleKillpriv", 0);
	s->async_read = get_prop_u32(env, a[2], "asyncRead", 1);
	s->rdplus_auto = get_prop_u32(env, a[2], "readdirplusAuto", 1);
	s->latin1 = get_prop_u32(env, a[2], "latin1", 0);
	napi_get_array_length(env, a[3], &len);
	for (uint32_t i = 0; i < len; i++) {
		napi_value v;
		uint32_t op;
		napi_get_element(env, a[3], i, &v);
		if (napi_get_value_uint32(env, v, &op) == napi_ok && op > 0 && op < OP_COUNT) {
			if (op < 32) s->opmask_lo |= 1u << op;
			else s->opmask_hi |= 1u << (op - 32);
		}
	}
	s->spin_ns = (uint64_t)get_prop_u32(env, a[2], "spinUs", 50) * 1000u;
	if (s->spin_ns > 10000000u) s->spin_ns = 10000000u;
	napi_value rname, resource;
	napi_create_string_utf8(env, "fuse_ll.request", NAPI_AUTO_LENGTH, &rname);
	napi_create_object(env, &resource);
	if (!s->mountpoint || !s->argv || napi_create_reference(env, a[4], 1, &s->cb_ref) != napi_ok ||
	    napi_async_init(env, resource, rname, &s->actx) != napi_ok) {
		release_js(env, s);
		sess_free(s);
		napi_throw_error(env, NULL, "fuse_ll: cannot set up the session");
		return NULL;
	}
	napi_create_string_utf8(env, "fuse_ll", NAPI_AUTO_LENGTH, &name);
	if (napi_create_threadsafe_function(env, a[4], NULL, name, 0, 1, NULL, tsfn_finalize, s, call_js,
					    &s->tsfn) != napi_ok) {
		release_js(env, s);
		sess_free(s);
		napi_throw_error(env, NULL, "fuse_ll: cannot create the threadsafe function");
		return NULL;
	}
	/* refs: the JS handle, the session thread, the env cleanup hook */
	atomic_store(&s->refs, 3);
	if (napi_create_external(env, s, handle_finalize, NULL, &handle) != napi_ok) {
		napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
		release_js(env, s);
		sess_free(s);
		napi_throw_error(env, NULL, "fuse_ll: cannot create the handle");
		return NULL;
	}
	napi_add_env_cleanup_hook(env, env_cleanup, s);
	pthread_mutex_lock(&sessions_lock);
	s->next = sessions;
	sessions = s;
	pthread_mutex_unlock(&sessions_lock);
	pthread_t t;
	if (spawn_blocked(&t, session_thread, s, 1) != 0) {
		/* report through the normal path */
		pthread_mutex_lock(&sessions_lock);
		for (sess **pp = &sessions; *pp; pp = &(*pp)->next)
			if (*pp == s) {
				*pp = s->next;
				break;
			}
		pthread_mutex_unlock(&sessions_lock);
		s->state = S_ENDED;
		s->finished = 1;
		post_ended(s, 0, "cannot start the session thread");
		napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
		sess_unref(s);
	}
	return handle;
}

static sess *get_sess(napi_env env, napi_callback_info info) {
	size_t argc = 1;
	napi_value a[1];
	void *p = NULL;
	if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 1 ||
	    napi_get_value_external(env, a[0], &p) != napi_ok || !p) {
		napi_throw_type_error(env, NULL, "expected a session handle");
		return NULL;
	}
	return p;
}

/* unmount(handle): detach the mount; the loop ends when the kernel lets go. */
static napi_value js_unmount(napi_env env, napi_callback_info info) {
	sess *s = get_sess(env, info);
	if (!s) return NULL;
	pthread_mutex_lock(&s->lock);
	int state = s->state;
	s->exit_requested = 1;
	pthread_mutex_unlock(&s->lock);
	if (state == S_RUNNING) start_unmounter(s);
	return mk_undef(env);
}

/* abort(handle): stop the loop now; pending requests fail, the mount is detached. */
static napi_value js_abort(napi_env env, napi_callback_info info) {
	sess *s = get_sess(env, info);
	if (!s) return NULL;
	pthread_mutex_lock(&s->lock);
	s->exit_requested = 1;
	pthread_mutex_unlock(&s->lock);
	atomic_store(&s->stop_flag, 1);
	/* inside a request the loop stops when the request returns; before the
	   loop started, start_loop or the session thread sees the flag */
	if (s->loop_started && !s->dispatching) stop_loop(s, 1, "aborted");
	return mk_undef(env);
}

/* invalInode(handle, ino, off, len) -> 0 or -errno: the kernel forgets the
   cached attributes of ino (off < 0), or them and the cached data in
   [off, off+len) (len 0: to the end). -ENOENT: it had nothing cached. */
static napi_value js_inval_inode(napi_env env, napi_callback_info info) {
	size_t argc = 4;
	napi_value a[4];
	void *p = NULL;
	uint64_t ino;
	bool lossless;
	double off = -1, len = 0;
	if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 4 ||
	    napi_get_value_external(env, a[0], &p) != napi_ok || !p ||
	    napi_get_value_bigint_uint64(env, a[1], &ino, &lossless) != napi_ok ||
	    napi_get_value_double(env, a[2], &off) != napi_ok || napi_get_value_double(env, a[3], &len) != napi_ok) {
		napi_throw_type_error(env, NULL, "invalInode(handle, ino: bigint, off, len)");
		return NULL;
	}
	sess *s = p;
	int rc = -ENOTCONN;
	pthread_mutex_lock(&s->lock);
	/* only while the request loop runs: the device is open and known good */
	if (s->loop_active && s->se && !s->loop_done)
		rc = fuse_lowlevel_notify_inval_inode(s->se, (fuse_ino_t)ino, off < 0 ? -1 : (off_t)off,
						      off < 0 ? 0 : (off_t)len);
	pthread_mutex_unlock(&s->lock);
	return mk_num(env, rc);
}

/* ---- replies (JS thread) ---- */
static llreq *take_req(napi_env env, napi_value h) {
	void *p = NULL;
	if (napi_get_value_external(env, h, &p) != napi_ok || !p) {
		napi_throw_type_error(env, NULL, "expected a request handle");
		return NULL;
	}
	llreq *r = p;
	if (r->done) {
		napi_throw_error(env, "EALREADY", "this FUSE request has already been answered");
		return NULL;
	}
	return r;
}

static napi_value finish(napi_env env, llreq *r, int rc) {
	r->done = 1;
	atomic_fetch_sub(&r->s->inflight, 1);
	maybe_destroy(r->s);
	return mk_num(env, rc);
}

static int get_bytes(napi_env env, napi_value v, void **data, size_t *len) {
	bool is;
	if (napi_is_buffer(env, v, &is) == napi_ok && is)
		return napi_get_buffer_info(env, v, data, len) == napi_ok;
	if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
		napi_typedarray_type t;
		size_t n, off;
		napi_value ab;
		if (napi_get_typedarray_info(env, v, &t, &n, data, &ab, &off) != napi_ok) return 0;
		*len = n; /* Uint8Array only (checked by the TS layer) */
		return 1;
	}
	return 0;
}

#define REPLY_ARGS(N)                                                           \
	size_t argc = N;                                                        \
	napi_value a[N];                                                        \
	if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < N) { \
		napi_throw_type_error(env, NULL, "missing arguments");          \
		return NULL;                                                    \
	}                                                                       \
	llreq *r = take_req(env, a[0]);                                         \
	if (!r) return NULL

#define BYTES(idx, ptr, len, what)                                              \
	void *ptr;                                                              \
	size_t len;                                                             \
	if (!get_bytes(env, a[idx], &ptr, &len)) {                              \
		napi_throw_type_error(env, NULL, what " must be a Buffer");     \
		return NULL;                                                    \
	}

static napi_value js_reply_err(napi_env env, napi_callback_info info) {
	REPLY_ARGS(2);
	int32_t err;
	if (napi_get_value_int32(env, a[1], &err) != napi_ok || err < 0 || err >= 4096) {
		napi_throw_range_error(env, NULL, "errno must be an integer in [0, 4096)");
		return NULL;
	}
	return finish(env, r, reply_locked_err(r, err));
}

static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
	REPLY_ARGS(2);
	BYTES(1, p, n, "entry");
	if (n < ENTRY_SIZE) {
		napi_throw_range_error(env, NULL, "short entry buffer");
		return NULL;
	}
	struct fuse_entry_param e;
	unpack_entry(p, &e);
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_entry(r->req, &e);
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

static void fill_fi(napi_env env, napi_value fhv, napi_value flagsv, struct fuse_file_info *fi) {
	double fh = 0;
	uint32_t fl = 0;
	memset(fi, 0, sizeof *fi);
	napi_get_value_double(env, fhv, &fh);
	napi_get_value_uint32(env, flagsv, &fl);
	fi->fh = fh > 0 ? (uint64_t)fh : 0;
	fi->direct_io = (fl & 1) != 0;
	fi->keep_cache = (fl & 2) != 0;
	fi->nonseekable = (fl & 4) != 0;
	fi->cache_readdir = (fl & 8) != 0;
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 11)
	fi->noflush = (fl & 16) != 0;
#endif
}

static napi_value js_reply_create(napi_env env, napi_callback_info info) {
	REPLY_ARGS(4);
	BYTES(1, p, n, "entry");
	if (n < ENTRY_SIZE) {
		napi_throw_range_error(env, NULL, "short entry buffer");
		return NULL;
	}
	struct fuse_entry_param e;
	struct fuse_file_info fi;
	unpack_entry(p, &e);
	fill_fi(env, a[2], a[3], &fi);
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_create(r->req, &e, &fi);
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

static napi_value js_reply_attr(napi_env env, napi_callback_info info) {
	REPLY_ARGS(3);
	BYTES(1, p, n, "attr");
	double timeout = 0;
	if (n < ATTR_SIZE) {
		napi_throw_range_error(env, NULL, "short attr buffer");
		return NULL;
	}
	napi_get_value_double(env, a[2], &timeout);
	struct stat st;
	unpack_attr(p, &st);
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_attr(r->req, &st, timeout);
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

static napi_value js_reply_open(napi_env env, napi_callback_info info) {
	REPLY_ARGS(3);
	struct fuse_file_info fi;
	fill_fi(env, a[1], a[2], &fi);
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_open(r->req, &fi);
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

static napi_value js_reply_write(napi_env env, napi_callback_info info) {
	REPLY_ARGS(2);
	double count = 0;
	napi_get_value_double(env, a[1], &count);
	if (count < 0) count = 0;
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_write(r->req, (size_t)count);
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

/* buf(handle, bytes): read data, readlink target, xattr value/list */
static napi_value js_reply_buf(napi_env env, napi_callback_info info) {
	REPLY_ARGS(2);
	BYTES(1, p, n, "data");
	int rc;
	pthread_mutex_lock(&r->s->lock);
	if (r->op == OP_READLINK) {
		char *z = malloc(n + 1);
		if (!z) {
			rc = fuse_reply_err(r->req, ENOMEM);
		} else {
			memcpy(z, p, n);
			z[n] = 0;
			rc = fuse_reply_readlink(r->req, z);
			free(z);
		}
	} else if ((r->op == OP_READ || r->op == OP_GETXATTR || r->op == OP_LISTXATTR) && n > r->size) {
		/* a bug in the filesystem: answer an error and say so (never throw
		   after answering, so the caller's bookkeeping stays simple) */
		int err = r->op == OP_READ ? EIO : ERANGE;
		fprintf(stderr, "fuse_ll: %zu-byte reply to a %zu-byte request (op %d); answered %s\n", n, r->size,
			r->op, strerror(err));
		fuse_reply_err(r->req, err);
		rc = -err;
	} else {
		rc = fuse_reply_buf(r->req, p, n);
	}
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

static napi_value js_reply_xattr_size(napi_env env, napi_callback_info info) {
	REPLY_ARGS(2);
	double count = 0;
	napi_get_value_double(env, a[1], &count);
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_xattr(r->req, count > 0 ? (size_t)count : 0);
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

/* statfs(handle, Float64Array[11]) */
static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
	REPLY_ARGS(2);
	napi_typedarray_type t;
	size_t n, off;
	void *p;
	napi_value ab;
	if (napi_get_typedarray_info(env, a[1], &t, &n, &p, &ab, &off) != napi_ok || t != napi_float64_array || n < 11) {
		napi_throw_type_error(env, NULL, "statfs values must be a Float64Array(11)");
		return NULL;
	}
	const double *v = p;
	struct statvfs sv;
	memset(&sv, 0, sizeof sv);
	sv.f_bsize = (unsigned long)v[0];
	sv.f_frsize = (unsigned long)v[1];
	sv.f_blocks = (fsblkcnt_t)v[2];
	sv.f_bfree = (fsblkcnt_t)v[3];
	sv.f_bavail = (fsblkcnt_t)v[4];
	sv.f_files = (fsfilcnt_t)v[5];
	sv.f_ffree = (fsfilcnt_t)v[6];
	sv.f_favail = (fsfilcnt_t)v[7];
	sv.f_fsid = (unsigned long)v[8];
	sv.f_namemax = (unsigned long)v[9];
	sv.f_flag = (unsigned long)v[10];
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_statfs(r->req, &sv);
	pthread_mutex_unlock(&r->s->lock);
	return finish(env, r, rc);
}

/* dirents(handle, packed, count) -> number of entries sent (see layout above) */
static napi_value js_reply_dirents(napi_env env, napi_callback_info info) {
	REPLY_ARGS(3);
	BYTES(1, p, n, "entries");
	uint32_t count = 0;
	napi_get_value_uint32(env, a[2], &count);
	if (r->op != OP_READDIR && r->op != OP_READDIRPLUS) {
		napi_throw_error(env, NULL, "dirents() answers readdir/readdirplus only");
		return NULL;
	}
	int plus = r->op == OP_READDIRPLUS;
	char *out = malloc(r->size ? r->size : 1);
	char name[4096];
	size_t used = 0, pos = 0;
	uint32_t sent = 0;
	const unsigned char *b = p;
	if (!out) {
		napi_throw_error(env, NULL, "out of memory");
		return NULL;
	}
	for (uint32_t i = 0; i < count; i++) {
		size_t hdr = plus ? DIRENTPLUS_HDR : DIRENT_HDR;
		if (pos + hdr > n) break;
		uint32_t nl = ld32(b + pos + (plus ? 8 : 20));
		if (pos + hdr + nl > n || nl >= sizeof name) break;
		memcpy(name, b + pos + hdr, nl);
		name[nl] = 0;
		size_t need;
		if (plus) {
			struct fuse_entry_param e;
			unpack_entry(b + pos + 16, &e);
			need = fuse_add_direntry_plus(r->req, out + used, r->size - used, name, &e,
						      (off_t)ld64(b + pos));
		} else {
			struct stat st;
			memset(&st, 0, sizeof st);
			st.st_ino = ld64(b + pos);
			st.st_mode = ld32(b + pos + 16);
			need = fuse_add_direntry(r->req, out + used, r->size - used, name, &st,
						 (off_t)ld64(b + pos + 8));
		}
		if (need > r->size - used) break;
		used += need;
		sent++;
		pos += (hdr + nl + 7) & ~(size_t)7;
	}
	pthread_mutex_lock(&r->s->lock);
	int rc = fuse_reply_buf(r->req, out, used);
	pthread_mutex_unlock(&r->s->lock);
	free(out);
	finish(env, r, rc);
	return mk_num(env, rc == 0 ? (double)sent : (double)rc);
}

/* groups(handle) -> supplementary groups of the caller (before answering) */
static napi_value js_groups(napi_env env, napi_callback_info info) {
	REPLY_ARGS(1);
	gid_t small[64];
	gid_t *list = small;
	int n = fuse_req_getgroups(r->req, 64, small);
	if (n > 64) {
		list = malloc(sizeof(gid_t) * (size_t)n);
		if (!list) n = -ENOMEM;
		else n = fuse_req_getgroups(r->req, n, list);
	}
	napi_value arr;
	napi_create_array(env, &arr);
	for (int i = 0; i < n; i++) napi_set_element(env, arr, (uint32_t)i, mk_num(env, list[i]));
	if (list != small) free(list);
	if (n < 0) {
		napi_throw_error(env, NULL, "fuse_req_getgroups failed");
		return NULL;
	}
	return arr;
}

static napi_value init(napi_env env, napi_value exports) {
	static int once;
	if (!once) {
		once = 1;
		fuse_set_log_func(log_func);
		atexit(at_exit);
	}
	struct { const char *name; napi_callback fn; } fns[] = {
		{"create", js_create}, {"unmount", js_unmount}, {"abort", js_abort},
		{"invalInode", js_inval_inode},
		{"replyErr", js_reply_err}, {"replyEntry", js_reply_entry},
		{"replyCreate", js_reply_create}, {"replyAttr", js_reply_attr},
		{"replyOpen", js_reply_open}, {"replyWrite", js_reply_write},
		{"replyBuf", js_reply_buf}, {"replyXattrSize", js_reply_xattr_size},
		{"replyStatfs", js_reply_statfs}, {"replyDirents", js_reply_dirents},
		{"groups", js_groups},
	};
	for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
		napi_value f;
		napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
		napi_set_named_property(env, exports, fns[i].name, f);
	}
	napi_value ops, caps, v;
	napi_create_object(env, &ops);
	for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
		napi_set_named_property(env, ops, op_names[i].name, mk_num(env, op_names[i].op));
	napi_set_named_property(env, exports, "ops", ops);
	napi_create_object(env, &caps);
#define CAP(n) napi_set_named_property(env, caps, #n, mk_num(env, FUSE_CAP_##n))
	CAP(ASYNC_READ); CAP(POSIX_LOCKS); CAP(ATOMIC_O_TRUNC); CAP(EXPORT_SUPPORT);
	CAP(DONT_MASK); CAP(SPLICE_WRITE); CAP(SPLICE_MOVE); CAP(SPLICE_READ);
	CAP(FLOCK_LOCKS); CAP(IOCTL_DIR); CAP(AUTO_INVAL_DATA); CAP(READDIRPLUS);
	CAP(READDIRPLUS_AUTO); CAP(ASYNC_DIO); CAP(WRITEBACK_CACHE); CAP(NO_OPEN_SUPPORT);
	CAP(PARALLEL_DIROPS); CAP(POSIX_ACL); CAP(HANDLE_KILLPRIV); CAP(CACHE_SYMLINKS);
	CAP(NO_OPENDIR_SUPPORT); CAP(EXPLICIT_INVAL_DATA);
#undef CAP
	napi_set_named_property(env, exports, "caps", caps);
	napi_set_named_property(env, exports, "abi", mk_num(env, FUSE_LL_ABI));
	napi_set_named_property(env, exports, "attrSize", mk_num(env, ATTR_SIZE));
	napi_set_named_property(env, exports, "entrySize", mk_num(env, ENTRY_SIZE));
	/* sizes of an empty-named dirent / direntplus as the kernel sees them */
	struct stat st;
	struct fuse_entry_param e;
	memset(&st, 0, sizeof st);
	memset(&e, 0, sizeof e);
	napi_set_named_property(env, exports, "direntBase", mk_num(env, (double)fuse_add_direntry(NULL, NULL, 0, "", &st, 0)));
	napi_set_named_property(env, exports, "direntPlusBase", mk_num(env, (double)fuse_add_direntry_plus(NULL, NULL, 0, "", &e, 0)));
	napi_create_string_utf8(env, fuse_pkgversion(), NAPI_AUTO_LENGTH, &v);
	napi_set_named_property(env, exports, "libfuseVersion", v);
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

/*
 * hammer2fs native shim: the two system calls Node.js does not expose.
 *   flock(fd, exclusive)      -> 0 or errno   (LOCK_EX|LOCK_NB or LOCK_SH|LOCK_NB)
 *   blockDeviceSize(fd)       -> bytes or -errno   (BLKGETSIZE64)
 */
#include <errno.h>
#include <stdint.h>
#include <sys/file.h>
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

static napi_value init(napi_env env, napi_value exports) {
	napi_value f;
	napi_create_function(env, "flock", NAPI_AUTO_LENGTH, js_flock, NULL, &f);
	napi_set_named_property(env, exports, "flock", f);
	napi_create_function(env, "blockDeviceSize", NAPI_AUTO_LENGTH, js_blksize, NULL, &f);
	napi_set_named_property(env, exports, "blockDeviceSize", f);
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

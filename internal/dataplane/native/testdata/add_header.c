/*
 * An example native plugin: adds the header named in its config
 * ("name=value") to every request and "x-native-instance: N" (N: which
 * instance served it, counting from 1) to every response.
 *
 * For the watchdog tests, the request header x-native-mode changes what it
 * does: "deny" answers 403, "error" fails the call, "slow" sleeps for the
 * number of milliseconds in x-native-sleep-ms (default 50) before going on.
 *
 * Build: gcc -shared -fPIC -O2 -o add_header.so add_header.c
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../omnirelay_native.h"

struct instance {
	const omnirelay_host_api *host;
	char name[64];
	char value[128];
	size_t name_len, value_len;
	int id;
};

static int instances; /* instance ids, counted atomically: instances init concurrently */

uint32_t omnirelay_native_abi(void) { return OMNIRELAY_NATIVE_ABI_VERSION; }

void *omnirelay_init(const omnirelay_host_api *host, const char *config, size_t config_len) {
	const char *eq = memchr(config, '=', config_len);
	if (host == NULL || host->abi_version != OMNIRELAY_NATIVE_ABI_VERSION || eq == NULL) {
		return NULL;
	}
	size_t name_len = (size_t)(eq - config), value_len = config_len - name_len - 1;
	if (name_len == 0 || name_len >= 64 || value_len >= 128) {
		return NULL;
	}
	struct instance *in = calloc(1, sizeof *in);
	if (in == NULL) {
		return NULL;
	}
	in->host = host;
	memcpy(in->name, config, name_len);
	memcpy(in->value, eq + 1, value_len);
	in->name_len = name_len;
	in->value_len = value_len;
	in->id = __atomic_add_fetch(&instances, 1, __ATOMIC_SEQ_CST);
	return in;
}

static int header_is(struct instance *in, uint64_t stream, const char *name, const char *want) {
	char buf[32];
	int64_t n = in->host->get_header(stream, name, strlen(name), buf, sizeof buf);
	return n >= 0 && (size_t)n == strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

int32_t omnirelay_on_request_headers(void *instance, uint64_t stream) {
	struct instance *in = instance;
	if (header_is(in, stream, "x-native-mode", "deny")) {
		static const char body[] = "denied by native plugin";
		in->host->send_local_response(stream, 403, body, sizeof body - 1);
		return OMNIRELAY_STOP;
	}
	if (header_is(in, stream, "x-native-mode", "error")) {
		return OMNIRELAY_ERROR;
	}
	if (header_is(in, stream, "x-native-mode", "slow")) {
		char buf[16] = {0};
		int64_t n = in->host->get_header(stream, "x-native-sleep-ms", 17, buf, sizeof buf - 1);
		long ms = n > 0 ? strtol(buf, NULL, 10) : 50;
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		/* The Go runtime signals its threads (preemption): resume the
		 * sleep when a signal cuts it short. */
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
		}
	}
	in->host->set_header(stream, in->name, in->name_len, in->value, in->value_len);
	return OMNIRELAY_CONTINUE;
}

int32_t omnirelay_on_response_headers(void *instance, uint64_t stream) {
	struct instance *in = instance;
	char id[16];
	int n = snprintf(id, sizeof id, "%d", in->id);
	in->host->set_header(stream, "x-native-instance", 17, id, (size_t)n);
	return OMNIRELAY_CONTINUE;
}

void omnirelay_destroy(void *instance) { free(instance); }

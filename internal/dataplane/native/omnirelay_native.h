/*
 * omnirelay_native.h: the ABI of OmniRelay native extension plugins.
 *
 * A plugin is a shared object (gcc -shared -fPIC) that exports the five
 * functions declared at the end of this file. The proxy loads it with
 * dlopen when an extension package of kind "native" and ABI
 * "omnirelay-native/1" is configured, after checking the package signature.
 *
 * Threading and lifetime:
 *  - omnirelay_init makes an instance from the plugin config. The proxy keeps
 *    a pool of instances: an instance serves one stream at a time, from
 *    on_request_headers to the end of the stream, but different instances run
 *    concurrently on different threads. Share nothing mutable between
 *    instances without your own locking.
 *  - Calls are timed. A call that returns after its deadline is a timeout:
 *    its result is discarded (the extension's policy applies) and its
 *    instance is quarantined: destroyed and never called again. Native code
 *    cannot be interrupted, so a call that never returns blocks its stream.
 *  - The Go runtime signals its threads (SIGURG, for preemption): a blocking
 *    call in a plugin (nanosleep, read, ...) may return EINTR and must be
 *    retried.
 *  - Host callbacks may be called only during a call, with the stream handle
 *    that call was given. Pointers passed to the host are copied before the
 *    callback returns; pointers passed to the plugin (names, values, config)
 *    are valid only during the call.
 */
#ifndef OMNIRELAY_NATIVE_H
#define OMNIRELAY_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#define OMNIRELAY_NATIVE_ABI_VERSION 1

/* Results of on_request_headers / on_response_headers. */
#define OMNIRELAY_CONTINUE 0 /* go on with the request */
#define OMNIRELAY_STOP 1     /* the plugin sent a local response */
#define OMNIRELAY_ERROR (-1) /* the call failed: the policy applies */

/* The host's side, handed to omnirelay_init and valid for the instance's
 * life. Header names are lower-case; the headers are the request's during
 * on_request_headers and the response's during on_response_headers. */
typedef struct omnirelay_host_api {
	uint32_t abi_version;
	uint32_t reserved;
	/* Copies the first value of header name into buf (up to cap bytes) and
	 * returns its full length, or -1 if the header is absent. */
	int64_t (*get_header)(uint64_t stream, const char *name, size_t name_len, char *buf, size_t cap);
	/* Replaces every value of name with value. */
	void (*set_header)(uint64_t stream, const char *name, size_t name_len, const char *value, size_t value_len);
	/* Removes every value of name. */
	void (*remove_header)(uint64_t stream, const char *name, size_t name_len);
	/* Answers the request locally; return OMNIRELAY_STOP afterwards. */
	void (*send_local_response)(uint64_t stream, uint32_t status, const char *body, size_t body_len);
} omnirelay_host_api;

/* Exported by the plugin. */

/* Returns OMNIRELAY_NATIVE_ABI_VERSION (the plugin's build of this header). */
uint32_t omnirelay_native_abi(void);
/* Makes an instance; NULL refuses the config (the load fails). */
void *omnirelay_init(const omnirelay_host_api *host, const char *config, size_t config_len);
int32_t omnirelay_on_request_headers(void *instance, uint64_t stream);
int32_t omnirelay_on_response_headers(void *instance, uint64_t stream);
void omnirelay_destroy(void *instance);

#endif

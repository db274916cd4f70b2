//go:build wasip1

package proxywasm

import (
	"strings"
	"unsafe"
)

// Map, buffer and stream types of the ABI.
const (
	mapRequestHeaders       = 0
	mapRequestTrailers      = 1
	mapResponseHeaders      = 2
	mapResponseTrailers     = 3
	mapHTTPCallRespHeaders  = 6
	mapHTTPCallRespTrailers = 7

	bufRequestBody      = 0
	bufResponseBody     = 1
	bufHTTPCallRespBody = 4
	bufVMConfig         = 6
	bufPluginConfig     = 7

	streamRequest  = 0
	streamResponse = 1
)

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func sptr(s string) unsafe.Pointer {
	if s == "" {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

// Log levels.
const (
	LogLevelTrace    = 0
	LogLevelDebug    = 1
	LogLevelInfo     = 2
	LogLevelWarn     = 3
	LogLevelError    = 4
	LogLevelCritical = 5
)

// Log writes msg to the proxy's log at level.
func Log(level uint32, msg string) { proxyLog(level, sptr(msg), uint32(len(msg))) }

// LogInfo, LogWarn, LogError and LogDebug log at their level.
func LogInfo(msg string)  { Log(LogLevelInfo, msg) }
func LogWarn(msg string)  { Log(LogLevelWarn, msg) }
func LogError(msg string) { Log(LogLevelError, msg) }
func LogDebug(msg string) { Log(LogLevelDebug, msg) }

// GetCurrentTimeNanoseconds is the host's wall clock.
func GetCurrentTimeNanoseconds() int64 {
	var t int64
	proxyGetCurrentTimeNanoseconds(unsafe.Pointer(&t))
	return t
}

// SetTickPeriodMilliSeconds asks for OnTick every period ms (0 stops).
func SetTickPeriodMilliSeconds(period uint32) error {
	return asErr(proxySetTickPeriodMilliseconds(period))
}

func getBuffer(typ uint32, start, max int) ([]byte, error) {
	var p, n uint32
	if st := proxyGetBufferBytes(typ, uint32(start), uint32(max), unsafe.Pointer(&p), unsafe.Pointer(&n)); st != 0 {
		allocs = allocs[:0]
		return nil, Status(st)
	}
	return takeAlloc(p, n), nil
}

// GetPluginConfiguration returns the plugin's configuration bytes.
func GetPluginConfiguration() ([]byte, error) { return getBuffer(bufPluginConfig, 0, 1<<30) }

// GetVMConfiguration returns the VM configuration bytes.
func GetVMConfiguration() ([]byte, error) { return getBuffer(bufVMConfig, 0, 1<<30) }

// GetHTTPRequestBody returns up to max bytes of the request body from start.
func GetHTTPRequestBody(start, max int) ([]byte, error) { return getBuffer(bufRequestBody, start, max) }

// GetHTTPResponseBody returns up to max bytes of the response body from start.
func GetHTTPResponseBody(start, max int) ([]byte, error) {
	return getBuffer(bufResponseBody, start, max)
}

// GetHTTPCallResponseBody returns the body of the call-out being delivered.
func GetHTTPCallResponseBody(start, max int) ([]byte, error) {
	return getBuffer(bufHTTPCallRespBody, start, max)
}

// ReplaceHTTPRequestBody replaces the whole request body.
func ReplaceHTTPRequestBody(b []byte) error {
	return asErr(proxySetBufferBytes(bufRequestBody, 0, 1<<31, ptr(b), uint32(len(b))))
}

// ReplaceHTTPResponseBody replaces the whole response body.
func ReplaceHTTPResponseBody(b []byte) error {
	return asErr(proxySetBufferBytes(bufResponseBody, 0, 1<<31, ptr(b), uint32(len(b))))
}

func getHeader(typ uint32, name string) (string, error) {
	var p, n uint32
	copiedOut = true // string() below copies the value
	st := proxyGetHeaderMapValue(typ, sptr(name), uint32(len(name)), unsafe.Pointer(&p), unsafe.Pointer(&n))
	copiedOut = false
	if st != 0 {
		allocs = allocs[:0]
		return "", Status(st)
	}
	return string(takeAlloc(p, n)), nil
}

func getHeaders(typ uint32) ([][2]string, error) {
	var p, n uint32
	copiedOut = true // decodeMap copies the fields
	st := proxyGetHeaderMapPairs(typ, unsafe.Pointer(&p), unsafe.Pointer(&n))
	copiedOut = false
	if st != 0 {
		allocs = allocs[:0]
		return nil, Status(st)
	}
	return decodeMap(takeAlloc(p, n)), nil
}

func setHeaders(typ uint32, hs [][2]string) error {
	b := encodeMap(hs)
	return asErr(proxySetHeaderMapPairs(typ, ptr(b), uint32(len(b))))
}

// GetHTTPRequestHeader returns a request header (pseudo-headers such as
// ":path" included); StatusNotFound when absent.
func GetHTTPRequestHeader(name string) (string, error) { return getHeader(mapRequestHeaders, name) }

// GetHTTPRequestHeaders returns every request header, pseudo-headers first.
func GetHTTPRequestHeaders() ([][2]string, error) { return getHeaders(mapRequestHeaders) }

// ReplaceHTTPRequestHeaders replaces the request headers.
func ReplaceHTTPRequestHeaders(hs [][2]string) error { return setHeaders(mapRequestHeaders, hs) }

// AddHTTPRequestHeader appends a request header.
func AddHTTPRequestHeader(name, value string) error {
	return asErr(proxyAddHeaderMapValue(mapRequestHeaders, sptr(name), uint32(len(name)), sptr(value), uint32(len(value))))
}

// ReplaceHTTPRequestHeader sets a request header, replacing its values.
func ReplaceHTTPRequestHeader(name, value string) error {
	return asErr(proxyReplaceHeaderMapValue(mapRequestHeaders, sptr(name), uint32(len(name)), sptr(value), uint32(len(value))))
}

// RemoveHTTPRequestHeader removes a request header.
func RemoveHTTPRequestHeader(name string) error {
	return asErr(proxyRemoveHeaderMapValue(mapRequestHeaders, sptr(name), uint32(len(name))))
}

// GetHTTPRequestTrailers returns the request trailers.
func GetHTTPRequestTrailers() ([][2]string, error) { return getHeaders(mapRequestTrailers) }

// Request trailer accessors, valid in OnHTTPRequestTrailers.
func GetHTTPRequestTrailer(name string) (string, error) { return getHeader(mapRequestTrailers, name) }
func ReplaceHTTPRequestTrailers(hs [][2]string) error   { return setHeaders(mapRequestTrailers, hs) }
func AddHTTPRequestTrailer(name, value string) error {
	return addHeader(mapRequestTrailers, name, value)
}
func ReplaceHTTPRequestTrailer(name, value string) error {
	return replaceHeader(mapRequestTrailers, name, value)
}
func RemoveHTTPRequestTrailer(name string) error { return removeHeader(mapRequestTrailers, name) }

// GetHTTPResponseHeader returns a response header (":status" included).
func GetHTTPResponseHeader(name string) (string, error) { return getHeader(mapResponseHeaders, name) }

// GetHTTPResponseHeaders returns every response header.
func GetHTTPResponseHeaders() ([][2]string, error) { return getHeaders(mapResponseHeaders) }

// ReplaceHTTPResponseHeaders replaces the response headers.
func ReplaceHTTPResponseHeaders(hs [][2]string) error { return setHeaders(mapResponseHeaders, hs) }

// AddHTTPResponseHeader appends a response header.
func AddHTTPResponseHeader(name, value string) error {
	return asErr(proxyAddHeaderMapValue(mapResponseHeaders, sptr(name), uint32(len(name)), sptr(value), uint32(len(value))))
}

// ReplaceHTTPResponseHeader sets a response header, replacing its values.
func ReplaceHTTPResponseHeader(name, value string) error {
	return asErr(proxyReplaceHeaderMapValue(mapResponseHeaders, sptr(name), uint32(len(name)), sptr(value), uint32(len(value))))
}

// RemoveHTTPResponseHeader removes a response header.
func RemoveHTTPResponseHeader(name string) error {
	return asErr(proxyRemoveHeaderMapValue(mapResponseHeaders, sptr(name), uint32(len(name))))
}

// GetHTTPResponseTrailers returns the response trailers.
func GetHTTPResponseTrailers() ([][2]string, error) { return getHeaders(mapResponseTrailers) }

// Response trailer accessors, valid in OnHTTPResponseTrailers (a gRPC
// response's grpc-status and grpc-message are there).
func GetHTTPResponseTrailer(name string) (string, error) { return getHeader(mapResponseTrailers, name) }
func ReplaceHTTPResponseTrailers(hs [][2]string) error   { return setHeaders(mapResponseTrailers, hs) }
func AddHTTPResponseTrailer(name, value string) error {
	return addHeader(mapResponseTrailers, name, value)
}
func ReplaceHTTPResponseTrailer(name, value string) error {
	return replaceHeader(mapResponseTrailers, name, value)
}
func RemoveHTTPResponseTrailer(name string) error { return removeHeader(mapResponseTrailers, name) }

func addHeader(typ uint32, name, value string) error {
	return asErr(proxyAddHeaderMapValue(typ, sptr(name), uint32(len(name)), sptr(value), uint32(len(value))))
}

func replaceHeader(typ uint32, name, value string) error {
	return asErr(proxyReplaceHeaderMapValue(typ, sptr(name), uint32(len(name)), sptr(value), uint32(len(value))))
}

func removeHeader(typ uint32, name string) error {
	return asErr(proxyRemoveHeaderMapValue(typ, sptr(name), uint32(len(name))))
}

// GetHTTPCallResponseHeaders returns the headers of the call-out being
// delivered (":status" included).
func GetHTTPCallResponseHeaders() ([][2]string, error) { return getHeaders(mapHTTPCallRespHeaders) }

// SendHTTPResponse answers the stream locally; the callback that called it
// should return ActionPause (the host stops the stream either way).
// grpcStatus -1 means not gRPC.
func SendHTTPResponse(status uint32, headers [][2]string, body []byte, grpcStatus int32) error {
	h := encodeMap(headers)
	return asErr(proxySendLocalResponse(status, nil, 0, ptr(body), uint32(len(body)), ptr(h), uint32(len(h)), grpcStatus))
}

// ResumeHTTPRequest resumes a request paused with ActionPause.
func ResumeHTTPRequest() error { return asErr(proxyContinueStream(streamRequest)) }

// ResumeHTTPResponse resumes a response paused with ActionPause.
func ResumeHTTPResponse() error { return asErr(proxyContinueStream(streamResponse)) }

func propertyPath(path []string) []byte {
	return []byte(strings.Join(path, "\x00"))
}

// GetProperty reads a host property, e.g. []string{"request", "path"} or
// []string{"connection", "uri_san_peer_certificate"}.
func GetProperty(path []string) ([]byte, error) {
	pp := propertyPath(path)
	var p, n uint32
	if st := proxyGetProperty(ptr(pp), uint32(len(pp)), unsafe.Pointer(&p), unsafe.Pointer(&n)); st != 0 {
		allocs = allocs[:0]
		return nil, Status(st)
	}
	return takeAlloc(p, n), nil
}

// SetProperty stores a stream property that later calls can read.
func SetProperty(path []string, value []byte) error {
	pp := propertyPath(path)
	return asErr(proxySetProperty(ptr(pp), uint32(len(pp)), ptr(value), uint32(len(value))))
}

// GetSharedData reads a value shared by every instance of the plugin, with
// its CAS token for SetSharedData.
func GetSharedData(key string) ([]byte, uint32, error) {
	var p, n, cas uint32
	if st := proxyGetSharedData(sptr(key), uint32(len(key)), unsafe.Pointer(&p), unsafe.Pointer(&n), unsafe.Pointer(&cas)); st != 0 {
		allocs = allocs[:0]
		return nil, 0, Status(st)
	}
	return takeAlloc(p, n), cas, nil
}

// SetSharedData writes a shared value; cas 0 writes unconditionally,
// otherwise StatusCasMismatch reports a concurrent change.
func SetSharedData(key string, value []byte, cas uint32) error {
	return asErr(proxySetSharedData(sptr(key), uint32(len(key)), ptr(value), uint32(len(value)), cas))
}

// RegisterSharedQueue creates (or finds) a queue; OnQueueReady then fires
// on a root context when it has items.
func RegisterSharedQueue(name string) (uint32, error) {
	var id uint32
	st := proxyRegisterSharedQueue(sptr(name), uint32(len(name)), unsafe.Pointer(&id))
	return id, asErr(st)
}

// ResolveSharedQueue finds a queue registered by the plugin.
func ResolveSharedQueue(name string) (uint32, error) {
	var id uint32
	st := proxyResolveSharedQueue(nil, 0, sptr(name), uint32(len(name)), unsafe.Pointer(&id))
	return id, asErr(st)
}

// EnqueueSharedQueue appends data to a queue.
func EnqueueSharedQueue(id uint32, data []byte) error {
	return asErr(proxyEnqueueSharedQueue(id, ptr(data), uint32(len(data))))
}

// DequeueSharedQueue pops the oldest item; StatusEmpty when there is none.
func DequeueSharedQueue(id uint32) ([]byte, error) {
	var p, n uint32
	if st := proxyDequeueSharedQueue(id, unsafe.Pointer(&p), unsafe.Pointer(&n)); st != 0 {
		allocs = allocs[:0]
		return nil, Status(st)
	}
	return takeAlloc(p, n), nil
}

// Counter, Gauge and Histogram are metrics exported on the proxy's /metrics
// (omnirelay_wasm_counter{plugin,name}, ...).
type (
	Counter   uint32
	Gauge     uint32
	Histogram uint32
)

func defineMetric(typ uint32, name string) uint32 {
	var id uint32
	proxyDefineMetric(typ, sptr(name), uint32(len(name)), unsafe.Pointer(&id))
	return id
}

// DefineCounterMetric, DefineGaugeMetric and DefineHistogramMetric define
// (or find) a metric by name.
func DefineCounterMetric(name string) Counter     { return Counter(defineMetric(0, name)) }
func DefineGaugeMetric(name string) Gauge         { return Gauge(defineMetric(1, name)) }
func DefineHistogramMetric(name string) Histogram { return Histogram(defineMetric(2, name)) }

// Increment adds n to the counter.
func (c Counter) Increment(n uint64) { proxyIncrementMetric(uint32(c), int64(n)) }

// Value reads the counter.
func (c Counter) Value() uint64 {
	var v uint64
	proxyGetMetric(uint32(c), unsafe.Pointer(&v))
	return v
}

// Set sets the gauge; Add changes it by delta.
func (g Gauge) Set(v int64)     { proxyRecordMetric(uint32(g), uint64(v)) }
func (g Gauge) Add(delta int64) { proxyIncrementMetric(uint32(g), delta) }

// Record adds an observation to the histogram.
func (h Histogram) Record(v uint64) { proxyRecordMetric(uint32(h), v) }

// DispatchHTTPCall calls out to an upstream (an OmniRelay cluster). Return
// ActionPause from the current callback; callback then runs with the
// response sizes, and reads it with GetHTTPCallResponseHeaders/Body. The
// callback runs in the calling stream's context.
func DispatchHTTPCall(upstream string, headers [][2]string, body []byte, trailers [][2]string, timeoutMs uint32,
	callback func(numHeaders, bodySize, numTrailers int)) (uint32, error) {
	h, t := encodeMap(headers), encodeMap(trailers)
	var token uint32
	st := proxyHTTPCall(sptr(upstream), uint32(len(upstream)), ptr(h), uint32(len(h)), ptr(body), uint32(len(body)),
		ptr(t), uint32(len(t)), timeoutMs, unsafe.Pointer(&token))
	if st != 0 {
		return 0, Status(st)
	}
	callbacks = append(callbacks, callbackEntry{token, currentID, callback})
	return token, nil
}

// SetEffectiveContext makes id the context later host calls act on: a root
// context resuming a stream it paused (ResumeHTTPRequest after
// SetEffectiveContext(streamID)), say.
func SetEffectiveContext(id uint32) error {
	if st := proxySetEffectiveContext(id); st != 0 {
		return Status(st)
	}
	currentID = id
	return nil
}

// CallForeignFunction calls a function the host provides beyond the ABI
// (OmniRelay: "compress" and "uncompress", zlib as in Envoy, and
// "declare_property") and returns its result.
func CallForeignFunction(name string, arg []byte) ([]byte, error) {
	var p, n uint32
	if st := proxyCallForeignFunction(sptr(name), uint32(len(name)), ptr(arg), uint32(len(arg)), unsafe.Pointer(&p), unsafe.Pointer(&n)); st != 0 {
		allocs = allocs[:0]
		return nil, Status(st)
	}
	return takeAlloc(p, n), nil
}

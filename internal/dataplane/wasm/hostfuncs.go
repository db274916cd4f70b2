package wasm

import (
	"context"
	"log/slog"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Proxy-Wasm status codes returned by host functions.
const (
	statusOK                  = 0
	statusNotFound            = 1
	statusBadArgument         = 2
	statusSerializationFailed = 3
	statusInvalidMemoryAccess = 6
	statusEmpty               = 7
	statusCasMismatch         = 8
	statusInternalFailure     = 10
	statusUnimplemented       = 12
)

// hostFunc is one env.proxy_* import: its i32/i64 parameter layout and its
// implementation, which returns a Proxy-Wasm status.
type hostFunc struct {
	params []api.ValueType
	fn     func(ctx context.Context, in *instance, a []uint64) uint32
}

func i32s(n int) []api.ValueType {
	t := make([]api.ValueType, n)
	for i := range t {
		t[i] = api.ValueTypeI32
	}
	return t
}

func unimplemented(n int) hostFunc {
	return hostFunc{params: i32s(n), fn: func(context.Context, *instance, []uint64) uint32 { return statusUnimplemented }}
}

// hostFuncs is the host's import table, read-only after init. The list is
// documented in docs/wasm.md; a module importing anything else is refused
// at load.
var hostFuncs = map[string]hostFunc{
	"proxy_log":                          {i32s(3), hostLog},
	"proxy_get_log_level":                {i32s(1), hostGetLogLevel},
	"proxy_get_current_time_nanoseconds": {i32s(1), hostGetTime},
	"proxy_set_tick_period_milliseconds": {i32s(1), hostSetTickPeriod},
	"proxy_get_buffer_bytes":             {i32s(5), hostGetBufferBytes},
	"proxy_get_buffer_status":            {i32s(3), hostGetBufferStatus},
	"proxy_set_buffer_bytes":             {i32s(5), hostSetBufferBytes},
	"proxy_get_header_map_pairs":         {i32s(3), hostGetHeaderMapPairs},
	"proxy_set_header_map_pairs":         {i32s(3), hostSetHeaderMapPairs},
	"proxy_get_header_map_size":          {i32s(2), hostGetHeaderMapSize},
	"proxy_get_header_map_value":         {i32s(5), hostGetHeaderMapValue},
	"proxy_add_header_map_value":         {i32s(5), hostAddHeaderMapValue},
	"proxy_replace_header_map_value":     {i32s(5), hostReplaceHeaderMapValue},
	"proxy_remove_header_map_value":      {i32s(3), hostRemoveHeaderMapValue},
	"proxy_get_property":                 {i32s(4), hostGetProperty},
	"proxy_set_property":                 {i32s(4), hostSetProperty},
	"proxy_send_local_response":          {i32s(8), hostSendLocalResponse},
	"proxy_continue_stream":              {i32s(1), hostContinueStream},
	"proxy_close_stream":                 {i32s(1), hostCloseStream},
	"proxy_continue_request":             {i32s(0), hostContinueStream},
	"proxy_continue_response":            {i32s(0), hostContinueStream},
	"proxy_clear_route_cache":            {i32s(0), hostClearRouteCache},
	"proxy_get_shared_data":              {i32s(5), hostGetSharedData},
	"proxy_set_shared_data":              {i32s(5), hostSetSharedData},
	"proxy_register_shared_queue":        {i32s(3), hostRegisterQueue},
	"proxy_resolve_shared_queue":         {i32s(5), hostResolveQueue},
	"proxy_enqueue_shared_queue":         {i32s(3), hostEnqueue},
	"proxy_dequeue_shared_queue":         {i32s(3), hostDequeue},
	"proxy_define_metric":                {i32s(4), hostDefineMetric},
	"proxy_increment_metric":             {[]api.ValueType{api.ValueTypeI32, api.ValueTypeI64}, hostIncrementMetric},
	"proxy_record_metric":                {[]api.ValueType{api.ValueTypeI32, api.ValueTypeI64}, hostRecordMetric},
	"proxy_get_metric":                   {i32s(2), hostGetMetric},
	"proxy_http_call":                    {i32s(10), hostHTTPCall},
	"proxy_get_status":                   {i32s(3), hostGetStatus},
	"proxy_set_effective_context":        {i32s(1), hostSetEffectiveContext},
	"proxy_done":                         {i32s(0), hostDone},
	"proxy_call_foreign_function":        {i32s(6), hostCallForeignFunction}, // foreign.go
	"proxy_grpc_call":                    unimplemented(12),
	"proxy_grpc_stream":                  unimplemented(9),
	"proxy_grpc_send":                    unimplemented(4),
	"proxy_grpc_cancel":                  unimplemented(1),
	"proxy_grpc_close":                   unimplemented(1),
}

// instantiateHost registers the env module. The functions find their
// instance (and its stream) through the call's context.
func instantiateHost(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder("env")
	for name, h := range hostFuncs {
		h := h
		// wazero leaves the upper half of an i32 slot undefined: clear it
		// once here so that implementations may compare whole words.
		var i32 []int
		for i, t := range h.params {
			if t == api.ValueTypeI32 {
				i32 = append(i32, i)
			}
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
				for _, i := range i32 {
					stack[i] = uint64(uint32(stack[i]))
				}
				in := instanceFrom(ctx)
				if in == nil {
					stack[0] = statusInternalFailure
					return
				}
				stack[0] = uint64(h.fn(ctx, in, stack))
			}), h.params, []api.ValueType{api.ValueTypeI32}).
			Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

func u32(v uint64) uint32 { return uint32(v) }

func hostLog(_ context.Context, in *instance, a []uint64) uint32 {
	msg, ok := in.read(u32(a[1]), u32(a[2]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	var lvl slog.Level
	switch a[0] {
	case 0, 1:
		lvl = slog.LevelDebug
	case 2:
		lvl = slog.LevelInfo
	case 3:
		lvl = slog.LevelWarn
	default:
		lvl = slog.LevelError
	}
	if len(msg) > maxLogLine {
		msg = msg[:maxLogLine] // a guest must not make the proxy log megabytes
	}
	in.p.log.Log(context.Background(), lvl, string(msg), "source", "guest")
	return statusOK
}

func hostGetLogLevel(_ context.Context, in *instance, a []uint64) uint32 {
	// Tell the guest the lowest level the logger keeps, so that it skips
	// formatting messages that would be dropped.
	lvl := uint32(5)
	ctx := context.Background()
	switch {
	case in.p.log.Enabled(ctx, slog.LevelDebug):
		lvl = 1
	case in.p.log.Enabled(ctx, slog.LevelInfo):
		lvl = 2
	case in.p.log.Enabled(ctx, slog.LevelWarn):
		lvl = 3
	case in.p.log.Enabled(ctx, slog.LevelError):
		lvl = 4
	}
	if !in.mem.WriteUint32Le(u32(a[0]), lvl) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hostGetTime(_ context.Context, in *instance, a []uint64) uint32 {
	if !in.mem.WriteUint64Le(u32(a[0]), uint64(time.Now().UnixNano())) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hostSetTickPeriod(_ context.Context, in *instance, a []uint64) uint32 {
	in.tickPeriod = time.Duration(u32(a[0])) * time.Millisecond
	return statusOK
}

func hostSetEffectiveContext(_ context.Context, in *instance, a []uint64) uint32 {
	id := u32(a[0])
	if id != rootID && (in.st == nil || in.st.id != id) {
		return statusBadArgument
	}
	in.effective = id
	return statusOK
}

func hostDone(context.Context, *instance, []uint64) uint32 { return statusOK }

// stream returns the stream the effective context belongs to, or nil in
// root-context calls.
func (in *instance) stream() *streamCtx {
	if in.st == nil || in.effective != in.st.id {
		return nil
	}
	return in.st
}

func hostContinueStream(_ context.Context, in *instance, _ []uint64) uint32 {
	st := in.stream()
	if st == nil {
		return statusNotFound
	}
	st.resumed = true
	return statusOK
}

func hostCloseStream(_ context.Context, in *instance, _ []uint64) uint32 {
	st := in.stream()
	if st == nil {
		return statusNotFound
	}
	if st.tr.active {
		return statusBadArgument // the head is sent (trailers.go)
	}
	st.replaceResponse()
	st.s.Reply(503, "stream closed by extension")
	st.local = true
	return statusOK
}

func hostClearRouteCache(_ context.Context, in *instance, _ []uint64) uint32 {
	if st := in.stream(); st != nil {
		st.s.ClearRoute()
	}
	return statusOK
}

func hostGetStatus(_ context.Context, in *instance, a []uint64) uint32 {
	// Only gRPC calls carry a status, and they are not supported: report OK
	// with no message.
	if !in.mem.WriteUint32Le(u32(a[0]), 0) {
		return statusInvalidMemoryAccess
	}
	return in.returnBytesNoCtx(nil, u32(a[1]), u32(a[2]))
}

func (in *instance) returnBytesNoCtx(b []byte, retPtr, retSize uint32) uint32 {
	if len(b) != 0 {
		return statusInternalFailure
	}
	if !in.mem.WriteUint32Le(retPtr, 0) || !in.mem.WriteUint32Le(retSize, 0) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

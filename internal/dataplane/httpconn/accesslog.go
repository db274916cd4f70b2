package httpconn

import (
	"context"
	"log/slog"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/telemetry"
)

// logAccess writes one access-log record to each of the listener's access
// logs (several receive the same record, as in Envoy). Field names are
// stable (documented in docs/config.md): they are an interface for log
// pipelines.
func logAccess(logs []*slog.Logger, st *filter.Stream, status int) {
	req := st.Req
	route := ""
	if st.Route != nil {
		route = st.Route.Name
	}
	ua, _ := req.Header.Get("user-agent")
	rid, _ := req.Header.Get("x-request-id")
	attrs := [...]slog.Attr{
		slog.String("listener", st.Downstream.Listener),
		slog.Time("start_time", st.Start),
		slog.String("method", string(req.Method)),
		slog.String("authority", string(req.Authority)),
		slog.String("path", string(req.Path)),
		slog.String("protocol", protoName(req.ProtoMajor, req.ProtoMinor)),
		slog.Int("status", status),
		slog.String("response_flags", st.ResponseFlags),
		slog.Int64("bytes_received", st.BytesRecv),
		slog.Int64("bytes_sent", st.BytesSent),
		slog.Int64("duration_us", time.Since(st.Start).Microseconds()),
		slog.String("route", route),
		slog.String("upstream_cluster", st.UpstreamCluster),
		slog.String("upstream_host", st.UpstreamHost),
		slog.Int("attempts", st.Attempts),
		slog.String("downstream_remote", st.Downstream.RemoteAddr.String()),
		slog.String("peer_identity", st.Downstream.PeerIdentity),
		slog.String("user_agent", string(ua)),
		slog.String("request_id", string(rid)),
		slog.String("trace_id", traceID(st)),
	}
	for _, l := range logs {
		l.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs[:]...)
	}
}

func traceID(st *filter.Stream) string {
	if st.Trace == nil {
		return ""
	}
	return st.Trace.TraceID().String()
}

// startTrace and endTrace are the connection manager's two telemetry call
// sites: the server span starts once the chain has matched the route (the
// chain's OnRouted hook, installed by Config.Init) and ends after the
// response is written and the chain completed.
func startTrace(st *filter.Stream, t *telemetry.Tracer) {
	route := ""
	if st.Route != nil {
		route = st.Route.Name
	}
	st.Trace = t.Start(st.Req, route, st.Downstream.PeerIdentity, st.Start)
}

func endTrace(st *filter.Stream, status int) {
	if st.Trace == nil {
		return
	}
	st.Trace.End(st.Req, telemetry.Outcome{
		Status: status, ResponseFlags: st.ResponseFlags, BytesSent: st.BytesSent, BytesRecv: st.BytesRecv,
		Attempts: st.Attempts, UpstreamCluster: st.UpstreamCluster, UpstreamHost: st.UpstreamHost,
		Remote: st.Downstream.RemoteAddr, Resp: st.Resp,
	})
	st.Trace = nil
}

func protoName(major, minor uint8) string {
	switch {
	case major == 2:
		return "HTTP/2"
	case minor == 0:
		return "HTTP/1.0"
	default:
		return "HTTP/1.1"
	}
}

package localreply

import (
	"io"
	"testing"

	"github.com/omnirelay/omnirelay/internal/dataplane/filter"
	"github.com/omnirelay/omnirelay/internal/dataplane/message"
)

func TestSend(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		httpStatus  int
		grpcStatus  int
		body        string
		wantStatus  int
		wantHeaders map[string]string
		wantBody    string
	}{
		{"plain", "", 429, NoGRPCStatus, "limited\n", 429,
			map[string]string{"content-type": "text/plain", "grpc-status": ""}, "limited\n"},
		{"grpc mapped from http", "application/grpc", 429, NoGRPCStatus, "limited\n", 200,
			map[string]string{"content-type": "application/grpc", "grpc-status": "14", "grpc-message": "limited"}, ""},
		{"grpc explicit", "application/grpc+proto", 503, 9, "nope", 200,
			map[string]string{"grpc-status": "9", "grpc-message": "nope"}, ""},
		{"grpc message percent-encoded", "application/grpc", 403, NoGRPCStatus, "50% déjà", 200,
			map[string]string{"grpc-status": "7", "grpc-message": "50%25 d%C3%A9j%C3%A0"}, ""},
		{"grpc-web is not grpc", "application/grpc-web", 500, NoGRPCStatus, "x", 500,
			map[string]string{"grpc-status": ""}, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &filter.Stream{Req: &message.Request{}}
			if tt.contentType != "" {
				s.Req.Header.Add("content-type", tt.contentType)
			}
			Send(s, tt.httpStatus, tt.grpcStatus, tt.body)
			if s.Resp == nil || s.Resp.Status != tt.wantStatus {
				t.Fatalf("response %+v, want status %d", s.Resp, tt.wantStatus)
			}
			for k, v := range tt.wantHeaders {
				if got := s.Resp.Header.GetString(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			var body string
			if s.Resp.Body != nil {
				b, _ := io.ReadAll(s.Resp.Body)
				body = string(b)
			}
			if body != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
		})
	}
}

func TestGRPCStatusFromHTTP(t *testing.T) {
	tests := []struct {
		name string
		in   int
		want int
	}{
		{"bad request", 400, 13},
		{"unauthorized", 401, 16},
		{"forbidden", 403, 7},
		{"not found", 404, 12},
		{"too many", 429, 14},
		{"bad gateway", 502, 14},
		{"unavailable", 503, 14},
		{"gateway timeout", 504, 14},
		{"other", 418, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := GRPCStatusFromHTTP(tt.in); got != tt.want {
				t.Fatalf("GRPCStatusFromHTTP(%d) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func BenchmarkSendGRPC(b *testing.B) {
	s := &filter.Stream{Req: &message.Request{}}
	s.Req.Header.Add("content-type", "application/grpc")
	b.ReportAllocs()
	for b.Loop() {
		Send(s, 503, NoGRPCStatus, "unavailable\n")
	}
}

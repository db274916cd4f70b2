package message

import "testing"

func TestHeadersSetGetDel(t *testing.T) {
	var h Headers
	h.Add("X-A", "1")
	h.Add("x-b", "2")
	h.Add("X-A", "3")
	if v, _ := h.Get("x-a"); string(v) != "1" {
		t.Fatalf("Get x-a = %q", v)
	}
	if n := h.Count("x-a"); n != 2 {
		t.Fatalf("Count = %d", n)
	}
	h.Set("X-A", "9")
	if n := h.Count("x-a"); n != 1 {
		t.Fatalf("after Set Count = %d", n)
	}
	if v, _ := h.Get("x-a"); string(v) != "9" {
		t.Fatalf("after Set Get = %q", v)
	}
	if h.Del("x-b") != 1 || h.Has("x-b") {
		t.Fatal("Del failed")
	}
	h.Add("connection", "keep-alive, Upgrade")
	if !h.HasToken("connection", "upgrade") || h.HasToken("connection", "close") {
		t.Fatal("HasToken")
	}
}

func TestHostStripsPort(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "example.com", "example.com"},
		{"port", "example.com:8080", "example.com"},
		{"v6", "[::1]:80", "[::1]"},
		{"v6 no port", "[::1]", "[::1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			r.SetAuthority(tt.in)
			if got := string(r.Host()); got != tt.want {
				t.Fatalf("Host(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestIsGRPC(t *testing.T) {
	for in, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc;x": true,
		"application/grpcx": false, "text/plain": false,
	} {
		if IsGRPC([]byte(in)) != want {
			t.Errorf("IsGRPC(%q) != %v", in, want)
		}
	}
}

func BenchmarkHeadersGet(b *testing.B) {
	var h Headers
	for _, n := range []string{"host", "user-agent", "accept", "accept-encoding", "x-request-id", "x-canary"} {
		h.Add(n, "value")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := h.Get("x-canary"); !ok {
			b.Fatal("missing")
		}
	}
}

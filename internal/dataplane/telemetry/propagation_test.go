package telemetry

import (
	"strings"
	"testing"
)

func TestParseTraceparent(t *testing.T) {
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	const sid = "00f067aa0ba902b7"
	tests := []struct {
		name    string
		in      string
		ok      bool
		sampled bool
	}{
		{name: "sampled", in: "00-" + tid + "-" + sid + "-01", ok: true, sampled: true},
		{name: "not sampled", in: "00-" + tid + "-" + sid + "-00", ok: true},
		{name: "other flags keep sampled bit", in: "00-" + tid + "-" + sid + "-03", ok: true, sampled: true},
		{name: "future version with more fields", in: "cc-" + tid + "-" + sid + "-01-what-the-future", ok: true, sampled: true},
		{name: "future version exact length", in: "01-" + tid + "-" + sid + "-01", ok: true, sampled: true},
		{name: "version ff", in: "ff-" + tid + "-" + sid + "-01"},
		{name: "version 00 too long", in: "00-" + tid + "-" + sid + "-01-x"},
		{name: "future version bad separator", in: "01-" + tid + "-" + sid + "-01x"},
		{name: "upper case hex", in: "00-" + strings.ToUpper(tid) + "-" + sid + "-01"},
		{name: "zero trace id", in: "00-00000000000000000000000000000000-" + sid + "-01"},
		{name: "zero span id", in: "00-" + tid + "-0000000000000000-01"},
		{name: "short", in: "00-" + tid + "-" + sid},
		{name: "bad separator", in: "00_" + tid + "-" + sid + "-01"},
		{name: "non hex flags", in: "00-" + tid + "-" + sid + "-0g"},
		{name: "empty", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, ok := ParseTraceparent([]byte(tt.in))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if sc.Sampled != tt.sampled || sc.TraceID.String() != tid || sc.SpanID.String() != sid {
				t.Fatalf("got %s %s %v", sc.TraceID, sc.SpanID, sc.Sampled)
			}
			out := string(AppendTraceparent(nil, sc))
			if back, ok := ParseTraceparent([]byte(out)); !ok || back != sc {
				t.Fatalf("round trip %q", out)
			}
		})
	}
}

func TestValidTracestate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{name: "one", in: "congo=t61rcWkgMzE", ok: true},
		{name: "two with spaces", in: "rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE", ok: true},
		{name: "multi-tenant key", in: "fw529a3039@dt=ab", ok: true},
		{name: "empty members", in: "a=1,,b=2", ok: true},
		{name: "empty", in: "", ok: true},
		{name: "upper key", in: "Rojo=1"},
		{name: "no value", in: "rojo="},
		{name: "no equals", in: "rojo"},
		{name: "value with comma-less equals", in: "a=b=c"},
		{name: "system too long", in: "t@abcdefghijklmno=1"},
		{name: "33 members", in: strings.Repeat("a=1,", 32) + "a=1"},
		{name: "control char", in: "a=\x01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidTracestate([]byte(tt.in)); got != tt.ok {
				t.Fatalf("ValidTracestate(%q) = %v, want %v", tt.in, got, tt.ok)
			}
		})
	}
}

func TestParseB3(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		ok      bool
		sampled bool
		tid     string
	}{
		{name: "full", in: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", ok: true, sampled: true, tid: "80f198ee56343ba864fe8b2a57d3eff7"},
		{name: "64-bit trace id", in: "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0", ok: true, tid: "000000000000000064fe8b2a57d3eff7"},
		{name: "debug", in: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d", ok: true, sampled: true, tid: "80f198ee56343ba864fe8b2a57d3eff7"},
		{name: "no state", in: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1", ok: true, sampled: true, tid: "80f198ee56343ba864fe8b2a57d3eff7"},
		{name: "deny only", in: "0"},
		{name: "bad state", in: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x"},
		{name: "bad parent", in: "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-zz"},
		{name: "zero span", in: "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, ok := ParseB3Single([]byte(tt.in))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if ok && (sc.Sampled != tt.sampled || sc.TraceID.String() != tt.tid) {
				t.Fatalf("got %s %v", sc.TraceID, sc.Sampled)
			}
		})
	}
	sc, ok := ParseB3Multi([]byte("80f198ee56343ba864fe8b2a57d3eff7"), []byte("e457b5a2e4d86bd1"), []byte("0"), nil)
	if !ok || sc.Sampled {
		t.Fatalf("multi: %v %v", sc, ok)
	}
	if _, ok := ParseB3Multi([]byte("80f198ee56343ba864fe8b2a57d3eff7"), nil, nil, nil); ok {
		t.Fatal("multi without span id accepted")
	}
}

func FuzzTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
	f.Fuzz(func(t *testing.T, in string) {
		sc, ok := ParseTraceparent([]byte(in))
		if !ok {
			return
		}
		if !sc.TraceID.IsValid() || !sc.SpanID.IsValid() {
			t.Fatalf("accepted invalid ids from %q", in)
		}
		out := AppendTraceparent(nil, sc)
		back, ok := ParseTraceparent(out)
		if !ok || back != sc {
			t.Fatalf("round trip of %q: %q", in, out)
		}
	})
}

func FuzzTracestate(f *testing.F) {
	f.Add("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
	f.Add("fw529a3039@dt=ab, a=1")
	f.Fuzz(func(t *testing.T, in string) {
		if !ValidTracestate([]byte(in)) {
			return
		}
		if len(in) > 512 {
			t.Fatalf("accepted %d bytes", len(in))
		}
		for _, m := range strings.Split(in, ",") {
			m = strings.Trim(m, " \t")
			if m != "" && !strings.Contains(m, "=") {
				t.Fatalf("accepted member %q", m)
			}
		}
	})
}

func FuzzB3(f *testing.F) {
	f.Add("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", "", "", "")
	f.Add("", "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", "1")
	f.Fuzz(func(t *testing.T, single, tid, sid, sampled string) {
		if sc, ok := ParseB3Single([]byte(single)); ok {
			back, ok := ParseB3Single(AppendB3Single(nil, sc))
			if !ok || back != sc {
				t.Fatalf("b3 round trip of %q", single)
			}
		}
		if sc, ok := ParseB3Multi([]byte(tid), []byte(sid), []byte(sampled), nil); ok && (!sc.TraceID.IsValid() || !sc.SpanID.IsValid()) {
			t.Fatalf("accepted invalid ids")
		}
	})
}

package xdsclient

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"

	"github.com/omnirelay/omnirelay/internal/dataplane/lkg"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
	"github.com/omnirelay/omnirelay/internal/testutil"
)

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestLastKnownGood starts clients with the control plane refusing
// connections (or accepting and never answering) and checks which LKG files
// they apply: signatures are verified on load exactly as on receipt.
func TestLastKnownGood(t *testing.T) {
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	snap := translateYAML(t, staticYAML, true)
	flat := func(key []byte) []*discoveryv3.Resource {
		var out []*discoveryv3.Resource
		for _, u := range typeOrder {
			out = append(out, byType(t, snap, key)[u]...)
		}
		return out
	}
	signed, unsigned := flat(priv), flat(nil)
	tampered := make([]*discoveryv3.Resource, len(signed))
	for i, r := range signed {
		tampered[i] = proto.Clone(r).(*discoveryv3.Resource)
	}
	// Same length, other bytes: the body of the first resource no longer
	// matches its signature, and the file's checksum (rewritten by Save)
	// is valid, as a deliberate edit would leave it.
	v := tampered[0].Resource.Value
	v[len(v)-1] ^= 0x01

	tests := []struct {
		name      string
		rs        []*discoveryv3.Resource
		verify    bool
		silent    bool // the server accepts the stream and never answers
		wantApply bool
		wantErr   string
	}{
		{name: "signed, verified", rs: signed, verify: true, wantApply: true},
		{name: "unsigned, no trust root", rs: unsigned, wantApply: true},
		{name: "silent server", rs: unsigned, silent: true, wantApply: true},
		{name: "unsigned, trust root", rs: unsigned, verify: true, wantErr: "unsigned"},
		{name: "tampered", rs: tampered, verify: true, wantErr: "rejected signature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := lkg.Save(dir, "v9", tc.rs); err != nil {
				t.Fatal(err)
			}
			addr := closedAddr(t)
			if tc.silent {
				_, addr = startFake(t)
			}
			rec := newRecorder()
			var lkgApplied = make(chan *resources.Snapshot, 1)
			o := Options{Address: addr, NodeID: "n1", LKGDir: dir, LKGAfter: 300 * time.Millisecond,
				Apply: rec.apply, ApplyLKG: func(s *resources.Snapshot, v string) error { lkgApplied <- s; return nil }}
			if tc.verify {
				o.Verifier = signing.NewVerifier(pub)
			}
			c := runClient(t, o)
			if tc.wantApply {
				select {
				case s := <-lkgApplied:
					if len(s.Listeners) != 1 || len(s.Routes) != 1 || len(s.Endpoints) != 1 {
						t.Fatalf("LKG snapshot: %d listeners %d routes %d endpoints", len(s.Listeners), len(s.Routes), len(s.Endpoints))
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("LKG not applied; status %+v", c.Status())
				}
				deadline := time.Now().Add(5 * time.Second)
				for !c.Status().FromLKG && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if st := c.Status(); !st.FromLKG || st.Version != "v9" {
					t.Fatalf("status %+v", st)
				}
				return
			}
			testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "LKG error naming "+tc.wantErr, func() (bool, string) {
				got := c.Status().LKGError
				return strings.Contains(got, tc.wantErr), fmt.Sprintf("last error %q", got)
			})
			t.Logf("rejected: %s", c.Status().LKGError)
			select {
			case <-lkgApplied:
				t.Fatal("a rejected LKG was applied")
			default:
			}
		})
	}
}

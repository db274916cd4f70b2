package e2e

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/testutil"
)

const lbConfig = `
admin: { address: {{admin}} }
listeners:
  - name: web
    address: {{web}}
    virtual_hosts:
      - name: all
        routes:
          - { match: { path_prefix: /rr/ }, cluster: rr }
          - { match: { path_prefix: /weighted/ }, cluster: weighted }
          - { match: { path_prefix: /random/ }, cluster: random }
          - { match: { path_prefix: /lr/ }, cluster: lr }
          - { match: { path_prefix: /ring/ }, cluster: ring, hash_policy: [{ header: x-user }] }
          - { match: { path_prefix: /ring-ip/ }, cluster: ring, hash_policy: [{ source_ip: true }] }
          - { match: { path_prefix: /maglev/ }, cluster: maglev, hash_policy: [{ header: x-user }] }
          - { match: { path_prefix: /maglev-ip/ }, cluster: maglev, hash_policy: [{ source_ip: true }] }
clusters:
  - name: rr
    endpoints: [{{b1}}, {{b2}}, {{b3}}]
  - name: weighted
    endpoints: [{ address: "{{b1}}", weight: 3 }, { address: "{{b2}}", weight: 1 }]
  - name: random
    lb: random
    endpoints: [{{b1}}, {{b2}}]
  - name: lr
    lb: least_request
    endpoints: [{{s1}}, {{s2}}]
  - name: ring
    lb: ring_hash
    endpoints: [{{b1}}, {{b2}}, {{b3}}]
  - name: maglev
    lb: maglev
    endpoints: [{{b1}}, {{b2}}, {{b3}}]
`

// clientFrom returns a client whose connections come from a given loopback
// address, so that source_ip hashing sees different clients.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestLBPolicies proves each load balancer through the proxy: round_robin
// spreads evenly and honours endpoint weights, random reaches every host,
// least_request steers away from a host with stuck requests, and ring_hash
// and maglev keep a hash key (header or source IP) on one host while
// spreading different keys.
func TestLBPolicies(t *testing.T) {
	b1, b2, b3 := startBackend(t, "b1", nil), startBackend(t, "b2", nil), startBackend(t, "b3", nil)
	arrived, release := make(chan struct{}, 64), make(chan struct{})
	s1 := startBackend(t, "s1", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/lr/stuck" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = w.Write([]byte("s1"))
	})
	s2 := startBackend(t, "s2", nil)
	web := testutil.Addr(t)
	startProxy(t, lbConfig, map[string]string{"web": web, "b1": b1.Addr, "b2": b2.Addr, "b3": b3.Addr,
		"s1": s1.Addr, "s2": s2.Addr})
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + web

	t.Run("round_robin", func(t *testing.T) {
		got := tallyBackends(t, c, base+"/rr/", 300)
		for _, name := range []string{"b1", "b2", "b3"} {
			if got[name] < 99 || got[name] > 101 {
				t.Fatalf("uneven spread: %v", got)
			}
		}
	})
	t.Run("round_robin weights", func(t *testing.T) {
		got := tallyBackends(t, c, base+"/weighted/", 400)
		if got["b1"] < 290 || got["b1"] > 310 || got["b1"]+got["b2"] != 400 {
			t.Fatalf("weights 3:1 over 400 requests: %v", got)
		}
	})
	t.Run("random", func(t *testing.T) {
		got := tallyBackends(t, c, base+"/random/", 400)
		// Binomial(400, 1/2) has a standard deviation of 10.
		if got["b1"] < 140 || got["b2"] < 140 {
			t.Fatalf("random spread: %v", got)
		}
	})

	t.Run("least_request", func(t *testing.T) {
		// Park requests on s1 until it has 4 in flight; those the balancer
		// sends to s2 complete at once.
		var wg sync.WaitGroup
		defer wg.Wait()
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()
		stuck := 0
		for tries := 0; stuck < 4; tries++ {
			if tries == 200 {
				t.Fatalf("only %d requests parked on s1 after %d tries", stuck, tries)
			}
			done := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(done)
				resp, err := c.Get(base + "/lr/stuck")
				if err == nil {
					resp.Body.Close()
				}
			}()
			select {
			case <-arrived:
				stuck++
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("a request neither parked nor completed")
			}
		}
		got := tallyBackends(t, c, base+"/lr/x", 120)
		// Two random choices, the busier one never taken unless both land
		// on it: s1 gets about a quarter (30, sd 4.7), against half (60, sd
		// 5.5) for a policy blind to load.
		if got["s1"] > 45 || got["s1"]+got["s2"] != 120 {
			t.Fatalf("with 4 requests stuck on s1: %v", got)
		}
		t.Logf("with 4 requests stuck on s1: %v", got)
		close(release)
		released = true
	})

	for _, policy := range []string{"ring", "maglev"} {
		t.Run(policy+" header", func(t *testing.T) {
			hosts := map[string]bool{}
			for i := range 30 {
				user := fmt.Sprintf("user-%d", i)
				got := tallyBackends(t, c, base+"/"+policy+"/", 4, "x-user", user)
				if len(got) != 1 {
					t.Fatalf("%s went to several hosts: %v", user, got)
				}
				for h := range got {
					hosts[h] = true
				}
			}
			if len(hosts) != 3 {
				t.Fatalf("30 keys used only %v", hosts)
			}
		})
		t.Run(policy+" without a key spreads", func(t *testing.T) {
			if got := tallyBackends(t, c, base+"/"+policy+"/", 60); len(got) < 2 {
				t.Fatalf("no hash key: %v", got)
			}
		})
		t.Run(policy+" source_ip", func(t *testing.T) {
			hosts := map[string]bool{}
			for i := range 12 {
				ip := fmt.Sprintf("127.0.0.%d", 10+i)
				cl := clientFrom(ip)
				got := tallyBackends(t, cl, base+"/"+policy+"-ip/", 3)
				cl.CloseIdleConnections()
				if len(got) != 1 {
					t.Fatalf("%s went to several hosts: %v", ip, got)
				}
				for h := range got {
					hosts[h] = true
				}
			}
			if len(hosts) < 2 {
				t.Fatalf("12 source addresses all on %v", hosts)
			}
		})
	}
}

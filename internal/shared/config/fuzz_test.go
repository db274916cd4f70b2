package config_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// FuzzParse feeds arbitrary bytes to Parse; whatever it accepts must
// translate into a valid snapshot, and nothing may panic. File checks are
// skipped so that certificate paths in the seeds do not need to exist.
// Seeds: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte("listeners: [{ name: l, address: 127.0.0.1:80, protocol: tcp, cluster: c }]\nclusters: [{ name: c, endpoints: [127.0.0.1:9] }]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fuzzer has no per-input timeout; a hang must become a crash
		// so that the input is saved.
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				panic(fmt.Sprintf("Parse/Translate hung on %q", data))
			}
		}()
		c, err := config.Parse("fuzz.yaml", data, config.SkipFileChecks())
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse error %q (%T) is not a *config.Error", err, err)
			}
			return
		}
		snap, err := translate.Translate(c)
		if err != nil {
			t.Fatalf("Parse accepted a config that Translate rejects: %v\n%s", err, data)
		}
		if _, err := snap.MarshalJSON(); err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
	})
}

// FuzzLoadEnvoy checks the Envoy loader never panics and that what it
// accepts can be dumped.
func FuzzLoadEnvoy(f *testing.F) {
	f.Add([]byte("static_resources: { clusters: [{ name: a, type: STATIC, connect_timeout: 1s }] }\n"))
	f.Add([]byte(`{"static_resources": {"listeners": []}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = config.IsEnvoyFormat(data)
		snap, _, err := config.LoadEnvoy("fuzz.yaml", data)
		if err != nil {
			return
		}
		if _, err := snap.MarshalJSON(); err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
	})
}

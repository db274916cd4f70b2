// Package lkg owns the data plane's last-known-good file: the exact xDS
// resources of the last config the proxy applied, kept on disk so that a
// proxy restarting while its control plane is unreachable can serve what it
// served before.
//
// The file (DIR/lkg.pb) is one envoy.service.discovery.v3.DeltaDiscoveryResponse
// used as a container: system_version_info is the applied version and
// resources are the discovery Resource wrappers as received, Any bodies and
// signature metadata untouched, so that the signatures verify on load
// exactly as they did on receipt. The nonce field carries a sha256 of the
// resources' encoding: it catches a truncated or bit-flipped file (a
// tampered one is caught by the signatures when a trust root is set).
package lkg

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// FileName is the file's name inside the LKG directory.
const FileName = "lkg.pb"

const sumPrefix = "sha256:"

// ErrCorrupt marks a file that exists but cannot be trusted as written.
var ErrCorrupt = errors.New("last-known-good file is corrupt")

var deterministic = proto.MarshalOptions{Deterministic: true}

// Save writes version and rs to dir/lkg.pb atomically: a temp file in the
// same directory, fsynced, renamed over the old one, and the directory
// fsynced, so a crash leaves either the old file or the new one.
func Save(dir, version string, rs []*discoveryv3.Resource) error {
	sum, err := checksum(rs)
	if err != nil {
		return err
	}
	b, err := deterministic.Marshal(&discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: version,
		Resources:         rs,
		Nonce:             sumPrefix + sum,
	})
	if err != nil {
		return fmt.Errorf("lkg: encode: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lkg: %w", err)
	}
	f, err := os.CreateTemp(dir, FileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("lkg: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("lkg: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("lkg: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("lkg: close %s: %w", tmp, err)
	}
	path := filepath.Join(dir, FileName)
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("lkg: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename is durable once the directory is
		d.Close()
	}
	return nil
}

// Load reads dir/lkg.pb. A missing file is an error satisfying
// errors.Is(err, fs.ErrNotExist); a file that does not decode or whose
// checksum does not match satisfies errors.Is(err, ErrCorrupt). Signatures
// are the caller's to verify.
func Load(dir string) (version string, rs []*discoveryv3.Resource, err error) {
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("lkg: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes the file's bytes; path is for messages.
func Parse(path string, b []byte) (string, []*discoveryv3.Resource, error) {
	var c discoveryv3.DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &c); err != nil {
		return "", nil, fmt.Errorf("lkg: %s: %w: %v", path, ErrCorrupt, err)
	}
	want, ok := strings.CutPrefix(c.GetNonce(), sumPrefix)
	if !ok {
		return "", nil, fmt.Errorf("lkg: %s: %w: no checksum", path, ErrCorrupt)
	}
	got, err := checksum(c.GetResources())
	if err != nil {
		return "", nil, fmt.Errorf("lkg: %s: %w: %v", path, ErrCorrupt, err)
	}
	if got != want {
		return "", nil, fmt.Errorf("lkg: %s: %w: checksum mismatch (file says %s, content is %s)", path, ErrCorrupt, want, got)
	}
	if len(c.GetResources()) == 0 {
		return "", nil, fmt.Errorf("lkg: %s: %w: no resources", path, ErrCorrupt)
	}
	return c.GetSystemVersionInfo(), c.GetResources(), nil
}

func checksum(rs []*discoveryv3.Resource) (string, error) {
	h := sha256.New()
	for i, r := range rs {
		b, err := deterministic.Marshal(r)
		if err != nil {
			return "", fmt.Errorf("lkg: encode resource %d: %w", i, err)
		}
		var n [8]byte
		for j := range n {
			n[j] = byte(len(b) >> (8 * j))
		}
		h.Write(n[:])
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

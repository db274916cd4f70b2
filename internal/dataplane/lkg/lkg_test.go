package lkg

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func sample(t testing.TB) []*discoveryv3.Resource {
	t.Helper()
	body, err := anypb.New(&clusterv3.Cluster{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"omnirelay.dsse": {Fields: map[string]*structpb.Value{"envelope": structpb.NewStringValue("{}")}},
	}}
	return []*discoveryv3.Resource{{Name: "a", Version: "7", Resource: body, Metadata: md}}
}

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested")
	rs := sample(t)
	if err := Save(dir, "v1", rs); err != nil {
		t.Fatal(err)
	}
	v, got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if v != "v1" || len(got) != 1 || !proto.Equal(got[0], rs[0]) {
		t.Fatalf("Load = %q %v", v, got)
	}
	// A second save replaces the file and leaves no temp file behind.
	if err := Save(dir, "v2", rs); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != FileName {
		t.Fatalf("dir holds %v", entries)
	}
	if v, _, _ := Load(dir); v != "v2" {
		t.Fatalf("version %q after second save", v)
	}
}

func TestLoadErrors(t *testing.T) {
	good, err := os.ReadFile(func() string {
		dir := t.TempDir()
		if err := Save(dir, "v1", sample(t)); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, FileName)
	}())
	if err != nil {
		t.Fatal(err)
	}
	noSum, _ := proto.Marshal(&discoveryv3.DeltaDiscoveryResponse{Resources: sample(t)})
	empty, _ := proto.Marshal(&discoveryv3.DeltaDiscoveryResponse{Nonce: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-5] ^= 0x01
	tests := []struct {
		name    string
		data    []byte // nil: no file
		wantErr error
	}{
		{name: "missing", data: nil, wantErr: fs.ErrNotExist},
		{name: "garbage", data: []byte("\xff\xff\xff"), wantErr: ErrCorrupt},
		{name: "truncated", data: good[:len(good)-3], wantErr: ErrCorrupt},
		{name: "bit flip", data: flipped, wantErr: ErrCorrupt},
		{name: "no checksum", data: noSum, wantErr: ErrCorrupt},
		{name: "no resources", data: empty, wantErr: ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.data != nil {
				if err := os.WriteFile(filepath.Join(dir, FileName), tc.data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err := Load(dir)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Load error %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// FuzzParse: any bytes either load as a checksummed container or fail with
// ErrCorrupt; never a panic, never an unchecked success.
func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	if err := Save(dir, "v1", sample(f)); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, rs, err := Parse("fuzz", b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error without ErrCorrupt: %v", err)
			}
			return
		}
		// A success must round-trip through Save.
		d := t.TempDir()
		if err := Save(d, v, rs); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Load(d); err != nil {
			t.Fatalf("re-saved file does not load: %v", err)
		}
	})
}

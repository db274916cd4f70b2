package translate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
)

func writePackage(t *testing.T, dir, file, payload string) []byte {
	t.Helper()
	return writePackageKind(t, dir, file, payload, extpkg.KindDSL)
}

func writePackageKind(t *testing.T, dir, file, payload, kind string) []byte {
	t.Helper()
	b, err := extpkg.Pack(extpkg.Manifest{Name: "add-header", Version: "1.0.0", Kind: kind, ABI: "x/1"}, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExtension(t *testing.T) {
	dir := t.TempDir()
	pkg := writePackage(t, dir, "add-header.orx", "v2")
	prev := writePackage(t, dir, "old.orx", "v1")
	wasmPkg := writePackageKind(t, dir, "plugin.orx", "\x00asm", extpkg.KindWasm)
	if err := os.WriteFile(filepath.Join(dir, "junk.orx"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	listener := func(ext string) string {
		return "listeners: [{ name: l, address: 127.0.0.1:80, filters: [" + ext + "], virtual_hosts: [{ name: v, routes: [{ cluster: a }] }] }]\n" + backends
	}
	tests := []struct {
		name    string
		ext     string
		want    *extv1.Extension // nil: refused
		wantErr string
	}{
		{name: "defaults", ext: "{ extension: { name: add-header, package: add-header.orx } }",
			want: &extv1.Extension{Name: "add-header", Package: pkg, Config: []byte{}}},
		{name: "everything", ext: `{ extension: { name: add-header, package: ./add-header.orx, config: "x-a: 1", policy: reload, fallback: fail_open,
			deadline: 5ms, fail_status: 502, canary: { percent: 10, previous_package: old.orx } } }`,
			want: &extv1.Extension{Name: "add-header", Package: pkg, Config: []byte("x-a: 1"), Policy: extv1.Policy_RELOAD,
				Fallback: extv1.Policy_FAIL_OPEN, FailStatus: 502, Canary: &extv1.Canary{Percent: 10, PreviousPackage: prev, PreviousConfig: []byte{}}}},
		{name: "two extensions in one chain", ext: "{ extension: { name: a, package: add-header.orx } }, { extension: { name: b, package: add-header.orx } }"},
		{name: "same name twice", ext: "{ extension: { name: a, package: add-header.orx } }, { extension: { name: a, package: add-header.orx } }",
			wantErr: "listed twice"},
		{name: "missing file", ext: "{ extension: { name: a, package: nope.orx } }", wantErr: "nope.orx"},
		{name: "not a package", ext: "{ extension: { name: a, package: junk.orx } }", wantErr: "malformed extension package"},
		{name: "no package", ext: "{ extension: { name: a } }", wantErr: "package file (.orx) is required"},
		{name: "bad policy", ext: "{ extension: { name: a, package: add-header.orx, policy: retry } }", wantErr: `policy "retry"`},
		{name: "fallback without reload", ext: "{ extension: { name: a, package: add-header.orx, fallback: fail_open } }", wantErr: "only to policy reload"},
		{name: "zero deadline", ext: "{ extension: { name: a, package: add-header.orx, deadline: 0s } }", wantErr: "deadline"},
		{name: "bad name", ext: "{ extension: { name: Add Header, package: add-header.orx } }", wantErr: "name"},
		{name: "bad status", ext: "{ extension: { name: a, package: add-header.orx, fail_status: 99 } }", wantErr: "fail_status"},
		{name: "wasm VM settings", ext: `{ extension: { name: add-header, package: plugin.orx, vm_id: receiver, root_id: my_root_id, vm_config: "vm: 1" } }`,
			want: &extv1.Extension{Name: "add-header", Package: wasmPkg, Config: []byte{}, Wasm: &extv1.Wasm{VmId: "receiver", RootId: "my_root_id", VmConfig: []byte("vm: 1")}}},
		{name: "VM settings on a DSL package", ext: "{ extension: { name: a, package: add-header.orx, vm_id: x } }", wantErr: "Proxy-Wasm settings; package add-header.orx is kind dsl"},
		{name: "vm_id too long", ext: "{ extension: { name: a, package: plugin.orx, vm_id: " + strings.Repeat("v", 257) + " } }", wantErr: "vm_id: want at most 256 bytes"},
		{name: "canary over 100", ext: "{ extension: { name: a, package: add-header.orx, canary: { percent: 101, previous_package: old.orx } } }", wantErr: "percent 101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse(filepath.Join(dir, "omnirelay.yaml"), []byte(listener(tt.ext)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			snap, err := Translate(c)
			if err != nil {
				t.Fatal(err)
			}
			m := hcmOf(t, snap.Listeners[0], 0)
			if tt.want == nil {
				if got, want := filterNames(m), NameExtensionPrefix+"a,"+NameExtensionPrefix+"b,"+NameRouter; got != want {
					t.Fatalf("filters = %s, want %s", got, want)
				}
				return
			}
			f := m.GetHttpFilters()[0]
			if f.GetName() != NameExtensionPrefix+"add-header" {
				t.Fatalf("filter name %q", f.GetName())
			}
			var got extv1.Extension
			if err := f.GetTypedConfig().UnmarshalTo(&got); err != nil {
				t.Fatal(err)
			}
			if got.GetDeadline() == nil {
				t.Fatal("no deadline")
			}
			got.Deadline = nil
			if !proto.Equal(&got, tt.want) {
				t.Fatalf("config = %v\nwant %v", &got, tt.want)
			}
		})
	}
}

// TestDocExample loads the configuration example of docs/extensions.md with
// the package files it names.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "extensions.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Configuration\n")
	if !ok {
		t.Fatal("no Configuration section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	body, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no yaml example")
	}
	dir := t.TempDir()
	writePackage(t, dir, "add-header.orx", "v2")
	writePackage(t, dir, "add-header-1.0.orx", "v1")
	c, err := config.Parse(filepath.Join(dir, "omnirelay.yaml"), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Translate(c); err != nil {
		t.Fatal(err)
	}
}

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/omnirelay/omnirelay/internal/controlplane/extstore"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

func omnictl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// stampRules is a minimal valid DSL payload.
const stampRules = "rules:\n  - name: stamp\n    when: \"true\"\n    actions: [{ set_header: { name: x-stamp, value: \"1\" } }]\n"

func TestExtPackSignVerify(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePrivateKey(at("key.pem"), priv); err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePublicKey(at("pub.pem"), pub); err != nil {
		t.Fatal(err)
	}
	if err := signing.WritePublicKey(at("other.pem"), otherPub); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(at("rules.yaml"), []byte(stampRules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(at("bad-rules.yaml"), []byte("rules:\n  - name: broken\n    when: request.path + 1\n    actions: [{ deny: { status: 403 } }]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		args []string
		want string // in the output, or in the error when wantErr
		err  bool
	}{
		{name: "pack", args: []string{"ext", "pack", at("rules.yaml"), "--name", "rules", "--version", "1.0.0", "--kind", "dsl", "--abi", "omnirelay-dsl/1", "--out", at("rules.orx")},
			want: "packed rules@1.0.0 (dsl, omnirelay-dsl/1)"},
		{name: "unsigned does not verify", args: []string{"ext", "verify", at("rules.orx"), "--trust-root", at("pub.pem")}, want: "not signed", err: true},
		{name: "pack type-checks dsl rules", args: []string{"ext", "pack", at("bad-rules.yaml"), "--name", "rules", "--version", "1", "--kind", "dsl", "--abi", "omnirelay-dsl/1", "--out", at("bad.orx")},
			want: `rules[0] "broken": when:`, err: true},
		{name: "pack refuses a bad kind", args: []string{"ext", "pack", at("rules.yaml"), "--name", "rules", "--version", "1", "--kind", "lua", "--abi", "x", "--out", at("bad.orx")},
			want: `kind "lua"`, err: true},
		{name: "sign", args: []string{"ext", "sign", at("rules.orx"), "--key", at("key.pem")}, want: "signed " + at("rules.orx") + " with key " + signing.KeyID(pub)},
		{name: "verify", args: []string{"ext", "verify", at("rules.orx"), "--trust-root", at("pub.pem")}, want: fmt.Sprintf("payload:      %d bytes", len(stampRules))},
		{name: "verify json", args: []string{"ext", "verify", at("rules.orx"), "--trust-root", at("pub.pem"), "-o", "json"}, want: `"kind": "dsl"`},
		{name: "other key refused", args: []string{"ext", "verify", at("rules.orx"), "--trust-root", at("other.pem")}, want: "untrusted key", err: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			out, err := omnictl(t, st.args...)
			if st.err {
				if err == nil || !strings.Contains(err.Error(), st.want) {
					t.Fatalf("err = %v, want it to mention %q (output %q)", err, st.want, out)
				}
				return
			}
			if err != nil || !strings.Contains(out, st.want) {
				t.Fatalf("output %q, err %v; want %q", out, err, st.want)
			}
		})
	}
	// A payload changed after signing is caught.
	pkg, err := os.ReadFile(at("rules.orx"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(pkg, []byte("x-stamp"), []byte("x-stamq"), 1)
	if err := os.WriteFile(at("tampered.orx"), tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := omnictl(t, "ext", "verify", at("tampered.orx"), "--trust-root", at("pub.pem")); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("tampered: err = %v", err)
	}
}

func TestExtPushList(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "meshkit.db"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extstore.New(st, nil).Register(g)
	go func() { _ = g.Serve(ln) }()
	defer func() {
		g.Stop()
		st.Close()
	}()
	_, priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := extpkg.Pack(extpkg.Manifest{Name: "rules", Version: "1.0.0", Kind: extpkg.KindDSL, ABI: "omnirelay-dsl/1"}, []byte(stampRules))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unsigned.orx"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err = extpkg.Sign(b, signing.NewSigner(priv)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.orx"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	server := ln.Addr().String()
	steps := []struct {
		name string
		args []string
		want string
		err  bool
	}{
		{name: "unsigned refused", args: []string{"ext", "push", filepath.Join(dir, "unsigned.orx")}, want: "FailedPrecondition", err: true},
		{name: "push", args: []string{"ext", "push", filepath.Join(dir, "rules.orx")}, want: "pushed rules@1.0.0 (dsl, omnirelay-dsl/1"},
		{name: "push again", args: []string{"ext", "push", filepath.Join(dir, "rules.orx")}, want: "already stored: rules@1.0.0"},
		{name: "list", args: []string{"ext", "list"}, want: "rules  1.0.0    dsl   omnirelay-dsl/1"},
		{name: "list json", args: []string{"ext", "list", "rules", "-o", "json"}, want: `"version": "1.0.0"`},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			out, err := omnictl(t, append([]string{"--server", server}, st.args...)...)
			if st.err {
				if err == nil || !strings.Contains(err.Error(), st.want) {
					t.Fatalf("err = %v, want %q", err, st.want)
				}
				return
			}
			if err != nil || !strings.Contains(out, st.want) {
				t.Fatalf("output %q, err %v; want %q", out, err, st.want)
			}
		})
	}
}

package extstore_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/omnirelay/omnirelay/internal/controlplane/extstore"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	extv1 "github.com/omnirelay/omnirelay/internal/shared/api/extensions/v1"
	"github.com/omnirelay/omnirelay/internal/shared/extpkg"
	"github.com/omnirelay/omnirelay/internal/shared/signing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stampRules is a minimal valid DSL payload; tests append a comment to make
// packages of different content.
const stampRules = "rules:\n  - name: stamp\n    actions: [{ set_header: { name: x-stamp, value: \"1\" } }]\n"

func pkg(t *testing.T, name, version, payload string, sign bool) []byte {
	t.Helper()
	b, err := extpkg.Pack(extpkg.Manifest{Name: name, Version: version, Kind: extpkg.KindDSL, ABI: "x/1"}, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	if !sign {
		return b
	}
	seed := make([]byte, ed25519.SeedSize)
	if b, err = extpkg.Sign(b, signing.NewSigner(ed25519.NewKeyFromSeed(seed))); err != nil {
		t.Fatal(err)
	}
	return b
}

// serve starts the service on a bbolt store behind a real gRPC server on
// loopback and returns a client.
func serve(t *testing.T) extv1.PackagesClient {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "meshkit.db"))
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
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		st.Close()
	})
	return extv1.NewPackagesClient(conn)
}

func TestPushListGet(t *testing.T) {
	c := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v1 := pkg(t, "add-header", "1.0.0", stampRules+"# one", true)
	steps := []struct {
		name    string
		pkg     []byte
		code    codes.Code
		created bool
	}{
		{name: "garbage", pkg: []byte("not a package"), code: codes.InvalidArgument},
		{name: "rules that do not type-check", pkg: pkg(t, "add-header", "0.9.0", "rules:\n  - name: r\n    when: request.path + 1\n    actions: [{ deny: { status: 403 } }]\n", true), code: codes.InvalidArgument},
		{name: "unsigned", pkg: pkg(t, "add-header", "1.0.0", stampRules+"# one", false), code: codes.FailedPrecondition},
		{name: "first push", pkg: v1, created: true},
		{name: "same bytes again", pkg: v1},
		{name: "other bytes, same version", pkg: pkg(t, "add-header", "1.0.0", stampRules+"# two", true), code: codes.AlreadyExists},
		{name: "next version", pkg: pkg(t, "add-header", "1.1.0", stampRules+"# two", true), created: true},
		{name: "other extension", pkg: pkg(t, "add-header-extra", "1.0.0", stampRules+"# x", true), created: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			resp, err := c.Push(ctx, &extv1.PushRequest{Package: st.pkg})
			if status.Code(err) != st.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, st.code)
			}
			if err == nil && resp.GetCreated() != st.created {
				t.Fatalf("created = %v, want %v", resp.GetCreated(), st.created)
			}
		})
	}
	list, err := c.List(ctx, &extv1.ListRequest{Name: "add-header"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range list.GetPackages() {
		got = append(got, p.GetName()+"@"+p.GetVersion())
	}
	if len(got) != 2 || got[0] != "add-header@1.0.0" || got[1] != "add-header@1.1.0" {
		t.Fatalf("list add-header = %v", got)
	}
	if all, err := c.List(ctx, &extv1.ListRequest{}); err != nil || len(all.GetPackages()) != 3 {
		t.Fatalf("list all = %v, %v", all, err)
	}
	g, err := c.Get(ctx, &extv1.GetRequest{Name: "add-header", Version: "1.0.0"})
	if err != nil || string(g.GetPackage()) != string(v1) {
		t.Fatalf("get = %v", err)
	}
	if _, err := c.Get(ctx, &extv1.GetRequest{Name: "add-header", Version: "9"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get missing: %v", err)
	}
}

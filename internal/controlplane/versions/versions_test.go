package versions

import (
	"context"
	"strings"
	"testing"

	"github.com/omnirelay/omnirelay/internal/shared/config"
)

func TestUnified(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{name: "equal", a: "x\ny\n", b: "x\ny\n", want: ""},
		{name: "one line changed", a: "a\nb\nc\n", b: "a\nB\nc\n", want: "--- A\n+++ B\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"},
		{name: "added at the start", a: "b\n", b: "a\nb\n", want: "--- A\n+++ B\n@@ -1 +1,2 @@\n+a\n b\n"},
		{name: "from empty", a: "", b: "a\n", want: "--- A\n+++ B\n@@ -0,0 +1 @@\n+a\n"},
		{name: "to empty", a: "a\nb\n", b: "", want: "--- A\n+++ B\n@@ -1,2 +0,0 @@\n-a\n-b\n"},
		{name: "two hunks", a: "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", b: "one\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\ntwelve\n",
			want: "--- A\n+++ B\n@@ -1,4 +1,4 @@\n-1\n+one\n 2\n 3\n 4\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+twelve\n"},
		{name: "crlf is a line break", a: "a\r\nb\r\n", b: "a\nb\n", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Unified("A", []byte(tc.a), "B", []byte(tc.b)); got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// replay rebuilds b from a and the script, checking that the script is
// an edit of a into b.
func replay(t testing.TB, a, b []string, ops []op) {
	var gotA, gotB []string
	for _, o := range ops {
		switch o.kind {
		case ' ':
			gotA, gotB = append(gotA, o.text), append(gotB, o.text)
		case '-':
			gotA = append(gotA, o.text)
		case '+':
			gotB = append(gotB, o.text)
		}
	}
	if strings.Join(gotA, "\n") != strings.Join(a, "\n") || strings.Join(gotB, "\n") != strings.Join(b, "\n") {
		t.Fatalf("script does not turn %q into %q: %+v", a, b, ops)
	}
}

func FuzzEditScript(f *testing.F) {
	f.Add("a\nb\nc", "a\nc\nd")
	f.Add("", "x")
	f.Add("x\nx\nx", "x")
	f.Fuzz(func(t *testing.T, a, b string) {
		la, lb := lines([]byte(a)), lines([]byte(b))
		ops := editScript(la, lb)
		if ops == nil {
			if strings.Join(la, "\n") != strings.Join(lb, "\n") {
				t.Fatalf("no script for different documents %q %q", a, b)
			}
			return
		}
		replay(t, la, lb, ops)
		_ = Unified("a", []byte(a), "b", []byte(b))
	})
}

func TestEditScriptTooFarApart(t *testing.T) {
	var a, b []string
	for i := range maxEdits {
		a = append(a, "a"+strings.Repeat("x", i%7))
		b = append(b, "b"+strings.Repeat("y", i%5))
	}
	ops := editScript(a, b)
	replay(t, a, b, ops)
	if len(ops) != len(a)+len(b) {
		t.Fatalf("%d ops, want every line replaced", len(ops))
	}
}

func TestSummarize(t *testing.T) {
	parse := func(doc string) *config.Config {
		t.Helper()
		c, err := config.Parse("mesh.yaml", []byte(doc), config.ServedByMeshKit(), config.SkipFileChecks())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := `listeners:
  - name: web
    address: 127.0.0.1:8080
    filters: [{ headers: { request_add: { x-a: "1" } } }]
    virtual_hosts:
      - name: shop
        routes: [{ match: { path_prefix: / }, cluster: shop }]
clusters:
  - name: shop
    endpoints: [127.0.0.1:9001]
  - name: old
    endpoints: [127.0.0.1:9002]
`
	next := `listeners:
  - name: web
    address: 127.0.0.1:8081
    filters: [{ headers: { request_add: { x-a: "2" } } }, { fault: { abort: { status: 503, percent: 1 } } }]
    virtual_hosts:
      - name: shop
        routes: [{ match: { path_prefix: / }, cluster: shop-v2 }]
      - name: api
        domains: [api.example]
        routes: [{ match: { path_prefix: / }, cluster: shop }]
clusters:
  - name: shop
    endpoints: [127.0.0.1:9001]
  - name: shop-v2
    endpoints: [127.0.0.1:9003]
`
	got := Summarize(parse(base), parse(next))
	want := []string{
		"listener web: virtual_host shop: routes changed, virtual_host api added, filters [headers] -> [headers, fault], address changed",
		"cluster shop-v2 added",
		"cluster old removed",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := Summarize(nil, parse(base)); strings.Join(got, "; ") != "listener web added; cluster shop added; cluster old added" {
		t.Fatalf("first version: %q", got)
	}
	if got := Summarize(parse(base), parse(base)); len(got) != 0 {
		t.Fatalf("equal: %q", got)
	}
}

func TestAuthor(t *testing.T) {
	ctx := WithAuthor(context.Background(), "alice@host")
	if AuthorFrom(ctx) != "alice@host" || AuthorFrom(context.Background()) != "" {
		t.Fatal("author not carried")
	}
	if got := CleanAuthor("a\x1b[31mb\n" + strings.Repeat("x", 300)); len(got) != MaxAuthor || !strings.HasPrefix(got, "a?[31mb?x") {
		t.Fatalf("CleanAuthor: %q", got)
	}
}

func TestKeys(t *testing.T) {
	if Key(42) != "/config/history/0000000000000042" {
		t.Fatal(Key(42))
	}
	if n, err := NumberOfKey(Key(42)); n != 42 || err != nil {
		t.Fatal(n, err)
	}
	for _, bad := range []string{"/other/1", KeyPrefix + "x", KeyPrefix + "0", KeyPrefix + "-3"} {
		if _, err := NumberOfKey(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

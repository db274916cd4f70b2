package pathnorm

import (
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	norm := Options{Normalize: true}
	all := Options{Normalize: true, MergeSlashes: true}
	tests := []struct {
		name string
		in   string
		o    Options
		want string
		res  Result
	}{
		{"already normal", "/a/b/c", all, "/a/b/c", Forward},
		{"root", "/", all, "/", Forward},
		{"dot dot", "/public/../admin", norm, "/admin", Forward},
		{"dot", "/a/./b", norm, "/a/b", Forward},
		{"trailing dot dot", "/a/b/..", norm, "/a/", Forward},
		{"trailing dot", "/a/b/.", norm, "/a/b/", Forward},
		{"above the root", "/../../etc/passwd", norm, "/etc/passwd", Forward},
		{"only dots", "/..", norm, "/", Forward},
		{"encoded dots", "/public/%2e%2e/admin", norm, "/admin", Forward},
		{"encoded dots upper", "/public/%2E%2E/admin", norm, "/admin", Forward},
		{"mixed encoded dot", "/a/.%2e/b", norm, "/b", Forward},
		{"dots inside a name stay", "/a/..b/c..", norm, "/a/..b/c..", Forward},
		{"unreserved decoded", "/%7Euser/%41bc", norm, "/~user/Abc", Forward},
		{"reserved kept, hex upper", "/a%3fb/%e2%82%ac", norm, "/a%3Fb/%E2%82%AC", Forward},
		{"trailing slash kept", "/a/b/", norm, "/a/b/", Forward},
		{"double slash kept without merge", "//admin", norm, "//admin", Forward},
		{"merge slashes", "//admin///x", all, "/admin/x", Forward},
		{"merge only", "/a//b/../c", Options{MergeSlashes: true}, "/a/b/../c", Forward},
		{"dot dot after empty segment", "/a//../b", norm, "/a/b", Forward},
		{"escaped slash kept", "/a%2fb", norm, "/a%2Fb", Forward},
		{"escaped slash rejected", "/a%2Fb", Options{Normalize: true, EscapedSlashes: RejectEscapedSlashes}, "", Reject},
		{"escaped backslash rejected", "/a%5cb", Options{EscapedSlashes: RejectEscapedSlashes}, "", Reject},
		{"escaped slash forwarded", "/a%2F..%2Fadmin", Options{Normalize: true, EscapedSlashes: UnescapeAndForward}, "/admin", Forward},
		{"escaped backslash forwarded", "/a%5Cb", Options{EscapedSlashes: UnescapeAndForward}, "/a/b", Forward},
		{"escaped slash redirected", "/a%2Fb", Options{EscapedSlashes: UnescapeAndRedirect}, "/a/b", Redirect},
		{"fragment", "/a#b", all, "", Reject},
		{"raw backslash", `/a\..\admin`, all, "", Reject},
		{"bad escape", "/a%zz", all, "", Reject},
		{"truncated escape", "/a%2", all, "", Reject},
		{"control char", "/a\x01b", all, "", Reject},
		{"space", "/a b", all, "", Reject},
		{"off: dots untouched", "/a/../b", Options{}, "/a/../b", Forward},
		{"off: still refuses a fragment", "/a#b", Options{}, "", Reject},
		{"asterisk form", "*", all, "*", Forward},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, res := Path(nil, []byte(tc.in), tc.o)
			if res != tc.res || res != Reject && string(got) != tc.want {
				t.Fatalf("Path(%q) = %q, %v; want %q, %v", tc.in, got, res, tc.want, tc.res)
			}
		})
	}
}

// TestNormalPathNotCopied: the common case returns the input itself.
func TestNormalPathNotCopied(t *testing.T) {
	in := []byte("/api/v1/items/42")
	got, _ := Path(nil, in, Options{Normalize: true, MergeSlashes: true})
	if &got[0] != &in[0] {
		t.Fatal("a normal path was copied")
	}
}

func BenchmarkPath(b *testing.B) {
	o := Options{Normalize: true, MergeSlashes: true}
	for _, tc := range []struct{ name, in string }{{"normal", "/api/v1/items/42"}, {"dirty", "/api/v1/../v2/%7Eitems//42"}} {
		b.Run(tc.name, func(b *testing.B) {
			p := []byte(tc.in)
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = Path(buf, p, o)
			}
		})
	}
}

// FuzzPath checks invariants on any input: a forwarded path is idempotent
// under the same options, has no dot segments (when normalizing) and no
// double slashes (when merging), and never grows beyond the input.
func FuzzPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", "//a//b", "/a%2Fb", "/a/./b/", "/%7E", "/..", "/a#b"} {
		f.Add(s, true, true, uint8(0))
	}
	f.Fuzz(func(t *testing.T, in string, normalize, merge bool, esc uint8) {
		o := Options{Normalize: normalize, MergeSlashes: merge, EscapedSlashes: EscapedSlashes(esc % 4)}
		out, res := Path(nil, []byte(in), o)
		if res == Reject {
			return
		}
		if len(out) > len(in)+1 {
			t.Fatalf("Path(%q) grew to %q", in, out)
		}
		again, res2 := Path(nil, append([]byte(nil), out...), o)
		if res2 == Reject || string(again) != string(out) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, out, again, res2)
		}
		if strings.HasPrefix(in, "/") && normalize {
			for _, seg := range strings.Split(string(out), "/") {
				if seg == "." || seg == ".." {
					t.Fatalf("Path(%q) = %q keeps a dot segment", in, out)
				}
			}
		}
		if merge && strings.Contains(string(out), "//") {
			t.Fatalf("Path(%q) = %q keeps a double slash", in, out)
		}
	})
}

package main

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/serve"
)

// splitArgs splits a command line on spaces, keeping "double quoted"
// words whole.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, seen := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, seen = !quoted, true
		case r == ' ' && !quoted:
			if seen || cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
			seen = false
		default:
			cur.WriteRune(r)
		}
	}
	if seen || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// TestRolloutDocWalkthrough runs the walkthrough of docs/rollout.md: its
// yaml blocks are the files their first comment names, and each omnictl
// command's output must be what the page shows, digests, times and column
// padding aside.
func TestRolloutDocWalkthrough(t *testing.T) {
	f, err := os.Open("../../docs/rollout.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	var (
		cmds  []docCommand
		block string
		file  *strings.Builder
		name  string
		cur   *docCommand
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			switch {
			case block == "yaml" && name != "":
				if err := os.WriteFile(filepath.Join(dir, name), []byte(file.String()), 0o600); err != nil {
					t.Fatal(err)
				}
				block, name = "", ""
			case block != "":
				block = ""
			default:
				block = strings.TrimPrefix(line, "```")
				file = &strings.Builder{}
			}
			cur = nil
			continue
		}
		switch block {
		case "yaml":
			if n, ok := strings.CutPrefix(line, "# "); ok && name == "" && file.Len() == 0 {
				name = n
				continue
			}
			file.WriteString(line + "\n")
		case "console":
			if rest, ok := strings.CutPrefix(line, "$ omnictl "); ok {
				cmds = append(cmds, docCommand{args: splitArgs(rest)})
				cur = &cmds[len(cmds)-1]
			} else if cur != nil {
				cur.want = append(cur.want, line)
			}
		}
	}
	if len(cmds) < 8 {
		t.Fatalf("found %d omnictl commands in docs/rollout.md", len(cmds))
	}
	p, err := serve.Start(serve.Options{XDSAddress: "127.0.0.1:0", APIAddress: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"),
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	}()
	t.Setenv("OMNICTL_AUTHOR", "ops@host")
	t.Chdir(dir)
	blank := []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`\b[0-9a-f]{16}\b`), "DIGEST"},
		{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`), "TIME"},
		{regexp.MustCompile(`[ \t]+`), " "},
	}
	norm := func(s string) string {
		for _, b := range blank {
			s = b.re.ReplaceAllString(s, b.with)
		}
		return strings.TrimSpace(s)
	}
	for _, c := range cmds {
		name := strings.Join(c.args, " ")
		out, _, err := run(context.Background(), p.APIAddr().String(), c.args...)
		if err != nil {
			out += "omnictl: " + err.Error() + "\n"
		}
		if got, want := norm(out), norm(strings.Join(c.want, "\n")); got != want {
			t.Fatalf("omnictl %s: output differs from the doc\n got: %q\nwant: %q", name, got, want)
		}
	}
}

package main

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// docCommand is one "$ omnictl ..." line of docs/omnictl.md with the output
// printed under it.
type docCommand struct {
	args []string
	want []string
}

// readDoc returns the first yaml block and the omnictl commands of the
// console blocks; other commands (curl) are left to the reader.
func readDoc(t *testing.T, path string) (yamlBlock string, cmds []docCommand) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		block   string // "", "yaml", "console", "other"
		yamlBuf strings.Builder
		cur     *docCommand
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			switch {
			case block != "":
				block = ""
			case line == "```yaml" && yamlBuf.Len() == 0:
				block = "yaml"
			case line == "```console":
				block = "console"
			default:
				block = "other"
			}
			cur = nil
			continue
		}
		switch block {
		case "yaml":
			yamlBuf.WriteString(line + "\n")
		case "console":
			if rest, ok := strings.CutPrefix(line, "$ "); ok {
				cur = nil
				if fields := strings.Fields(rest); fields[0] == "omnictl" {
					cmds = append(cmds, docCommand{args: fields[1:]})
					cur = &cmds[len(cmds)-1]
				}
			} else if cur != nil {
				cur.want = append(cur.want, line)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return yamlBuf.String(), cmds
}

// normalize blanks what changes from run to run (versions, times) and the
// column padding that follows from it.
func normalize(s string) string {
	for _, r := range []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`version [0-9a-f]+`), "version V"},
		{regexp.MustCompile(`expires in \S+`), "expires in T"},
		{regexp.MustCompile(`yes \(\S+\)`), "yes (T)"},
		{regexp.MustCompile(`[ \t]+`), " "},
	} {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return strings.TrimSpace(s)
}

// TestDocWalkthrough runs every omnictl command of docs/omnictl.md, in
// order, and checks the output the page shows.
func TestDocWalkthrough(t *testing.T) {
	meshYAML, cmds := readDoc(t, "../../docs/omnictl.md")
	if len(cmds) < 5 {
		t.Fatalf("found %d omnictl commands in the doc", len(cmds))
	}
	addr, _ := startMeshKitAPI(t, proxyList{{
		NodeId: "edge-1", Replica: "meshkit-a", Cluster: "edge", Kind: "omnirelay", Build: "dev", Connected: true,
		ConnectedSince: timestamppb.New(time.Now().Add(-100 * time.Second)),
		Acked: map[string]string{
			"type.googleapis.com/envoy.config.cluster.v3.Cluster":   "v7",
			"type.googleapis.com/envoy.config.listener.v3.Listener": "v7",
		},
	}})
	dir := t.TempDir()
	for name, data := range map[string]string{"mesh.yaml": meshYAML, "bad.yaml": invalidConfig} {
		if err := os.WriteFile(dir+"/"+name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	for _, c := range cmds {
		name := strings.Join(c.args, " ")
		if strings.Contains(name, "--heartbeat") {
			continue // runs until interrupted: TestRegisterHeartbeat covers it
		}
		t.Run(name, func(t *testing.T) {
			out, _, err := run(t.Context(), addr, c.args...)
			if err != nil {
				out += "omnictl: " + err.Error() + "\n"
			}
			got, want := normalize(out), normalize(strings.Join(c.want, "\n"))
			if got != want {
				t.Fatalf("output differs from the doc\n got: %q\nwant: %q", got, want)
			}
		})
	}
}

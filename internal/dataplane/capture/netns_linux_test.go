package capture

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests below build two network namespaces joined by a veth pair,
// workload A (10.77.0.1, fd00:77::1) and peer B (10.77.0.2, fd00:77::2), and
// run each role as a child process of the test binary inside its namespace:
// sockets belong to the namespace of the thread that made them, so a process
// per namespace is the one reliable way to place them.

const childEnv = "OMNIRELAY_CAPTURE_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		if err := dropTo(os.Getenv("CHILD_UID"), os.Getenv("CHILD_GID")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		if err := child(role, os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dropTo switches the child to uid/gid (when set) once it is inside its
// namespace: `ip netns exec` itself needs root to enter it.
func dropTo(uid, gid string) error {
	if gid != "" {
		g, _ := strconv.Atoi(gid)
		if err := syscall.Setgroups(nil); err != nil {
			return err
		}
		if err := syscall.Setgid(g); err != nil {
			return err
		}
	}
	if uid != "" {
		u, _ := strconv.Atoi(uid)
		if err := syscall.Setuid(u); err != nil {
			return err
		}
	}
	return nil
}

// child runs one role. arg is the role's single argument.
func child(role, arg string) error {
	ctx := context.Background()
	switch role {
	case "install":
		var a struct {
			Config  Config
			Backend Backend
		}
		if err := json.Unmarshal([]byte(arg), &a); err != nil {
			return err
		}
		return Install(ctx, a.Config, a.Backend)
	case "cleanup":
		return Cleanup(ctx, Backend(arg))
	case "serve": // arg: name; listens on every port of $PORTS, answers its name
		var ls []net.Listener
		for _, p := range strings.Fields(os.Getenv("PORTS")) {
			l, err := net.Listen("tcp", net.JoinHostPort("::", p))
			if err != nil {
				return err
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s\n", arg)
					c.Close()
				}
			}()
		}
		fmt.Println("ready")
		select {}
	case "sidecar": // listens on the capture ports, answers what it recovered
		for _, p := range []struct {
			port string
			name string
		}{{"15001", "sidecar-out"}, {"15006", "sidecar-in"}} {
			l, err := net.Listen("tcp", net.JoinHostPort("::", p.port))
			if err != nil {
				return err
			}
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					dst, ok, err := OriginalDst(c)
					fmt.Fprintf(c, "%s %s %v %v\n", p.name, dst, ok, err)
					c.Close()
				}
			}()
		}
		fmt.Println("ready")
		select {}
	case "dial", "dial-mark": // arg: address; prints the line the peer sent
		d := net.Dialer{Timeout: 3 * time.Second}
		if role == "dial-mark" {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, testMark)
				}); err != nil {
					return err
				}
				return serr
			}
		}
		c, err := d.Dial("tcp", arg)
		if err != nil {
			fmt.Println("dial error:", err)
			return nil
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Println("read error:", err)
			return nil
		}
		fmt.Print(line)
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

const (
	testUID  = 1337
	testGID  = 1338
	testMark = 0x539
)

type netns struct {
	t    *testing.T
	bin  string // a copy of the test binary others than root may run
	a, b string
}

// needNetns skips a test that cannot run here, saying why; with
// OMNIRELAY_REQUIRE_NETNS set (CI sets it) it fails instead, so CI never
// skips these tests silently.
func needNetns(t *testing.T) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("OMNIRELAY_REQUIRE_NETNS") != "" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root to create network namespaces (CI runs as root)")
	}
	for _, c := range []string{"ip", "nft", "iptables-restore", "ip6tables-restore"} {
		if _, err := exec.LookPath(c); err != nil {
			skip("needs %s (CI installs iproute2, nftables and iptables)", c)
		}
	}
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newNetns(t *testing.T) *netns {
	needNetns(t)
	n := &netns{t: t, a: fmt.Sprintf("orcapA%d", os.Getpid()), b: fmt.Sprintf("orcapB%d", os.Getpid())}
	for _, ns := range []string{n.a, n.b} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", n.a, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", n.b)
	for _, x := range []struct{ ns, dev, v4, v6 string }{{n.a, "vA", "10.77.0.1/24", "fd00:77::1/64"}, {n.b, "vB", "10.77.0.2/24", "fd00:77::2/64"}} {
		sh(t, "ip", "-n", x.ns, "addr", "add", x.v4, "dev", x.dev)
		sh(t, "ip", "-n", x.ns, "addr", "add", x.v6, "dev", x.dev, "nodad")
		sh(t, "ip", "-n", x.ns, "link", "set", x.dev, "up")
	}
	// The uid-1337 child must be able to execute the binary: copy it where
	// every user may.
	dir, err := os.MkdirTemp("", "capturetest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	n.bin = filepath.Join(dir, "capture.test")
	if err := os.WriteFile(n.bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

// cmd returns the command running role in namespace ns, as uid/gid when
// cred is set.
func (n *netns) cmd(ns, role, arg string, cred *syscall.Credential, env ...string) *exec.Cmd {
	c := exec.Command("ip", "netns", "exec", ns, n.bin, "-test.run=^$", arg)
	c.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	if cred != nil {
		c.Env = append(c.Env, fmt.Sprintf("CHILD_UID=%d", cred.Uid), fmt.Sprintf("CHILD_GID=%d", cred.Gid))
	}
	return c
}

// start runs a long-lived role and waits for it to say it is ready.
func (n *netns) start(ns, role, arg string, env ...string) {
	n.t.Helper()
	c := n.cmd(ns, role, arg, nil, env...)
	out, err := c.StdoutPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		n.t.Fatalf("%s in %s did not start: %q %v", role, ns, line, err)
	}
}

// run runs a short role and returns what it printed (stdout and stderr).
func (n *netns) run(ns, role, arg string, cred *syscall.Credential) (string, error) {
	out, err := n.cmd(ns, role, arg, cred).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (n *netns) install(c Config, b Backend) {
	n.t.Helper()
	arg, _ := json.Marshal(struct {
		Config  Config
		Backend Backend
	}{c, b})
	if out, err := n.run(n.a, "install", string(arg), nil); err != nil {
		n.t.Fatalf("install: %v: %s", err, out)
	}
}

// ruleset is what the packet filter of ns holds, for before/after checks:
// nft's listing, and the rules and chains iptables shows (iptables-nft keeps
// the empty base chains it registered once, which hold no rule).
func ruleset(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(sh(t, "ip", "netns", "exec", ns, "nft", "list", "ruleset"), "\n") {
		b.WriteString(l + "\n")
	}
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		for _, l := range strings.Split(sh(t, "ip", "netns", "exec", ns, bin, "-t", "nat"), "\n") {
			if strings.HasPrefix(l, "-A") || strings.HasPrefix(l, ":") && !builtin(l) {
				b.WriteString(bin + ": " + l + "\n")
			}
		}
	}
	return b.String()
}

func builtin(chainLine string) bool {
	for _, c := range []string{":PREROUTING ", ":INPUT ", ":OUTPUT ", ":POSTROUTING "} {
		if strings.HasPrefix(chainLine, c) {
			return true
		}
	}
	return false
}

// rulesOnly drops iptables-nft's empty base chains from nft's listing.
func rulesOnly(s string) string {
	var keep []string
	var table []string
	hasRule := false
	for _, l := range strings.Split(s, "\n") {
		tl := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "table "):
			table, hasRule = []string{l}, false
		case l == "}":
			if hasRule {
				keep = append(keep, table...)
				keep = append(keep, l)
			}
			table = nil
		case table != nil:
			table = append(table, l)
			if tl != "" && tl != "}" && !strings.HasPrefix(tl, "chain ") && !strings.HasPrefix(tl, "type ") {
				hasRule = true
			}
		case tl != "":
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func testConfig() Config {
	uid, gid := uint32(testUID), uint32(testGID)
	return Config{
		ProxyUID:             &uid,
		ProxyGID:             &gid,
		ProxyMark:            testMark,
		ExcludeInboundPorts:  []uint16{2222},
		ExcludeOutboundPorts: []uint16{9999},
	}
}

func TestCaptureInNetns(t *testing.T) {
	for _, backend := range []Backend{NFT, IPTables} {
		t.Run(string(backend), func(t *testing.T) {
			n := newNetns(t)
			before := ruleset(t, n.a)
			n.start(n.b, "serve", "B", "PORTS=80 9999")
			n.start(n.a, "serve", "app", "PORTS=2222 8080")
			n.start(n.a, "sidecar", "")
			n.install(testConfig(), backend)
			root := &syscall.Credential{Uid: 0, Gid: 0}
			cases := []struct {
				name, ns, role, addr string
				cred                 *syscall.Credential
				want                 string
			}{
				{"outbound v4 captured with its original destination", n.a, "dial", "10.77.0.2:80", root, "sidecar-out 10.77.0.2:80 true <nil>"},
				{"outbound v6 captured with its original destination", n.a, "dial", "[fd00:77::2]:80", root, "sidecar-out [fd00:77::2]:80 true <nil>"},
				{"the sidecar's uid is not looped", n.a, "dial", "10.77.0.2:80", &syscall.Credential{Uid: testUID, Gid: testUID}, "B"},
				{"the sidecar's gid is not looped", n.a, "dial", "[fd00:77::2]:80", &syscall.Credential{Uid: 0, Gid: testGID}, "B"},
				{"the sidecar's mark is not looped", n.a, "dial-mark", "10.77.0.2:80", root, "B"},
				{"loopback is not captured", n.a, "dial", "127.0.0.1:2222", root, "app"},
				{"excluded outbound port", n.a, "dial", "10.77.0.2:9999", root, "B"},
				{"inbound v4 captured with its original destination", n.b, "dial", "10.77.0.1:8080", root, "sidecar-in 10.77.0.1:8080 true <nil>"},
				{"inbound v6 captured with its original destination", n.b, "dial", "[fd00:77::1]:8080", root, "sidecar-in [fd00:77::1]:8080 true <nil>"},
				{"excluded inbound port reaches the app", n.b, "dial", "10.77.0.1:2222", root, "app"},
			}
			check := func(t *testing.T) {
				for _, tc := range cases {
					out, err := n.run(tc.ns, tc.role, tc.addr, tc.cred)
					if err != nil || out != tc.want {
						t.Errorf("%s: dial %s from %s: got %q (%v), want %q", tc.name, tc.addr, tc.ns, out, err, tc.want)
					}
				}
			}
			check(t)

			// Installing again replaces the rules rather than adding a
			// second copy.
			once := ruleset(t, n.a)
			n.install(testConfig(), backend)
			if twice := ruleset(t, n.a); stripCounters(twice) != stripCounters(once) {
				t.Errorf("a second install changed the rule set:\nonce:\n%s\ntwice:\n%s", once, twice)
			}
			check(t)

			if out, err := n.run(n.a, "cleanup", string(backend), nil); err != nil {
				t.Fatalf("cleanup: %v: %s", err, out)
			}
			if after := ruleset(t, n.a); rulesOnly(after) != rulesOnly(before) {
				t.Errorf("cleanup left rules behind:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			for _, tc := range []struct{ ns, addr, want string }{{n.a, "10.77.0.2:80", "B"}, {n.b, "10.77.0.1:8080", "app"}} {
				if out, _ := n.run(tc.ns, "dial", tc.addr, root); out != tc.want {
					t.Errorf("after cleanup, dial %s from %s: got %q, want %q", tc.addr, tc.ns, out, tc.want)
				}
			}
			// A second cleanup has nothing to do and succeeds.
			if out, err := n.run(n.a, "cleanup", string(backend), nil); err != nil {
				t.Errorf("second cleanup: %v: %s", err, out)
			}
		})
	}
}

func TestInstallWithoutNetAdmin(t *testing.T) {
	n := newNetns(t)
	before := ruleset(t, n.a)
	arg, _ := json.Marshal(struct {
		Config  Config
		Backend Backend
	}{testConfig(), NFT})
	out, err := n.run(n.a, "install", string(arg), &syscall.Credential{Uid: testUID, Gid: testUID})
	if err == nil || !strings.Contains(out, "CAP_NET_ADMIN") {
		t.Fatalf("install without CAP_NET_ADMIN: err %v, output %q; want a failure naming CAP_NET_ADMIN", err, out)
	}
	if after := ruleset(t, n.a); after != before {
		t.Errorf("a refused install changed the rule set:\n%s", after)
	}
}

// TestNFTRulesetAccepted checks every generated script with nft's own
// parser (nft -c) in a scratch namespace, so a syntax slip fails here and not
// on a user's host.
func TestNFTRulesetAccepted(t *testing.T) {
	needNetns(t)
	ns := fmt.Sprintf("orcapC%d", os.Getpid())
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	uid := uint32(7)
	for _, tc := range []struct {
		name string
		c    Config
	}{
		{"defaults", Config{}},
		{"everything", testConfig()},
		{"include v4 only", Config{IncludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}},
		{"include both families, exclude both", Config{ProxyUID: &uid,
			IncludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
			ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("fd00::1/128")}}},
		{"inbound ports listed", Config{InboundPorts: []uint16{80, 443}}},
		{"outbound only", Config{NoInbound: true}},
		{"inbound only", Config{NoOutbound: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := exec.Command("ip", "netns", "exec", ns, "nft", "-c", "-f", "-")
			c.Stdin = strings.NewReader(NFTRuleset(tc.c))
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("nft -c refused the script: %v: %s\n%s", err, out, NFTRuleset(tc.c))
			}
			for _, v6 := range []bool{false, true} {
				bin := "iptables-restore"
				if v6 {
					bin = "ip6tables-restore"
				}
				c := exec.Command("ip", "netns", "exec", ns, bin, "--test", "--noflush")
				c.Stdin = strings.NewReader(IPTablesRestore(tc.c, v6))
				if out, err := c.CombinedOutput(); err != nil {
					t.Fatalf("%s --test refused the input: %v: %s\n%s", bin, err, out, IPTablesRestore(tc.c, v6))
				}
			}
		})
	}
}

// stripCounters drops packet counters, which traffic between two listings
// changes, and sorts the lines: a reinstall may list chains in another
// order.
func stripCounters(s string) string {
	lines := strings.Split(counters.ReplaceAllString(s, ""), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+ |\[\d+:\d+\]`)

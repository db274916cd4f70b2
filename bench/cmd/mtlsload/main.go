// Command mtlsload is the load generator of the mTLS rows of bench/run.sh.
// wrk cannot present a client certificate and h2load cannot either, so this
// closed-loop HTTP/1.1 client does the job for every proxy alike, over
// plaintext or TLS 1.3 with a client certificate, in two modes:
//
//   - keepalive: -conns connections, each sending its next request as soon
//     as the previous response is read (as wrk does);
//   - newconn: -conns workers, each opening a new connection for every
//     request and closing it after the response: one full handshake per
//     request. The client keeps no session cache, so no handshake resumes.
//
// Both modes run -warmup and then -duration on the same connections, and
// print what completed in the measured phase: requests, new connections,
// what TLS negotiated (version, key exchange, resumptions, so that the
// script can check it measured full TLS 1.3 handshakes), and with -cpu-pgid
// the CPU time the proxy's process group used in that phase. Sampling the
// proxy's CPU here rather than around the whole command keeps the
// keep-alive connections' handshakes, made during warm-up, out of the
// per-request figure.
//
// The key exchange is X25519 by default for every peer: Go's default list
// starts with the hybrid X25519MLKEM768, which the Go proxies would accept
// and OpenSSL 3.0 (HAProxy, nginx on Debian 12) does not know, so the peers
// would otherwise not do the same work.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mtlsload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mtlsload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:18443", "target host:port")
	path := fs.String("path", "/", "request path")
	useTLS := fs.Bool("tls", false, "speak TLS 1.3 (with -cert/-key: mTLS)")
	certFile := fs.String("cert", "", "client certificate chain (PEM)")
	keyFile := fs.String("key", "", "client private key (PEM)")
	caFile := fs.String("ca", "", "verify the server's chain against these roots (PEM); without it the server is not verified")
	curve := fs.String("curve", "x25519", "key exchange offered: x25519, p256, or go-default (Go's list, X25519MLKEM768 first)")
	mode := fs.String("mode", "keepalive", "keepalive, or newconn (a new connection, and handshake, per request)")
	conns := fs.Int("conns", 64, "connections (keepalive) or concurrent workers (newconn)")
	warmup := fs.Duration("warmup", 0, "unmeasured phase before -duration, on the same connections (keepalive: their handshakes fall in it)")
	duration := fs.Duration("duration", 10*time.Second, "measured phase")
	cpuPGID := fs.Int("cpu-pgid", 0, "also report the CPU time of this process group (Linux /proc) over the measured phase")
	clkTck := fs.Int("clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	timeout := fs.Duration("timeout", 5*time.Second, "per connect, handshake and request")
	format := fs.String("format", "text", "output: text, or kv (one line of key=value for scripts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *format != "text" && *format != "kv" {
		return fmt.Errorf("-format %q: want text or kv", *format)
	}
	if *mode != "keepalive" && *mode != "newconn" {
		return fmt.Errorf("-mode %q: want keepalive or newconn", *mode)
	}
	if *conns < 1 || *duration <= 0 || *warmup < 0 || *clkTck < 1 {
		return errors.New("-conns, -duration and -clk-tck must be positive, -warmup not negative")
	}
	cfg := loadConfig{
		addr:     *addr,
		request:  []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *addr + "\r\nUser-Agent: mtlsload\r\n\r\n"),
		newConn:  *mode == "newconn",
		conns:    *conns,
		warmup:   *warmup,
		duration: *duration,
		timeout:  *timeout,
	}
	if *cpuPGID > 0 {
		cfg.cpu = groupCPU(*cpuPGID, *clkTck)
	}
	if *useTLS {
		tc, err := clientTLS(*certFile, *keyFile, *caFile, *curve)
		if err != nil {
			return err
		}
		cfg.tls = tc
	}
	res, err := runLoad(ctx, cfg)
	if err != nil {
		return err
	}
	if res.errors > 0 {
		fmt.Fprintf(stderr, "mtlsload: %d errors; first: %v\n", res.errors, res.firstErr)
	}
	if res.cpuErr != nil {
		return fmt.Errorf("CPU time of group %d: %w", *cpuPGID, res.cpuErr)
	}
	writeResult(stdout, *format, res)
	return nil
}

// clientTLS builds the client's TLS 1.3 config. There is no session cache:
// every handshake is a full one.
func clientTLS(certFile, keyFile, caFile, curve string) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"},
		// Verified below against -ca, or not at all: the proxies present
		// an SVID, whose identity is its URI SAN, not a host name.
		InsecureSkipVerify: true, //nolint:gosec // see above
	}
	switch curve {
	case "x25519":
		tc.CurvePreferences = []tls.CurveID{tls.X25519}
	case "p256":
		tc.CurvePreferences = []tls.CurveID{tls.CurveP256}
	case "go-default":
	default:
		return nil, fmt.Errorf("-curve %q: want x25519, p256 or go-default", curve)
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("-cert and -key go together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("-ca %s: no PEM certificates", caFile)
		}
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		}
	}
	return tc, nil
}

func writeResult(w io.Writer, format string, r result) {
	rps := 0.0
	if s := r.elapsed.Seconds(); s > 0 {
		rps = float64(r.requests) / s
	}
	tlsVersion, curve := "none", "none"
	if r.version != 0 {
		tlsVersion = tls.VersionName(r.version)
		curve = r.curve.String()
	}
	if format == "kv" {
		fmt.Fprintf(w, "requests=%d errors=%d non200=%d conns=%d resumed=%d elapsed_s=%.3f rps=%.1f cpu_s=%.3f tls=%s curve=%s\n",
			r.requests, r.errors, r.non200, r.dials, r.resumed, r.elapsed.Seconds(), rps, r.cpu.Seconds(),
			strings.ReplaceAll(tlsVersion, " ", ""), strings.ReplaceAll(curve, " ", ""))
		return
	}
	fmt.Fprintf(w, "%d requests in %.2fs: %.0f requests/s\n", r.requests, r.elapsed.Seconds(), rps)
	fmt.Fprintf(w, "connections opened: %d (%.0f/s), resumed handshakes: %d\n", r.dials, float64(r.dials)/r.elapsed.Seconds(), r.resumed)
	fmt.Fprintf(w, "errors: %d, non-200: %d; TLS: %s, key exchange %s\n", r.errors, r.non200, tlsVersion, curve)
	if r.cpu > 0 && r.requests > 0 {
		fmt.Fprintf(w, "CPU of the process group: %.3fs, %.1f µs per request, %.0f%% of a core\n",
			r.cpu.Seconds(), float64(r.cpu.Microseconds())/float64(r.requests), r.cpu.Seconds()/r.elapsed.Seconds()*100)
	}
}

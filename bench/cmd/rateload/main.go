// Command rateload is the fixed-rate HTTP/1.1 load generator of
// bench/run.sh, standing in for wrk2 (not packaged in Debian). It sends
// requests at a constant arrival rate whatever the server does (open loop)
// over a pool of keep-alive connections, and reports latency percentiles
// measured from each request's intended send time, so that a server stall is
// charged to every request it delayed (the coordinated-omission correction).
//
// The HTTP/1.1 client is hand-written rather than net/http so that the
// client's own cost and jitter, which land in every latency it reports, stay
// small and allocation-free next to the few tens of microseconds a proxy
// adds on loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
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
		fmt.Fprintln(os.Stderr, "rateload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rateload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "http://127.0.0.1:18080/", "target URL (http only)")
	method := fs.String("method", "GET", "request method (sent without a body)")
	rate := fs.Float64("rate", 1000, "requests per second")
	duration := fs.Duration("duration", 10*time.Second, "recorded phase length")
	warmup := fs.Duration("warmup", time.Second, "unrecorded phase at the same rate before the recorded one")
	conns := fs.Int("conns", 16, "connections; requests queue for a free one, still timed from their intended send time")
	timeout := fs.Duration("timeout", 5*time.Second, "per request, from its intended send time")
	spin := fs.Duration("spin", 50*time.Microsecond, "wake this much before each send time and busy-wait the rest (0: off)")
	format := fs.String("format", "text", "output: text, or kv (one line of key=value for scripts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *format != "text" && *format != "kv" {
		return fmt.Errorf("-format %q: want text or kv", *format)
	}
	addr, request, err := buildRequest(*rawURL, *method)
	if err != nil {
		return err
	}
	cfg := loadConfig{
		addr:     addr,
		request:  request,
		head:     strings.EqualFold(*method, "HEAD"),
		rate:     *rate,
		warmup:   *warmup,
		duration: *duration,
		conns:    *conns,
		timeout:  *timeout,
		spin:     *spin,
	}
	res, err := runLoad(ctx, cfg)
	if err != nil {
		return err
	}
	if res.errs > 0 {
		fmt.Fprintf(stderr, "rateload: %d of %d requests failed; first error: %v\n", res.errs, res.sent, res.firstErr)
	}
	if *format == "kv" {
		writeKV(stdout, res)
	} else {
		writeText(stdout, res, *rawURL)
	}
	if res.ok == 0 {
		return errors.New("no successful responses")
	}
	return nil
}

// buildRequest returns the address to dial and the bytes of the request.
func buildRequest(rawURL, method string) (string, []byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", nil, fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return "", nil, fmt.Errorf("-url %q: want http://host[:port]/path", rawURL)
	}
	for _, c := range method {
		if c <= ' ' || c >= 0x7f {
			return "", nil, fmt.Errorf("-method %q: not a token", method)
		}
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	req := method + " " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: omnirelay-rateload\r\n\r\n"
	return addr, []byte(req), nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func writeKV(w io.Writer, r *loadResult) {
	fmt.Fprintf(w, "rate=%g sent=%d ok=%d non2xx=%d errors=%d achieved_rps=%.1f "+
		"p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f "+
		"lag_p50_us=%.1f lag_p99_us=%.1f lag_max_us=%.1f\n",
		r.scheduled, r.sent, r.ok, r.non2xx, r.errs, r.achieved,
		us(r.hist.quantile(0.50)), us(r.hist.quantile(0.90)), us(r.hist.quantile(0.99)),
		us(r.hist.quantile(0.999)), us(time.Duration(r.hist.max)), us(r.hist.mean()),
		us(r.dispatch.quantile(0.50)), us(r.dispatch.quantile(0.99)), us(time.Duration(r.dispatch.max)))
}

func writeText(w io.Writer, r *loadResult, target string) {
	fmt.Fprintf(w, "%s: %g req/s scheduled, %.1f req/s completed over %v\n", target, r.scheduled, r.achieved, r.elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  requests %d sent, %d 2xx, %d other status, %d errors\n", r.sent, r.ok, r.non2xx, r.errs)
	fmt.Fprintf(w, "  latency from intended send time (coordinated-omission corrected):\n")
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		fmt.Fprintf(w, "    p%-5g %v\n", q*100, r.hist.quantile(q))
	}
	fmt.Fprintf(w, "    max    %v\n    mean   %v\n", time.Duration(r.hist.max), r.hist.mean())
	fmt.Fprintf(w, "  scheduler lag (included above): p50 %v, p99 %v, max %v\n",
		r.dispatch.quantile(0.5), r.dispatch.quantile(0.99), time.Duration(r.dispatch.max))
}

// Package dnsresolve resolves the host names of DNS clusters the way Envoy
// does: STRICT_DNS clusters keep the full set of addresses a name resolves
// to, re-resolved every dns_refresh_rate or, with respect_dns_ttl, when the
// records' TTL runs out; failures are retried at dns_failure_refresh_rate
// with the last good set kept meanwhile; dns_lookup_family picks A and/or
// AAAA records.
//
// Go's net.Resolver does not report record TTLs, so the queries are made
// here with golang.org/x/net/dns/dnsmessage (already in the module graph):
// UDP to the nameservers of /etc/resolv.conf (or the cluster's own), TCP
// when an answer is truncated, the next server on failure. Names listed in
// /etc/hosts resolve from it, as c-ares (Envoy's resolver) does.
package dnsresolve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Family is Envoy's dns_lookup_family.
type Family uint8

const (
	// Auto asks for AAAA and falls back to A when there is none (Envoy's
	// AUTO, its default).
	Auto Family = iota
	V4Only
	V6Only
	// V4Preferred asks for A and falls back to AAAA.
	V4Preferred
	// All asks for both and returns both.
	All
)

// Resolver makes DNS queries. The zero value reads /etc/resolv.conf and
// /etc/hosts on first use.
type Resolver struct {
	// Servers are nameserver addresses (ip:port); empty means the ones in
	// /etc/resolv.conf (127.0.0.1:53 if it names none).
	Servers []string
	// Timeout bounds one query to one server (default 2s).
	Timeout time.Duration
	// Hosts, when set, replaces /etc/hosts (tests set it to an empty map).
	Hosts map[string][]netip.Addr
}

// Answer is one resolution.
type Answer struct {
	Addrs []netip.Addr
	// TTL is the smallest TTL of the records used (0 for /etc/hosts).
	TTL time.Duration
}

// ErrNoRecords means the name exists but has no address of the family
// asked for, or does not exist (NXDOMAIN).
var ErrNoRecords = errors.New("dns: no address records")

// Resolve returns name's addresses for family.
func (r *Resolver) Resolve(ctx context.Context, name string, family Family) (Answer, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return Answer{Addrs: []netip.Addr{a}}, nil
	}
	if addrs := r.hostsLookup(name, family); len(addrs) > 0 {
		return Answer{Addrs: addrs}, nil
	}
	order := map[Family][]dnsmessage.Type{
		Auto: {dnsmessage.TypeAAAA, dnsmessage.TypeA}, V4Only: {dnsmessage.TypeA}, V6Only: {dnsmessage.TypeAAAA},
		V4Preferred: {dnsmessage.TypeA, dnsmessage.TypeAAAA}, All: {dnsmessage.TypeA, dnsmessage.TypeAAAA},
	}[family]
	var out Answer
	var firstErr error
	for _, qt := range order {
		a, err := r.query(ctx, name, qt)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if len(a.Addrs) == 0 {
			continue
		}
		if out.TTL == 0 || a.TTL < out.TTL {
			out.TTL = a.TTL
		}
		out.Addrs = append(out.Addrs, a.Addrs...)
		if family != All {
			break
		}
	}
	if len(out.Addrs) == 0 {
		if firstErr != nil && !errors.Is(firstErr, ErrNoRecords) {
			return Answer{}, firstErr
		}
		return Answer{}, fmt.Errorf("%w for %q", ErrNoRecords, name)
	}
	slices.SortFunc(out.Addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	out.Addrs = slices.Compact(out.Addrs)
	return out, nil
}

func (r *Resolver) servers() []string {
	if len(r.Servers) > 0 {
		return r.Servers
	}
	return systemServers()
}

func systemServers() []string {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return []string{"127.0.0.1:53"}
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == "nameserver" {
			if a, err := netip.ParseAddr(fs[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	if len(out) == 0 {
		return []string{"127.0.0.1:53"}
	}
	return out
}

func (r *Resolver) hostsLookup(name string, family Family) []netip.Addr {
	hosts := r.Hosts
	if hosts == nil {
		hosts = systemHosts()
	}
	var out []netip.Addr
	for _, a := range hosts[strings.ToLower(strings.TrimSuffix(name, "."))] {
		if family == V4Only && !a.Is4() || family == V6Only && !a.Is6() {
			continue
		}
		out = append(out, a)
	}
	return out
}

func systemHosts() map[string][]netip.Addr {
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return nil
	}
	m := map[string][]netip.Addr{}
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fs[0])
		if err != nil {
			continue
		}
		for _, h := range fs[1:] {
			h = strings.ToLower(h)
			m[h] = append(m[h], a.Unmap())
		}
	}
	return m
}

// query asks each server in turn for name's records of type qt.
func (r *Resolver) query(ctx context.Context, name string, qt dnsmessage.Type) (Answer, error) {
	fqdn := name
	if !strings.HasSuffix(fqdn, ".") {
		fqdn += "."
	}
	qn, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return Answer{}, fmt.Errorf("dns: name %q: %w", name, err)
	}
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	var lastErr error
	for _, srv := range r.servers() {
		if ctx.Err() != nil {
			return Answer{}, ctx.Err()
		}
		qctx, cancel := context.WithTimeout(ctx, timeout)
		a, err := exchange(qctx, srv, qn, qt)
		cancel()
		if err == nil || errors.Is(err, ErrNoRecords) {
			return a, err
		}
		lastErr = fmt.Errorf("dns: %s %v via %s: %w", name, qt, srv, err)
	}
	return Answer{}, lastErr
}

func exchange(ctx context.Context, server string, qn dnsmessage.Name, qt dnsmessage.Type) (Answer, error) {
	id := uint16(rand.Uint32())
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: qn, Type: qt, Class: dnsmessage.ClassINET}},
	}
	q, err := msg.Pack()
	if err != nil {
		return Answer{}, err
	}
	resp, err := roundTrip(ctx, "udp", server, q, id)
	if err != nil {
		return Answer{}, err
	}
	if resp.Header.Truncated {
		if resp, err = roundTrip(ctx, "tcp", server, q, id); err != nil {
			return Answer{}, err
		}
	}
	switch resp.Header.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return Answer{}, ErrNoRecords
	default:
		return Answer{}, fmt.Errorf("server answered %v", resp.Header.RCode)
	}
	var out Answer
	minTTL := uint32(0)
	for _, rr := range resp.Answers {
		var a netip.Addr
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			if qt != dnsmessage.TypeA {
				continue
			}
			a = netip.AddrFrom4(b.A)
		case *dnsmessage.AAAAResource:
			if qt != dnsmessage.TypeAAAA {
				continue
			}
			a = netip.AddrFrom16(b.AAAA)
		default:
			continue // CNAMEs: the recursive server already followed them
		}
		out.Addrs = append(out.Addrs, a)
		if minTTL == 0 || rr.Header.TTL < minTTL {
			minTTL = rr.Header.TTL
		}
	}
	out.TTL = time.Duration(minTTL) * time.Second
	return out, nil
}

func roundTrip(ctx context.Context, network, server string, q []byte, id uint16) (*dnsmessage.Message, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if network == "tcp" {
		q = append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	for {
		var n int
		if network == "tcp" {
			var l [2]byte
			if _, err := readFull(c, l[:]); err != nil {
				return nil, err
			}
			n = int(l[0])<<8 | int(l[1])
			if _, err := readFull(c, buf[:n]); err != nil {
				return nil, err
			}
		} else if n, err = c.Read(buf); err != nil {
			return nil, err
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil {
			if network == "udp" {
				continue // not a DNS answer: keep waiting for ours
			}
			return nil, fmt.Errorf("malformed answer: %w", err)
		}
		if m.Header.ID != id || !m.Header.Response {
			if network == "udp" {
				continue // a stray or spoofed datagram
			}
			return nil, errors.New("answer does not match the query")
		}
		return &m, nil
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func rand64(n uint64) uint64 { return rand.Uint64N(n) }

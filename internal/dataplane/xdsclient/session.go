package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// rawResource is one resource as a response carried it, before decoding.
type rawResource struct {
	name, version string
	body          *anypb.Any
	md            *corev3.Metadata
	err           error // the wrapper did not decode
}

// response is a discovery response of either protocol variant.
type response struct {
	typeURL, version, nonce string
	// full is true for SotW: the resources are the whole set of the type.
	full      bool
	resources []rawResource
	removed   []string
}

// transport is one ADS stream of either variant. Calls come from the
// session's goroutine, except recv, which has its own.
type transport interface {
	// subscribe sends the subscription of t (t.names; nil for a wildcard
	// type). old is what was subscribed before on this stream; first is
	// true for the first request of t's type on this stream.
	subscribe(t *typeState, old []string, first bool) error
	ack(t *typeState, u *update) error
	nack(t *typeState, nonce, detail string) error
	recv() (*response, error)
}

// maxDetail bounds a NACK's error_detail: a runtime error listing every
// problem of a large snapshot must not exceed the server's message limit.
const maxDetail = 16 << 10

// session is one stream's life. Its methods run on one goroutine.
type session struct {
	c      *Client
	addr   string
	tr     transport
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// sent is the subscription of each named type sent on this stream.
	sent map[string][]string
	// later carries delayed NACKs (see handle) and warming timeouts to the
	// session goroutine.
	later chan func() error
	got   bool
	// missingSince is when each referenced resource that has not arrived
	// was first found missing (key: missingRef.key); warmTimer fires at the
	// earliest initial-fetch deadline among them.
	missingSince map[string]time.Time
	gaveUpOn     map[string]bool // logged once each
	warmTimer    *time.Timer
	warmAt       time.Time
}

// assemble is assemble over the session's types, giving up on resources
// missing for longer than the initial fetch timeout, and arming the timer
// that retries when the next one times out.
func (s *session) assemble(pick func(*typeState) set) (*assembly, error) {
	timeout := s.c.opt.InitialFetchTimeout
	var gaveUp func(string, string) bool
	if timeout >= 0 {
		if timeout == 0 {
			timeout = DefaultInitialFetchTimeout
		}
		now := time.Now()
		gaveUp = func(typeURL, name string) bool {
			k := missingRef{typeURL, name}.key()
			since, ok := s.missingSince[k]
			if !ok || now.Sub(since) < timeout {
				return false
			}
			if !s.gaveUpOn[k] {
				s.gaveUpOn[k] = true
				s.c.log.Warn("xds resource not received within the initial fetch timeout; applying without it",
					"type", shortType(typeURL), "name", name, "timeout", timeout)
			}
			return true
		}
	}
	a, err := assemble(s.c.types, pick, gaveUp)
	var inc errIncomplete
	if gaveUp != nil && errors.As(err, &inc) && len(inc.refs) > 0 {
		now := time.Now()
		next := time.Time{}
		for _, r := range inc.refs {
			since, ok := s.missingSince[r.key()]
			if !ok {
				since = now
				s.missingSince[r.key()] = now
			}
			if at := since.Add(timeout); next.IsZero() || at.Before(next) {
				next = at
			}
		}
		s.armWarmTimer(next)
	}
	return a, err
}

// armWarmTimer makes the session retry warming updates at at, unless an
// earlier retry is already set.
func (s *session) armWarmTimer(at time.Time) {
	if s.warmTimer != nil && !s.warmAt.After(at) && time.Now().Before(s.warmAt) {
		return
	}
	if s.warmTimer != nil {
		s.warmTimer.Stop()
	}
	s.warmAt = at
	s.warmTimer = time.AfterFunc(time.Until(at), func() {
		select {
		case s.later <- s.retryWarming:
		case <-s.ctx.Done():
		}
	})
}

// retryWarming re-tries the first update still waiting for its
// dependants, now that some of them have timed out.
func (s *session) retryWarming() error {
	for _, u := range typeOrder {
		if t := s.c.types[u]; t.unanswered != nil {
			return s.tryApply(t)
		}
	}
	return nil
}

type recvResult struct {
	r   *response
	err error
}

func (s *session) run() (bool, error) {
	s.ctx, s.cancel = context.WithCancel(s.ctx)
	for _, t := range s.c.types {
		t.forget()
	}
	if err := s.resubscribe(true); err != nil {
		return false, err
	}
	in := make(chan recvResult)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			r, err := s.tr.recv()
			select {
			case in <- recvResult{r, err}:
			case <-s.ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case <-s.ctx.Done():
			return s.got, s.ctx.Err()
		case f := <-s.later:
			if err := f(); err != nil {
				return s.got, err
			}
		case rr := <-in:
			if rr.err != nil {
				return s.got, fmt.Errorf("ADS stream to %s: %w", s.addr, rr.err)
			}
			if !s.got {
				s.got = true
				s.c.setStatus(func(st *Status) { st.Connected, st.Address = true, s.addr })
				if s.c.opt.Stats != nil {
					s.c.opt.Stats.XDSConnected(true)
				}
				s.c.log.Info("xds stream up", "address", s.addr, "sotw", s.c.opt.SotW)
			}
			if err := s.handle(rr.r); err != nil {
				return s.got, err
			}
		}
	}
}

// end stops the receiver and forgets what only this stream knew: nonces,
// and updates that were waiting for their dependants (the next stream
// receives them again).
func (s *session) end() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.warmTimer != nil {
		s.warmTimer.Stop()
	}
	s.wg.Wait()
	for _, t := range s.c.types {
		t.forget()
	}
	if s.got {
		s.c.setStatus(func(st *Status) { st.Connected = false })
		if s.c.opt.Stats != nil {
			s.c.opt.Stats.XDSConnected(false)
		}
	}
}

func (s *session) count(t *typeState, result string) {
	if s.c.opt.Stats != nil {
		s.c.opt.Stats.XDSUpdate(shortType(t.url), result)
	}
}

func (s *session) nack(t *typeState, nonce, detail string) error {
	if len(detail) > maxDetail {
		detail = detail[:maxDetail] + "... (truncated)"
	}
	s.count(t, "nack")
	return s.tr.nack(t, nonce, detail)
}

// handle takes one response: decode and verify it (a failure is NACKed at
// once), make it the type's received set, adjust subscriptions to what the
// received listeners and clusters name, and apply what is complete.
func (s *session) handle(r *response) error {
	t := s.c.types[r.typeURL]
	if t == nil {
		unknown := newTypeState(r.typeURL)
		return s.nack(unknown, r.nonce, fmt.Sprintf("unsupported resource type %q", r.typeURL))
	}
	t.nonce = r.nonce
	rs, err := s.decode(t, r)
	if err != nil {
		s.c.log.Warn("xds update rejected", "type", shortType(t.url), "version", r.version, "error", err)
		s.c.setStatus(func(st *Status) { st.LastError = err.Error() })
		return s.nack(t, r.nonce, err.Error())
	}
	u := &update{version: r.version, nonce: r.nonce, key: contentKey(t.url, r.version, rs)}
	if u.key == t.rejectedKey {
		// A server re-sending what was just rejected (go-control-plane's
		// SotW server does, at once, after every NACK) gets the same NACK,
		// but later each time, so that the pair does not spin.
		t.rejectedCount = min(t.rejectedCount+1, 7)
		d := min(50*time.Millisecond<<t.rejectedCount, 5*time.Second)
		nonce, detail := r.nonce, t.rejectedDetail
		time.AfterFunc(d, func() {
			select {
			case s.later <- func() error { return s.nack(t, nonce, detail) }:
			case <-s.ctx.Done():
			}
		})
		return nil
	}
	t.take(set{resources: rs, version: r.version, seen: true})
	for n := range rs {
		k := missingRef{t.url, n}.key()
		delete(s.missingSince, k)
		delete(s.gaveUpOn, k)
	}
	t.unanswered = u
	if err := s.resubscribe(false); err != nil {
		return err
	}
	return s.tryApply(t)
}

// decode turns a response into the type's resource set after it.
func (s *session) decode(t *typeState, r *response) (map[string]*entry, error) {
	var errs []error
	rs := map[string]*entry{}
	if !r.full {
		rs = maps.Clone(t.received.resources)
		for _, n := range r.removed {
			delete(rs, n)
		}
	}
	seen := map[string]bool{}
	for i, rr := range r.resources {
		if rr.err != nil {
			errs = append(errs, fmt.Errorf("resource %d: %w", i, rr.err))
			continue
		}
		e, err := decodeResource(t.url, rr.name, rr.version, rr.body, rr.md, s.c.verify)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[e.name] {
			errs = append(errs, fmt.Errorf("resource %q appears twice", e.name))
			continue
		}
		seen[e.name] = true
		rs[e.name] = e
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s version %q: %w", shortType(t.url), r.version, errors.Join(errs...))
	}
	return rs, nil
}

// resubscribe sends the subscriptions of named types when the names the
// received listeners and clusters reference (so that dependants warm)
// differ from what this stream asked for. first sends the initial requests
// of a new stream.
func (s *session) resubscribe(first bool) error {
	r := collectRefs(s.c.types[TypeListener].received.resources, s.c.types[TypeCluster].received.resources)
	for _, u := range typeOrder {
		t := s.c.types[u]
		if wildcard(u) {
			if first {
				if err := s.tr.subscribe(t, nil, true); err != nil {
					return err
				}
			}
			continue
		}
		want := r.names(u)
		old, sent := s.sent[u]
		if (sent && slices.Equal(old, want)) || (!sent && len(want) == 0) {
			continue
		}
		t.names = want
		if err := s.tr.subscribe(t, old, !sent); err != nil {
			return err
		}
		s.sent[u] = want
	}
	return nil
}

// tryApply runs after cur took a response. It first tries the server's
// whole view (every type's received set): when that applies, every
// unanswered update is ACKed. When it is incomplete (warming) or the
// runtime rejects it, it tries cur's update alone on top of what runs, as
// Envoy applies each type on its own: success ACKs cur, and a rejection of
// the whole view is then NACKed on the other types' unanswered updates;
// failure NACKs cur if the whole view was rejected, and otherwise (the
// whole view is warming) leaves cur waiting for it. When neither set is
// complete, cur waits, unanswered, for the resources it names.
func (s *session) tryApply(cur *typeState) error {
	var fullErr error
	full, err := s.assemble(pickReceived)
	if err == nil {
		if fullErr = s.c.applyXDS(full); fullErr == nil {
			return s.accept(full, nil)
		}
	}
	others := false
	for _, u := range typeOrder {
		if t := s.c.types[u]; t != cur && t.dirty {
			others = true
		}
	}
	if others {
		alone, err := s.assemble(func(t *typeState) set {
			if t == cur {
				return t.received
			}
			return t.accepted
		})
		if err == nil {
			aloneErr := s.c.applyXDS(alone)
			if aloneErr == nil {
				if fullErr != nil {
					if err := s.reject(fullErr, func(t *typeState) bool { return t != cur }); err != nil {
						return err
					}
				}
				return s.accept(alone, cur)
			}
			if fullErr != nil {
				return s.reject(aloneErr, func(t *typeState) bool { return t == cur })
			}
			// The server's whole view is still warming: cur may need
			// what warms (a route naming a new cluster), so it waits.
			s.c.log.Debug("xds update waits for the resources warming", "type", shortType(cur.url), "alone", aloneErr)
			return nil
		}
	}
	if fullErr != nil {
		return s.reject(fullErr, func(*typeState) bool { return true })
	}
	s.c.log.Debug("xds config warming", "type", shortType(cur.url))
	return nil
}

// accept records an applied assembly: only is the one type applied alone
// (nil: every type's received set ran).
func (s *session) accept(a *assembly, only *typeState) error {
	for _, u := range typeOrder {
		t := s.c.types[u]
		if only != nil && t != only {
			continue
		}
		t.commit()
		t.rejectedKey, t.rejectedDetail = "", ""
		if u := t.unanswered; u != nil {
			t.unanswered = nil
			s.count(t, "ack")
			if err := s.tr.ack(t, u); err != nil {
				return err
			}
		}
	}
	s.c.log.Info("xds config applied", "version", a.version)
	return nil
}

// reject NACKs the unanswered updates of the types blamed for err. Their
// received sets stay: a later update of another type may make them apply.
func (s *session) reject(err error, blamed func(*typeState) bool) error {
	detail := err.Error()
	s.c.log.Error("xds config rejected; the running config stays", "error", err)
	s.c.setStatus(func(st *Status) { st.LastError = detail })
	for _, u := range typeOrder {
		t := s.c.types[u]
		if !blamed(t) || t.unanswered == nil {
			continue
		}
		up := t.unanswered
		t.unanswered = nil
		t.rejectedKey, t.rejectedDetail, t.rejectedCount = up.key, detail, 0
		if err := s.nack(t, up.nonce, detail); err != nil {
			return err
		}
	}
	return nil
}

package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdLeakIgnores()...)
}

// waitFor bounds every wait on a channel in these tests.
const waitFor = 10 * time.Second

// impl opens stores of one implementation for the conformance suite.
type impl struct {
	name string
	// open returns a fresh, empty store and a function that closes it and
	// opens it again on the same data. Stores are closed at test end.
	open func(t *testing.T) (Store, func() Store)
}

func boltImpl() impl {
	return impl{name: "bolt", open: func(t *testing.T) (Store, func() Store) {
		path := filepath.Join(t.TempDir(), "meshkit.db")
		return openCleanup(t, func() (Store, error) { return OpenBolt(path) })
	}}
}

// openCleanup opens a store with open, closes whatever is open at test end,
// and gives a reopen function for restart tests.
func openCleanup(t *testing.T, open func() (Store, error)) (Store, func() Store) {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	cur := s
	t.Cleanup(func() { _ = cur.Close() })
	return s, func() Store {
		t.Helper()
		if err := cur.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		var err error
		if cur, err = open(); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		return cur
	}
}

func TestBolt(t *testing.T) { runConformance(t, boltImpl()) }

// conformance is the contract every Store implementation keeps.
var conformance = []struct {
	name string
	run  func(t *testing.T, s Store, reopen func() Store)
}{
	{"get and put", testGetPut},
	{"conditional put", testConditionalPut},
	{"delete", testDelete},
	{"list is sorted and prefix bound", testList},
	{"empty key rejected", testEmptyKey},
	{"concurrent compare and set", testConcurrentCAS},
	{"watch replays after revision in order", testWatchReplay},
	{"watch follows live writes", testWatchLive},
	{"watch ends with context", testWatchContext},
	{"watch ends on close", testWatchClose},
	{"state and revisions survive reopen", testReopen},
	{"campaign is exclusive and hands over", testCampaign},
	{"campaign waits until context ends", testCampaignContext},
	{"leadership lost on close", testLeadershipClose},
}

func runConformance(t *testing.T, im impl) {
	for _, tc := range conformance {
		t.Run(tc.name, func(t *testing.T) {
			s, reopen := im.open(t)
			tc.run(t, s, reopen)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, s Store, key, value string) int64 {
	t.Helper()
	rev, err := s.Put(ctxT(t), key, []byte(value), -1)
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return rev
}

func testGetPut(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	if _, err := s.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: err = %v, want ErrNotFound", err)
	}
	r1 := mustPut(t, s, "a", "one")
	if r1 <= 0 {
		t.Fatalf("first revision %d, want > 0", r1)
	}
	kv, err := s.Get(ctx, "a")
	if err != nil || string(kv.Value) != "one" || kv.Revision != r1 || kv.Key != "a" {
		t.Fatalf("get = %+v, %v; want a=one@%d", kv, err, r1)
	}
	r2 := mustPut(t, s, "a", "two")
	if r2 <= r1 {
		t.Fatalf("second revision %d not after %d", r2, r1)
	}
	r3 := mustPut(t, s, "b", "")
	if r3 <= r2 {
		t.Fatalf("revision of another key %d not after %d", r3, r2)
	}
	kv, err = s.Get(ctx, "b")
	if err != nil || len(kv.Value) != 0 || kv.Revision != r3 {
		t.Fatalf("get empty value = %+v, %v", kv, err)
	}
}

func testConditionalPut(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	r1, err := s.Put(ctx, "k", []byte("v1"), 0)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	steps := []struct {
		name      string
		key       string
		expectRev int64
		wantErr   error
	}{
		{name: "create existing", key: "k", expectRev: 0, wantErr: ErrConflict},
		{name: "stale revision", key: "k", expectRev: r1 + 100, wantErr: ErrConflict},
		{name: "older revision", key: "k", expectRev: r1 - 1, wantErr: ErrConflict},
		{name: "update missing", key: "missing", expectRev: r1, wantErr: ErrConflict},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if _, err := s.Put(ctx, st.key, []byte("bad"), st.expectRev); !errors.Is(err, st.wantErr) {
				t.Fatalf("err = %v, want %v", err, st.wantErr)
			}
		})
	}
	if kv, _ := s.Get(ctx, "k"); string(kv.Value) != "v1" || kv.Revision != r1 {
		t.Fatalf("after conflicts: %+v, want v1@%d", kv, r1)
	}
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed put created a key: %v", err)
	}
	r2, err := s.Put(ctx, "k", []byte("v2"), r1)
	if err != nil || r2 <= r1 {
		t.Fatalf("update at current revision: %d, %v", r2, err)
	}
	if kv, _ := s.Get(ctx, "k"); string(kv.Value) != "v2" || kv.Revision != r2 {
		t.Fatalf("after update: %+v, want v2@%d", kv, r2)
	}
}

func testDelete(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	if err := s.Delete(ctx, "nope", -1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	if err := s.Delete(ctx, "nope", 7); !errors.Is(err, ErrNotFound) {
		t.Fatalf("conditional delete missing: %v", err)
	}
	r := mustPut(t, s, "k", "v")
	if err := s.Delete(ctx, "k", r+1); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete at wrong revision: %v", err)
	}
	if _, err := s.Get(ctx, "k"); err != nil {
		t.Fatalf("key gone after failed delete: %v", err)
	}
	if err := s.Delete(ctx, "k", r); err != nil {
		t.Fatalf("delete at revision: %v", err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	mustPut(t, s, "k", "again")
	if err := s.Delete(ctx, "k", 0); err != nil {
		t.Fatalf("unconditional delete: %v", err)
	}
	// A delete is a change: the next write's revision is after it.
	_, rev, _ := s.List(ctx, "")
	if r2 := mustPut(t, s, "z", "z"); r2 <= rev {
		t.Fatalf("put after delete at %d, store at %d", r2, rev)
	}
}

func testList(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	var last int64
	for _, k := range []string{"b/2", "a/1", "b/10", "c", "b/1", "b"} {
		last = mustPut(t, s, k, "v:"+k)
	}
	tests := []struct {
		name   string
		prefix string
		want   []string
	}{
		{name: "all", prefix: "", want: []string{"a/1", "b", "b/1", "b/10", "b/2", "c"}},
		{name: "directory", prefix: "b/", want: []string{"b/1", "b/10", "b/2"}},
		{name: "exact and below", prefix: "b", want: []string{"b", "b/1", "b/10", "b/2"}},
		{name: "none", prefix: "zz", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kvs, rev, err := s.List(ctx, tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if rev < last {
				t.Errorf("list revision %d before last write %d", rev, last)
			}
			var got []string
			for _, kv := range kvs {
				got = append(got, kv.Key)
				if string(kv.Value) != "v:"+kv.Key || kv.Revision <= 0 || kv.Revision > rev {
					t.Errorf("kv %+v inconsistent (store revision %d)", kv, rev)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("keys = %q, want %q", got, tc.want)
			}
		})
	}
}

func testEmptyKey(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	if _, err := s.Put(ctx, "", []byte("x"), -1); err == nil {
		t.Error("put of empty key accepted")
	}
	if _, err := s.Get(ctx, ""); err == nil {
		t.Error("get of empty key accepted")
	}
	if err := s.Delete(ctx, "", -1); err == nil {
		t.Error("delete of empty key accepted")
	}
}

// testConcurrentCAS checks that compare-and-set loses no update: writers
// increment one counter by read-modify-write, retrying on ErrConflict.
func testConcurrentCAS(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	const writers, increments = 4, 10
	if _, err := s.Put(ctx, "counter", []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for i := 0; i < increments; {
				kv, err := s.Get(ctx, "counter")
				if err != nil {
					errs <- err
					return
				}
				var n int
				fmt.Sscan(string(kv.Value), &n)
				_, err = s.Put(ctx, "counter", fmt.Append(nil, n+1), kv.Revision)
				switch {
				case errors.Is(err, ErrConflict):
					continue
				case err != nil:
					errs <- err
					return
				}
				i++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	kv, err := s.Get(ctx, "counter")
	if err != nil || string(kv.Value) != fmt.Sprint(writers*increments) {
		t.Fatalf("counter = %q, %v; want %d", kv.Value, err, writers*increments)
	}
}

// collect reads batches from ch until it holds n events, checking that
// revisions only grow and that one batch never mixes in foreign prefixes.
func collect(t *testing.T, ch <-chan []Event, n int) []Event {
	t.Helper()
	var got []Event
	timeout := time.After(waitFor)
	for len(got) < n {
		select {
		case batch, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d of %d events: %v", len(got), n, got)
			}
			if len(batch) == 0 {
				t.Fatal("empty batch")
			}
			got = append(got, batch...)
		case <-timeout:
			t.Fatalf("got %d of %d events: %v", len(got), n, got)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].KV.Revision <= got[i-1].KV.Revision {
			t.Fatalf("events out of order: %v", got)
		}
	}
	return got
}

// waitClosed waits for ch to close, draining whatever is still in flight.
func waitClosed(t *testing.T, ch <-chan []Event) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("watch channel not closed")
		}
	}
}

func describe(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, fmt.Sprintf("%v %s=%s", ev.Type, ev.KV.Key, ev.KV.Value))
	}
	return out
}

func testWatchReplay(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	_, start, err := s.List(ctx, "svc/")
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "svc/a", "1")
	mid := mustPut(t, s, "other/x", "no")
	mustPut(t, s, "svc/b", "2")
	mustPut(t, s, "svc/a", "3")
	if err := s.Delete(ctx, "svc/b", -1); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		after int64
		want  []string
	}{
		{name: "from list revision", after: start, want: []string{"put svc/a=1", "put svc/b=2", "put svc/a=3", "delete svc/b="}},
		{name: "from the middle", after: mid, want: []string{"put svc/b=2", "put svc/a=3", "delete svc/b="}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			got := collect(t, s.Watch(wctx, "svc/", tc.after), len(tc.want))
			if d := describe(got); !slices.Equal(d, tc.want) {
				t.Fatalf("events = %q, want %q", d, tc.want)
			}
			for _, ev := range got {
				if ev.KV.Revision <= tc.after {
					t.Errorf("event %+v not after %d", ev, tc.after)
				}
			}
		})
	}
	// The delete event carries the deletion's revision, the latest one.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := collect(t, s.Watch(wctx, "svc/", start), 4)
	if _, rev, _ := s.List(ctx, ""); got[3].KV.Revision != rev {
		t.Errorf("delete revision %d, store revision %d", got[3].KV.Revision, rev)
	}
}

func testWatchLive(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	_, rev, err := s.List(ctx, "live/")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx, "live/", rev)
	var want []string
	for i := range 20 {
		k := fmt.Sprintf("live/%02d", i%5)
		mustPut(t, s, k, fmt.Sprint(i))
		mustPut(t, s, "dead/x", fmt.Sprint(i))
		want = append(want, fmt.Sprintf("put %s=%d", k, i))
	}
	if d := describe(collect(t, ch, len(want))); !slices.Equal(d, want) {
		t.Fatalf("events = %q, want %q", d, want)
	}
}

func testWatchContext(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	wctx, cancel := context.WithCancel(ctx)
	ch := s.Watch(wctx, "", 0)
	mustPut(t, s, "a", "1")
	collect(t, ch, 1)
	cancel()
	waitClosed(t, ch)
}

func testWatchClose(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	rev := mustPut(t, s, "a", "1")
	ch := s.Watch(ctx, "", rev)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch)
	waitClosed(t, s.Watch(ctx, "", rev))
	if _, err := s.Get(ctx, "a"); !errors.Is(err, ErrClosed) {
		t.Errorf("get after close: %v, want ErrClosed", err)
	}
	if _, err := s.Put(ctx, "a", nil, -1); !errors.Is(err, ErrClosed) {
		t.Errorf("put after close: %v, want ErrClosed", err)
	}
}

func testReopen(t *testing.T, s Store, reopen func() Store) {
	ctx := ctxT(t)
	mustPut(t, s, "keep/a", "1")
	last := mustPut(t, s, "keep/b", "2")
	s = reopen()
	kvs, rev, err := s.List(ctx, "keep/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 2 || string(kvs[1].Value) != "2" || kvs[1].Revision != last || rev < last {
		t.Fatalf("after reopen: %+v at %d, want b@%d", kvs, rev, last)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.Watch(wctx, "keep/", rev)
	next := mustPut(t, s, "keep/c", "3")
	if next <= last {
		t.Fatalf("revision after reopen %d not after %d", next, last)
	}
	if d := describe(collect(t, ch, 1)); !slices.Equal(d, []string{"put keep/c=3"}) {
		t.Fatalf("events = %q", d)
	}
}

// campaign runs Campaign in a goroutine and delivers its result.
func campaign(ctx context.Context, s Store, election, id string) <-chan Leadership {
	won := make(chan Leadership, 1)
	go func() {
		l, err := s.Campaign(ctx, election, id)
		if err != nil {
			close(won)
			return
		}
		won <- l
	}()
	return won
}

func testCampaign(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	a, err := s.Campaign(ctx, "expiry", "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another election is independent.
	other, err := s.Campaign(ctx, "rollout", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Resign(ctx) }()

	// b must not win while a leads: its campaign runs out of time.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := s.Campaign(short, "expiry", "b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second campaigner: err = %v, want deadline exceeded", err)
	}
	won := campaign(ctx, s, "expiry", "b")
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Lost():
	case <-time.After(waitFor):
		t.Fatal("resigned leadership not lost")
	}
	var b Leadership
	select {
	case b = <-won:
		if b == nil {
			t.Fatal("campaign after handover failed")
		}
	case <-time.After(waitFor):
		t.Fatal("no handover after resign")
	}
	select {
	case <-b.Lost():
		t.Fatal("new leader lost at once")
	default:
	}
	if err := b.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}

func testCampaignContext(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	a, err := s.Campaign(ctx, "e", "a")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.Campaign(cctx, "e", "b")
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled campaign: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("cancelled campaign still waiting")
	}
	// The abandoned campaign must not block the next one.
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := s.Campaign(ctx, "e", "c")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Resign(ctx)
}

func testLeadershipClose(t *testing.T, s Store, _ func() Store) {
	ctx := ctxT(t)
	l, err := s.Campaign(ctx, "e", "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-time.After(waitFor):
		t.Fatal("leadership not lost on close")
	}
	if err := l.Resign(ctx); err != nil {
		t.Errorf("resign after close: %v", err)
	}
}

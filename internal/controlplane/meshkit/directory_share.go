package meshkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/capfilter"
	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/shared/capability"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// DirectoryPrefix is where replicas publish their proxy directories (on a
// store with leases): DirectoryPrefix + replica + "/s/" + stream id holds a
// connected stream, DirectoryPrefix + replica + "/g/" + group the group's
// capabilities, what that replica withheld from it and which extension
// packages it runs (once per group rather than once per proxy: the
// capabilities are most of an entry's size). Replica and group are
// path-escaped.
const DirectoryPrefix = "/proxies/"

// Directory defaults.
const (
	// DefaultDirectoryTTL is the lease of a replica's entries: a replica
	// that dies without revoking it (crash, partition) is listed no longer
	// than this after its last renewal. It matches the store's election
	// session, so a dead replica loses its leaderships and its proxies
	// together.
	DefaultDirectoryTTL = 5 * time.Second
	// DefaultDirectoryFlush is how long changes (connects, ACKs, NACKs,
	// disconnects) gather before one batched write.
	DefaultDirectoryFlush = 500 * time.Millisecond
	// maxWriteBytes keeps one batched write under etcd's request limit
	// (1.5 MiB by default).
	maxWriteBytes = 1 << 20
)

// DirectoryOptions configures how a replica shares its proxy directory.
type DirectoryOptions struct {
	// ReplicaID names this replica in listings and in its store keys; it
	// must differ between live replicas. Default host:pid.
	ReplicaID string
	// TTL is the lease of this replica's entries. Default
	// DefaultDirectoryTTL; etcd rounds it up to whole seconds (2 s at
	// least with its default timings).
	TTL time.Duration
	// Flush gathers changes for one batched write. Default
	// DefaultDirectoryFlush.
	Flush time.Duration
}

func (o *DirectoryOptions) defaults() {
	if o.ReplicaID == "" {
		h, _ := os.Hostname()
		o.ReplicaID = fmt.Sprintf("%s:%d", h, os.Getpid())
	}
	if o.TTL <= 0 {
		o.TTL = DefaultDirectoryTTL
	}
	if o.Flush <= 0 {
		o.Flush = DefaultDirectoryFlush
	}
}

// directoryShare publishes one replica's streams under a lease and reads
// the other replicas' entries for a listing. Only its run goroutine writes;
// what it writes is taken from the directory under the directory's lock.
type directoryShare struct {
	opt    DirectoryOptions
	st     store.Store
	leaser store.Leaser
	log    *slog.Logger
	kick   chan struct{} // 1-slot: something is dirty

	// Under proxyDirectory.mu:
	dirty       map[int64]struct{}  // streams to put, or to delete if closed
	dirtyGroups map[string]struct{} // group records to put (kept while the replica runs)
	groupsSent  map[string]string   // group -> encoded record in the store
	stale       []string            // keys of this replica left by an earlier lease
}

// enableShare makes the directory publish itself when st has leases.
func (d *proxyDirectory) enableShare(st store.Store, opt DirectoryOptions, log *slog.Logger) {
	opt.defaults()
	sh := &directoryShare{opt: opt, st: st, log: log}
	if l, ok := st.(store.Leaser); ok {
		sh.leaser = l
		sh.kick = make(chan struct{}, 1)
		sh.dirty = map[int64]struct{}{}
		sh.dirtyGroups = map[string]struct{}{}
		sh.groupsSent = map[string]string{}
	}
	d.share = sh
}

func (d *proxyDirectory) replica() string {
	if d.share == nil {
		return ""
	}
	return d.share.opt.ReplicaID
}

func (d *proxyDirectory) sharing() bool { return d.share != nil && d.share.leaser != nil }

func (d *proxyDirectory) kickLocked() {
	select {
	case d.share.kick <- struct{}{}:
	default:
	}
}

// changedLocked marks a stream for the next write.
func (d *proxyDirectory) changedLocked(id int64) {
	if !d.sharing() {
		return
	}
	d.share.dirty[id] = struct{}{}
	d.kickLocked()
}

// closedLocked: a stream written before must have its key deleted; one
// never written is forgotten.
func (d *proxyDirectory) closedLocked(id int64, sent bool) {
	if !d.sharing() {
		return
	}
	if !sent {
		delete(d.share.dirty, id)
		return
	}
	d.share.dirty[id] = struct{}{}
	d.kickLocked()
}

func (d *proxyDirectory) groupChangedLocked(group string) {
	if !d.sharing() {
		return
	}
	d.share.dirtyGroups[group] = struct{}{}
	d.kickLocked()
}

func (sh *directoryShare) streamKey(id int64) string {
	return DirectoryPrefix + url.PathEscape(sh.opt.ReplicaID) + "/s/" + strconv.FormatInt(id, 10)
}

func (sh *directoryShare) groupKey(group string) string {
	return DirectoryPrefix + url.PathEscape(sh.opt.ReplicaID) + "/g/" + url.PathEscape(group)
}

func (sh *directoryShare) ownPrefix() string {
	return DirectoryPrefix + url.PathEscape(sh.opt.ReplicaID) + "/"
}

// storedStream is a stream's entry in the store.
type storedStream struct {
	Node    string `json:"node"`
	Cluster string `json:"cluster,omitempty"`
	// Group names the replica's group record, which holds the
	// capabilities.
	Group  string            `json:"group"`
	Bucket uint32            `json:"bucket"`
	Since  time.Time         `json:"since"`
	Acked  map[string]string `json:"acked,omitempty"`
	Nack   *Nack             `json:"nack,omitempty"`
	// Rev is the revision of the entry's first write; 0 in that first
	// write, whose mod revision it then is.
	Rev int64 `json:"rev,omitempty"`
}

// storedGroup is a replica's record of one group.
type storedGroup struct {
	Caps       capability.Set           `json:"caps"`
	Withheld   []capfilter.Withheld     `json:"withheld,omitempty"`
	Extensions []config.ExtensionChoice `json:"extensions,omitempty"`
}

// run publishes this replica's directory until ctx ends, then revokes its
// lease so that the entries go at once. A lost lease (etcd unreachable for
// longer than the TTL) is granted again and everything written again.
func (d *proxyDirectory) run(ctx context.Context) {
	if !d.sharing() {
		return
	}
	sh := d.share
	wait := newRetry()
	for ctx.Err() == nil {
		lease, err := sh.leaser.Grant(ctx, sh.opt.TTL)
		if err != nil {
			if ctx.Err() == nil {
				sh.log.Warn("proxy directory: lease not granted; retrying", "replica", sh.opt.ReplicaID, "error", err)
				wait.sleep(ctx, nil)
			}
			continue
		}
		wait.reset()
		d.publishUnder(ctx, lease)
		select {
		case <-lease.Lost():
			if ctx.Err() == nil {
				sh.log.Warn("proxy directory: lease lost; publishing again", "replica", sh.opt.ReplicaID)
			}
		default:
		}
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := lease.Revoke(rctx); err != nil {
				sh.log.Warn("proxy directory: revoke lease; entries stay until it expires",
					"replica", sh.opt.ReplicaID, "ttl", sh.opt.TTL, "error", err)
			}
			cancel()
		}
	}
}

// publishUnder writes everything once (a new lease holds nothing), then
// every change, gathered for Flush, until the lease is lost or ctx ends.
func (d *proxyDirectory) publishUnder(ctx context.Context, lease store.Lease) {
	sh := d.share
	if err := d.resync(ctx); err != nil {
		sh.log.Warn("proxy directory: list own entries", "replica", sh.opt.ReplicaID, "error", err)
	}
	wait := newRetry()
	gather := time.NewTimer(0)
	defer gather.Stop()
	for {
		if err := d.flush(ctx, lease); err != nil {
			if ctx.Err() != nil || errors.Is(err, store.ErrLeaseLost) {
				return
			}
			sh.log.Warn("proxy directory: write failed; retrying", "replica", sh.opt.ReplicaID, "error", err)
			if !wait.sleep(ctx, lease.Lost()) {
				return
			}
			continue
		}
		wait.reset()
		select {
		case <-ctx.Done():
			return
		case <-lease.Lost():
			return
		case <-sh.kick:
		}
		gather.Reset(sh.opt.Flush)
		select {
		case <-ctx.Done():
			return
		case <-lease.Lost():
			return
		case <-gather.C:
		}
	}
}

// resync marks every stream and group for writing and lists this replica's
// keys left from an earlier lease (or an earlier process with the same
// replica id) for deletion.
func (d *proxyDirectory) resync(ctx context.Context) error {
	sh := d.share
	kvs, _, err := sh.st.List(ctx, sh.ownPrefix())
	d.mu.Lock()
	defer d.mu.Unlock()
	live := make(map[string]bool, len(d.streams))
	for id := range d.streams {
		sh.dirty[id] = struct{}{}
		live[sh.streamKey(id)] = true
	}
	for g := range d.groupCaps {
		sh.dirtyGroups[g] = struct{}{}
		live[sh.groupKey(g)] = true
	}
	clear(sh.groupsSent)
	sh.stale = sh.stale[:0]
	for _, kv := range kvs {
		if !live[kv.Key] {
			sh.stale = append(sh.stale, kv.Key)
		}
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", sh.ownPrefix(), err)
	}
	return nil
}

// batch is one Lease.Write and what it covers.
type batch struct {
	puts    []store.KV
	deletes []string
	bytes   int
	ids     []int64  // streams written for the first time
	groups  []string // group records put
	remark  []int64  // every stream in the batch, to mark again on failure
	stale   []string // keys of an earlier lease deleted by the batch
	encoded map[string]string
}

// flush writes what is dirty, in batches of at most store.MaxWriteOps keys.
// On failure the unwritten part is marked dirty again.
func (d *proxyDirectory) flush(ctx context.Context, lease store.Lease) error {
	sh := d.share
	// Copy what is dirty under the lock; encode outside it, so that a
	// burst of 10,000 entries does not hold up the xDS callbacks.
	type pendingStream struct {
		id    int64
		entry *storedStream // nil: closed, delete its key
	}
	type pendingGroup struct {
		name  string
		entry *storedGroup
	}
	d.mu.Lock()
	stale := append([]string(nil), sh.stale...)
	sh.stale = sh.stale[:0]
	streams := make([]pendingStream, 0, len(sh.dirty))
	for id := range sh.dirty {
		p := d.streams[id]
		if p == nil {
			streams = append(streams, pendingStream{id: id})
			continue
		}
		acked := make(map[string]string, len(p.Acked))
		for k, v := range p.Acked {
			acked[k] = v
		}
		streams = append(streams, pendingStream{id: id, entry: &storedStream{
			Node: p.NodeID, Cluster: p.Cluster, Group: p.Group, Bucket: p.Bucket,
			Since: p.ConnectedSince, Acked: acked, Nack: p.LastNack, Rev: p.rev,
		}})
		p.sent = true
	}
	// A new map rather than clear: a cleared map keeps the buckets of the
	// largest burst it ever held.
	sh.dirty = make(map[int64]struct{})
	groups := make([]pendingGroup, 0, len(sh.dirtyGroups))
	for g := range sh.dirtyGroups {
		caps, ok := d.groupCaps[g]
		if !ok {
			// Built before any of its nodes connected here: recorded
			// with its first stream.
			continue
		}
		w, x := d.withheld[g], d.exts[g]
		groups = append(groups, pendingGroup{name: g, entry: &storedGroup{
			Caps:       caps,
			Withheld:   append([]capfilter.Withheld(nil), w...),
			Extensions: append([]config.ExtensionChoice(nil), x...),
		}})
	}
	clear(sh.dirtyGroups)
	sent := make(map[string]string, len(groups))
	for _, g := range groups {
		sent[g.name] = sh.groupsSent[g.name]
	}
	d.mu.Unlock()

	var (
		batches []*batch
		cur     *batch
	)
	add := func(size int) *batch {
		if cur == nil || len(cur.puts)+len(cur.deletes) >= store.MaxWriteOps || cur.bytes+size > maxWriteBytes {
			cur = &batch{encoded: map[string]string{}}
			batches = append(batches, cur)
		}
		cur.bytes += size
		return cur
	}
	for _, k := range stale {
		b := add(len(k))
		b.deletes = append(b.deletes, k)
		b.stale = append(b.stale, k)
	}
	// Group records first: a stream is listed with its group's capabilities.
	for _, g := range groups {
		key := sh.groupKey(g.name)
		val, err := json.Marshal(g.entry)
		if err != nil {
			sh.log.Error("proxy directory: encode group", "group", g.name, "error", err)
			continue
		}
		if sent[g.name] == string(val) {
			continue
		}
		b := add(len(key) + len(val))
		b.puts = append(b.puts, store.KV{Key: key, Value: val})
		b.groups = append(b.groups, g.name)
		b.encoded[g.name] = string(val)
	}
	for _, ps := range streams {
		key := sh.streamKey(ps.id)
		if ps.entry == nil {
			b := add(len(key))
			b.deletes = append(b.deletes, key)
			b.remark = append(b.remark, ps.id)
			continue
		}
		val, err := json.Marshal(ps.entry)
		if err != nil {
			sh.log.Error("proxy directory: encode stream", "node", ps.entry.Node, "error", err)
			continue
		}
		b := add(len(key) + len(val))
		b.puts = append(b.puts, store.KV{Key: key, Value: val})
		b.remark = append(b.remark, ps.id)
		if ps.entry.Rev == 0 {
			b.ids = append(b.ids, ps.id)
		}
	}

	for i, b := range batches {
		rev, err := lease.Write(ctx, b.puts, b.deletes)
		if err != nil {
			d.remark(batches[i:])
			return err
		}
		d.mu.Lock()
		for _, id := range b.ids {
			if p := d.streams[id]; p != nil && p.rev == 0 {
				p.rev = rev
			}
		}
		for _, g := range b.groups {
			sh.groupsSent[g] = b.encoded[g]
		}
		d.mu.Unlock()
	}
	return nil
}

// remark marks the contents of unwritten batches dirty again.
func (d *proxyDirectory) remark(unwritten []*batch) {
	sh := d.share
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range unwritten {
		for _, id := range b.remark {
			sh.dirty[id] = struct{}{}
		}
		for _, g := range b.groups {
			sh.dirtyGroups[g] = struct{}{}
		}
		sh.stale = append(sh.stale, b.stale...)
	}
}

// retry is a doubling wait between failed store calls.
type retry struct{ next time.Duration }

func newRetry() *retry { return &retry{next: 100 * time.Millisecond} }

func (r *retry) reset() { r.next = 100 * time.Millisecond }

// sleep waits out the next delay; false if ctx ended or stop closed first.
func (r *retry) sleep(ctx context.Context, stop <-chan struct{}) bool {
	t := time.NewTimer(r.next)
	defer t.Stop()
	r.next = min(2*r.next, 5*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

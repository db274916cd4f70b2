package meshkit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/omnirelay/omnirelay/internal/controlplane/store"
	"github.com/omnirelay/omnirelay/internal/controlplane/versions"
	"github.com/omnirelay/omnirelay/internal/shared/config"
)

// commitAttempts bounds how often an apply re-reads the stored config after
// losing a race with another writer (another apply, an extension step, a
// replica) before it reports the conflict.
const commitAttempts = 5

// Applied is what an apply stored.
type Applied struct {
	Version string
	Number  int64
	// Unchanged: the document equals the one in force; nothing was stored.
	Unchanged bool
}

// ApplyVersion validates a configuration document and stores it as the
// next version of the desired state, recording origin (versions.Origin*)
// and the author the context carries (versions.WithAuthor). A document
// equal to the one in force makes no new version.
func (m *MeshKit) ApplyVersion(ctx context.Context, filename string, data []byte, origin string) (_ Applied, err error) {
	defer func() { m.metrics.apply(err) }()
	cfg, err := m.parseAndCheck(filename, data)
	if err != nil {
		return Applied{}, err
	}
	for attempt := 1; ; attempt++ {
		kv, prev, err := m.readDesired(ctx)
		if err != nil {
			return Applied{}, err
		}
		if prev != nil && prev.Version == versions.DigestOf(data) && prev.Filename == filename {
			return Applied{Version: prev.Version, Number: prev.Number, Unchanged: true}, nil
		}
		if err := m.refuseDuringRollout(ctx, "apply "+filename); err != nil {
			return Applied{}, err
		}
		d, err := m.commit(ctx, kv, prev, filename, data, cfg, origin, nil)
		if errors.Is(err, store.ErrConflict) && attempt < commitAttempts {
			continue
		}
		if err != nil {
			return Applied{}, err
		}
		m.opt.Log.Info("configuration applied", "version", d.Version, "number", d.Number, "file", filename,
			"origin", origin, "author", d.Author)
		return Applied{Version: d.Version, Number: d.Number}, nil
	}
}

// readDesired returns the stored desired config and its key (revision 0
// and nil when none is stored).
func (m *MeshKit) readDesired(ctx context.Context) (store.KV, *desired, error) {
	kv, err := m.opt.Store.Get(ctx, KeyDesired)
	if errors.Is(err, store.ErrNotFound) {
		return store.KV{}, nil, nil
	}
	if err != nil {
		return store.KV{}, nil, fmt.Errorf("read %s: %w", KeyDesired, err)
	}
	d, err := decodeDesired(kv.Value)
	if err != nil {
		return store.KV{}, nil, err
	}
	return kv, d, nil
}

func decodeDesired(b []byte) (*desired, error) {
	r, err := versions.Decode(KeyDesired, b)
	if err != nil {
		return nil, err
	}
	return &desired{Record: *r}, nil
}

// parsedOf returns d's parsed document: the one in force when it is the
// same version, else parsed again (without the translation checks: the
// summary only compares documents).
func (m *MeshKit) parsedOf(d *desired) *config.Config {
	if d == nil {
		return nil
	}
	if d.cfg != nil {
		return d.cfg
	}
	m.mu.Lock()
	cur := m.desired
	m.mu.Unlock()
	if cur != nil && cur.Version == d.Version {
		return cur.cfg
	}
	cfg, err := config.Parse(d.Filename, d.YAML, config.ServedByMeshKit())
	if err != nil {
		return nil
	}
	return cfg
}

// commit stores data as the version after prev (the stored desired config
// at kv; nil when none is stored), on the condition that the stored config
// did not change meanwhile (else store.ErrConflict, nothing stored), then
// records it in the history and switches to it. note, when set, leads the
// version's summary.
func (m *MeshKit) commit(ctx context.Context, kv store.KV, prev *desired, filename string, data []byte, cfg *config.Config, origin string, note []string) (*desired, error) {
	d := &desired{Record: versions.Record{
		Number:   1,
		Version:  versions.DigestOf(data),
		Filename: filename,
		YAML:     data,
		Author:   versions.CleanAuthor(versions.AuthorFrom(ctx)),
		At:       time.Now().UTC().Truncate(time.Millisecond),
		Origin:   origin,
	}, cfg: cfg}
	var prevCfg *config.Config
	if prev != nil {
		d.Number, d.Parent = prev.Number+1, prev.Number
		if prevCfg = m.parsedOf(prev); prevCfg == nil {
			note = append(note, "the previous version no longer parses: summary against an empty config")
		}
	}
	d.Summary = append(slices.Clone(note), versions.Summarize(prevCfg, cfg)...)
	if err := d.Sign(m.opt.Signer); err != nil {
		return nil, err
	}
	val, err := d.encode()
	if err != nil {
		return nil, err
	}
	if _, err := m.opt.Store.Put(ctx, KeyDesired, val, kv.Revision); err != nil {
		return nil, fmt.Errorf("store configuration: %w", err)
	}
	m.mu.Lock()
	m.desired = d
	m.mu.Unlock()
	m.trigger()
	// The desired key is what is served; the history entry follows it. A
	// crash in between leaves the entry missing until a replica loads the
	// desired config again (ensureHistory).
	if err := m.ensureHistory(ctx, d); err != nil {
		m.opt.Log.Warn("config version not recorded in the history yet", "number", d.Number, "error", err)
	} else if err := m.trimHistory(ctx, d.Number); err != nil {
		m.opt.Log.Warn("config history not trimmed", "error", err)
	}
	return d, nil
}

func (d *desired) encode() ([]byte, error) {
	val, err := jsonMarshal(&d.Record)
	if err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	return val, nil
}

// ensureHistory writes d's history entry unless it is there already.
func (m *MeshKit) ensureHistory(ctx context.Context, d *desired) error {
	if d.Number <= 0 {
		return nil // stored before versions were numbered
	}
	key := versions.Key(d.Number)
	if _, err := m.opt.Store.Get(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	val, err := d.encode()
	if err != nil {
		return err
	}
	if _, err := m.opt.Store.Put(ctx, key, val, 0); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	return nil
}

// historyKeep is the keep count in force.
func (m *MeshKit) historyKeep() int {
	if m.opt.HistoryKeep <= 0 {
		return versions.DefaultKeep
	}
	return min(m.opt.HistoryKeep, versions.MaxKeep)
}

// trimHistory drops the versions older than the keep count allows, the
// current one (latest) never among them.
func (m *MeshKit) trimHistory(ctx context.Context, latest int64) error {
	keep := int64(m.historyKeep())
	if latest <= keep {
		return nil
	}
	kvs, _, err := m.opt.Store.List(ctx, versions.KeyPrefix)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		n, err := versions.NumberOfKey(kv.Key)
		if err != nil || n > latest-keep {
			continue
		}
		if err := m.opt.Store.Delete(ctx, kv.Key, kv.Revision); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return nil
}

// History returns the kept versions, newest first, without their
// documents, and the keep count.
func (m *MeshKit) History(ctx context.Context) ([]versions.Record, int, error) {
	kvs, _, err := m.opt.Store.List(ctx, versions.KeyPrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("read config history: %w", err)
	}
	out := make([]versions.Record, 0, len(kvs))
	for i := len(kvs) - 1; i >= 0; i-- {
		r, err := versions.Decode(kvs[i].Key, kvs[i].Value)
		if err != nil {
			m.opt.Log.Warn("config history entry skipped", "key", kvs[i].Key, "error", err)
			continue
		}
		r.YAML = nil
		out = append(out, *r)
	}
	return out, m.historyKeep(), nil
}

// ErrNotKept is returned for a version number the history does not hold
// (never made, or dropped by the keep count). It wraps store.ErrNotFound.
var ErrNotKept = fmt.Errorf("config version not kept: %w", store.ErrNotFound)

// Version returns kept version n with its document.
func (m *MeshKit) Version(ctx context.Context, n int64) (*versions.Record, error) {
	if n <= 0 {
		return nil, &config.Error{Path: "number", Reason: fmt.Sprintf("version number %d: want 1 or more", n)}
	}
	kv, err := m.opt.Store.Get(ctx, versions.Key(n))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("version %d (the history keeps the last %d): %w", n, m.historyKeep(), ErrNotKept)
	}
	if err != nil {
		return nil, fmt.Errorf("read version %d: %w", n, err)
	}
	return versions.Decode(kv.Key, kv.Value)
}

// Current is the number of the version in force (0: none, or one stored
// before versions were numbered).
func (m *MeshKit) Current() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.desired == nil {
		return 0
	}
	return m.desired.Number
}

// VersionDiff is what Diff found between two versions.
type VersionDiff struct {
	From, To int64
	Summary  []string
	Unified  string
}

// Diff compares kept versions from and to; 0 for to means the current
// version, 0 for from the one before to.
func (m *MeshKit) Diff(ctx context.Context, from, to int64) (VersionDiff, error) {
	if to == 0 {
		if to = m.Current(); to == 0 {
			return VersionDiff{}, fmt.Errorf("no numbered configuration applied yet: %w", store.ErrNotFound)
		}
	}
	b, err := m.Version(ctx, to)
	if err != nil {
		return VersionDiff{}, err
	}
	if from == 0 {
		if from = b.Parent; from == 0 {
			return VersionDiff{}, &config.Error{Path: "from", Reason: fmt.Sprintf("version %d is the first: name a version to compare with", to)}
		}
	}
	a, err := m.Version(ctx, from)
	if err != nil {
		return VersionDiff{}, err
	}
	ca, err := config.Parse(a.Filename, a.YAML, config.ServedByMeshKit())
	if err != nil {
		return VersionDiff{}, fmt.Errorf("version %d: %w", from, err)
	}
	cb, err := config.Parse(b.Filename, b.YAML, config.ServedByMeshKit())
	if err != nil {
		return VersionDiff{}, fmt.Errorf("version %d: %w", to, err)
	}
	return VersionDiff{
		From: from, To: to,
		Summary: versions.Summarize(ca, cb),
		Unified: versions.Unified(fmt.Sprintf("v%d %s", from, a.Filename), a.YAML, fmt.Sprintf("v%d %s", to, b.Filename), b.YAML),
	}, nil
}

// Undo makes the document of kept version to the desired config again, as
// a new version (history is never rewritten); to == 0 means the version
// before the current one. The document is checked as an apply is (an
// extension package it names may be gone since).
func (m *MeshKit) Undo(ctx context.Context, to int64) (Applied, error) {
	if err := m.refuseDuringRollout(ctx, "undo"); err != nil {
		return Applied{}, err
	}
	for attempt := 1; ; attempt++ {
		kv, cur, err := m.readDesired(ctx)
		if err != nil {
			return Applied{}, err
		}
		if cur == nil || cur.Number == 0 {
			return Applied{}, fmt.Errorf("no numbered configuration applied yet: %w", store.ErrNotFound)
		}
		target := to
		if target == 0 {
			if target = cur.Parent; target == 0 {
				return Applied{}, &config.Error{Path: "to", Reason: fmt.Sprintf("version %d is the first: nothing to undo", cur.Number)}
			}
		}
		if target == cur.Number {
			return Applied{}, &config.Error{Path: "to", Reason: fmt.Sprintf("version %d is the current one", target)}
		}
		rec, err := m.Version(ctx, target)
		if err != nil {
			return Applied{}, err
		}
		cfg, err := m.parseAndCheck(rec.Filename, rec.YAML)
		if err != nil {
			return Applied{}, fmt.Errorf("version %d no longer applies: %w", target, err)
		}
		note := []string{fmt.Sprintf("undo: the document of version %d", target)}
		d, err := m.commit(ctx, kv, cur, rec.Filename, rec.YAML, cfg, versions.OriginUndo, note)
		if errors.Is(err, store.ErrConflict) && attempt < commitAttempts {
			continue
		}
		if err != nil {
			return Applied{}, err
		}
		m.opt.Log.Info("configuration undone", "to", target, "number", d.Number, "version", d.Version, "author", d.Author)
		return Applied{Version: d.Version, Number: d.Number}, nil
	}
}

// Package static owns the data plane's file config source: it loads a config
// file (the omnirelay.v1 YAML, or Envoy static_resources YAML/JSON), turns it
// into an xDS snapshot, and watches the file (polling its content, plus
// SIGHUP) so that edits are validated and applied as new versions. The
// certificate, key and CA files the config names are watched the same way:
// a renewed certificate is served without a reload by hand.
//
// Polling rather than inotify: editors, config-map mounts and certificate
// renewers replace files by rename, which inotify watchers must re-arm for;
// hashing a few small files twice a second is cheap and always right.
package static

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/omnirelay/omnirelay/internal/shared/config"
	"github.com/omnirelay/omnirelay/internal/shared/resources"
	"github.com/omnirelay/omnirelay/internal/shared/translate"
)

// Loaded is a parsed config file.
type Loaded struct {
	Snapshot     *resources.Snapshot
	AdminAddress string
	// Format is "omnirelay.v1" or "envoy".
	Format string
}

// Load reads and translates a config file. Errors name the file, the path in
// the document and the reason.
func Load(path string) (*Loaded, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for bytes already read.
func Parse(path string, data []byte) (*Loaded, error) {
	if config.IsEnvoyFormat(data) {
		snap, admin, err := config.LoadEnvoy(path, data)
		if err != nil {
			return nil, err
		}
		return &Loaded{Snapshot: snap, AdminAddress: admin.EffectiveAddress(), Format: "envoy"}, nil
	}
	c, err := config.Parse(path, data)
	if err != nil {
		return nil, err
	}
	snap, err := translate.Translate(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Loaded{Snapshot: snap, AdminAddress: c.Admin.EffectiveAddress(), Format: "omnirelay.v1"}, nil
}

// Watcher reloads a config file when its content changes or when Trigger is
// called (SIGHUP), and hands each successfully parsed version to Apply.
type Watcher struct {
	Path     string
	Interval time.Duration // poll interval (default 500ms)
	// Apply is called with each new version; forced is true for an explicit
	// Trigger (SIGHUP). Its error is logged by the caller (the running config
	// stays).
	Apply func(l *Loaded, forced bool) error
	// OnError receives load errors (bad YAML, validation).
	OnError func(error)
	Log     *slog.Logger
	// Files are the files the running version reads (see ReferencedFiles);
	// Run re-applies the config when their content changes.
	Files []string

	trigger chan struct{}
}

// NewWatcher returns a watcher; lastApplied is the content already running.
func NewWatcher(path string, apply func(l *Loaded, forced bool) error, onError func(error), log *slog.Logger) *Watcher {
	return &Watcher{Path: path, Apply: apply, OnError: onError, Log: log, trigger: make(chan struct{}, 1)}
}

// Trigger asks for an immediate reload (even if the content is unchanged, a
// re-read of referenced files such as certificates may differ).
func (w *Watcher) Trigger() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Run polls until ctx is done. initial is the content hash of the version
// already applied at start; Files, when set before Run, are the files that
// version reads (ReferencedFiles).
func (w *Watcher) Run(ctx context.Context, initial []byte) {
	interval := w.Interval
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	last := initial
	files := w.Files
	filesLast := filesSum(files)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.trigger:
			force = true
		}
		data, err := os.ReadFile(w.Path)
		if err != nil {
			if force {
				w.OnError(fmt.Errorf("read config: %w", err))
			}
			continue // a file being replaced may be briefly missing
		}
		sum := Sum(data)
		changed := !bytes.Equal(sum, last)
		if !force && !changed {
			// The config is the same; the files it reads may not be. They
			// are re-read by a forced apply, as for SIGHUP.
			fs := filesSum(files)
			if bytes.Equal(fs, filesLast) {
				continue
			}
			w.Log.Info("a file the config reads changed; re-applying", "files", files)
			force = true
		}
		last = sum
		l, err := Parse(w.Path, data)
		if err != nil {
			w.OnError(err)
			continue
		}
		// Hash the files before applying: a change made while the apply
		// reads them is seen at the next tick.
		files = ReferencedFiles(l.Snapshot)
		filesLast = filesSum(files)
		if err := w.Apply(l, force); err != nil {
			w.OnError(err)
		}
	}
}

// Sum is the content hash the watcher compares.
func Sum(data []byte) []byte {
	s := sha256.Sum256(data)
	return s[:]
}

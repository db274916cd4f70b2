package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/omnirelay/omnirelay/internal/dataplane/static"
)

// File is the config-file source: the file as it is at start (OpenFile),
// then each new content (polled), each Reload (SIGHUP) and each change of a
// file the config names (certificate, key, CA: static.ReferencedFiles). A
// content that does not parse, validate or apply is logged with its
// position and reason, counted as a rejected reload, and the running
// version stays.
type File struct {
	path   string
	data   []byte
	loaded *static.Loaded
	poll   time.Duration
	env    Env
	// watcher is made by OpenFile, so that a Reload before Run is kept
	// for it.
	watcher *static.Watcher
}

var (
	_ Source   = (*File)(nil)
	_ Reloader = (*File)(nil)
)

// OpenFile reads and parses the config file at path; poll is how often it
// is checked for changes (default 500ms). Errors name the file, the path in
// the document and the reason.
func OpenFile(path string, poll time.Duration) (*File, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	loaded, err := static.Parse(path, data)
	if err != nil {
		return nil, err
	}
	f := &File{path: path, data: data, loaded: loaded, poll: poll}
	f.watcher = static.NewWatcher(path, f.applyLoaded, f.reject, nil)
	return f, nil
}

// AdminAddress is the admin address the file names (its default when it
// names none).
func (f *File) AdminAddress() string { return f.loaded.AdminAddress }

// Format is "omnirelay.v1" or "envoy".
func (f *File) Format() string { return f.loaded.Format }

// Start implements Source: it applies the file as read by OpenFile.
func (f *File) Start(env Env) error {
	f.env = env
	if env.XDS != nil {
		env.XDS.SetSource("file")
	}
	if err := env.Apply(Update{Snapshot: f.loaded.Snapshot, Source: f.source()}); err != nil {
		return err
	}
	f.watcher.Log = env.Log
	f.watcher.Interval = f.poll
	f.watcher.Files = static.ReferencedFiles(f.loaded.Snapshot)
	return nil
}

// Run implements Source: it watches the file until ctx ends.
func (f *File) Run(ctx context.Context) error {
	f.watcher.Run(ctx, static.Sum(f.data))
	return nil
}

// Reload implements Reloader: the file, and the files it names, are read
// and applied again even if unchanged.
func (f *File) Reload() { f.watcher.Trigger() }

func (f *File) source() string { return "file:" + f.path }

// applyLoaded is the watcher's Apply; forced (SIGHUP, a named file changed)
// re-applies an unchanged snapshot.
func (f *File) applyLoaded(l *static.Loaded, forced bool) error {
	if err := f.env.Apply(Update{Snapshot: l.Snapshot, Source: f.source(), Reread: forced}); err != nil {
		return rejectedByApply{err}
	}
	return nil
}

// reject is the watcher's OnError. Apply has counted the versions it
// rejected; a file that does not even parse or validate never reached it
// and is counted here.
func (f *File) reject(err error) {
	if !errors.As(err, new(rejectedByApply)) && f.env.Stats != nil {
		f.env.Stats.Reload("rejected")
	}
	f.env.Log.Error("config rejected; the running version stays in force", "file", f.path, "error", err)
}

// rejectedByApply marks an error from Apply, which has already counted the
// rejection.
type rejectedByApply struct{ error }

func (e rejectedByApply) Unwrap() error { return e.error }

func readConfig(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return data, nil
}

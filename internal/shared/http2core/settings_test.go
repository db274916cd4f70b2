package http2core

import (
	"errors"
	"testing"

	"golang.org/x/net/http2"
)

// settingsFrame parses a SETTINGS frame written by AppendSettings, as the
// Framer would hand it to a connection.
func settingsFrame(t *testing.T, settings ...http2.Setting) *http2.SettingsFrame {
	t.Helper()
	r := NewFrameReader(bytesReader(AppendSettings(nil, settings...)), 4096, 1024)
	f, _, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("got %T, want a SETTINGS frame", f)
	}
	return sf
}

func TestPeerSettingsApply(t *testing.T) {
	tests := []struct {
		name      string
		settings  []http2.Setting
		wantCode  http2.ErrCode // 0: accepted
		window    int64
		frame     int
		wantDelta []int64 // deltas seen for INITIAL_WINDOW_SIZE, in order
	}{
		{name: "defaults kept", settings: []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 10}},
			window: DefaultWindow, frame: DefaultMaxFrameSize},
		{name: "window raised", settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}},
			window: 1 << 20, frame: DefaultMaxFrameSize, wantDelta: []int64{1<<20 - DefaultWindow}},
		{name: "window lowered then raised, in order",
			settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 0}, {ID: http2.SettingInitialWindowSize, Val: 100}},
			window:   100, frame: DefaultMaxFrameSize, wantDelta: []int64{-DefaultWindow, 100}},
		{name: "largest frame size", settings: []http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 1<<24 - 1}},
			window: DefaultWindow, frame: 1<<24 - 1},
		{name: "frame size too small", settings: []http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 16383}},
			wantCode: http2.ErrCodeProtocol},
		{name: "frame size too large", settings: []http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 1 << 24}},
			wantCode: http2.ErrCodeProtocol},
		{name: "enable push not boolean", settings: []http2.Setting{{ID: http2.SettingEnablePush, Val: 2}},
			wantCode: http2.ErrCodeProtocol},
		{name: "unknown setting ignored", settings: []http2.Setting{{ID: 0x99, Val: 7}},
			window: DefaultWindow, frame: DefaultMaxFrameSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPeerSettings()
			var deltas []int64
			err := p.Apply(settingsFrame(t, tc.settings...), func(s http2.Setting, d int64) error {
				if s.ID == http2.SettingInitialWindowSize {
					deltas = append(deltas, d)
				}
				return nil
			})
			if tc.wantCode != 0 {
				code, ok := ConnErrorCode(err)
				if !ok || code != tc.wantCode {
					t.Fatalf("err %v, want a connection error %v", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.InitialWindow != tc.window || p.MaxFrameSize != tc.frame {
				t.Fatalf("window %d frame %d, want %d %d", p.InitialWindow, p.MaxFrameSize, tc.window, tc.frame)
			}
			if len(deltas) != len(tc.wantDelta) {
				t.Fatalf("deltas %v, want %v", deltas, tc.wantDelta)
			}
			for i := range deltas {
				if deltas[i] != tc.wantDelta[i] {
					t.Fatalf("deltas %v, want %v", deltas, tc.wantDelta)
				}
			}
		})
	}
}

// An initial window past 2^31-1 is refused by the Framer itself, with
// FLOW_CONTROL_ERROR, before Apply sees it.
func TestSettingsWindowTooLarge(t *testing.T) {
	r := NewFrameReader(bytesReader(AppendSettings(nil, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})), 4096, 1024)
	_, _, err := r.Next()
	if code, ok := ConnErrorCode(err); !ok || code != http2.ErrCodeFlowControl {
		t.Fatalf("err %v, want FLOW_CONTROL_ERROR", err)
	}
	if err := ValidateSetting(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}); err == nil {
		t.Fatal("ValidateSetting accepted a window of 2^31")
	}
}

// The callback's error stops the frame: later settings are not applied.
func TestPeerSettingsApplyStops(t *testing.T) {
	p := DefaultPeerSettings()
	stop := errors.New("stop")
	err := p.Apply(settingsFrame(t,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 20000}),
		func(http2.Setting, int64) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("err %v", err)
	}
	if p.InitialWindow != 1000 || p.MaxFrameSize != DefaultMaxFrameSize {
		t.Fatalf("window %d frame %d: the second setting was applied", p.InitialWindow, p.MaxFrameSize)
	}
}

// A stream window driven negative by a smaller SETTINGS_INITIAL_WINDOW_SIZE
// sends nothing until WINDOW_UPDATEs bring it above zero; one driven past
// 2^31-1 by a larger one is an overflow (RFC 9113 6.9.2).
func TestSendWindowAfterInitialWindowChanges(t *testing.T) {
	p := DefaultPeerSettings()
	var w SendWindow
	w.Set(p.InitialWindow)
	w.Consume(60000) // in flight
	grow := func(s http2.Setting, d int64) error {
		if s.ID == http2.SettingInitialWindowSize && !w.Grow(d) {
			return ErrStreamWindowOverflow
		}
		return nil
	}
	if err := p.Apply(settingsFrame(t, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000}), grow); err != nil {
		t.Fatal(err)
	}
	if got := w.Avail(); got != 1000-60000 {
		t.Fatalf("avail %d, want %d", got, 1000-60000)
	}
	if !w.Grow(59000) || w.Avail() != 0 {
		t.Fatalf("avail %d after WINDOW_UPDATE, want 0", w.Avail())
	}
	if !w.Grow(1) || w.Avail() != 1 {
		t.Fatalf("avail %d, want 1", w.Avail())
	}
	// Now raise the initial window to the maximum: 1 + (2^31-1 - 1000) > 2^31-1.
	w.Grow(999) // avail 1000: exactly the initial window
	err := p.Apply(settingsFrame(t, http2.Setting{ID: http2.SettingInitialWindowSize, Val: MaxWindow}), grow)
	if err != nil {
		t.Fatalf("window exactly at the maximum refused: %v", err)
	}
	if w.Avail() != MaxWindow {
		t.Fatalf("avail %d, want %d", w.Avail(), MaxWindow)
	}
	if w.Grow(1) {
		t.Fatal("a window past 2^31-1 was not reported")
	}
	if code, _ := ConnErrorCode(ErrStreamWindowOverflow); code != http2.ErrCodeFlowControl {
		t.Fatalf("overflow code %v", code)
	}
}

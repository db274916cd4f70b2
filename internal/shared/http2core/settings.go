package http2core

import (
	"errors"

	"golang.org/x/net/http2"
)

// PeerSettings holds what the peer's SETTINGS said that every sender needs,
// starting at the RFC 9113 defaults. Other settings (table size, concurrent
// streams) are the caller's, handed to it by Apply.
type PeerSettings struct {
	// InitialWindow is SETTINGS_INITIAL_WINDOW_SIZE: each new stream's
	// send window.
	InitialWindow int64
	// MaxFrameSize is SETTINGS_MAX_FRAME_SIZE: the largest frame payload to
	// send.
	MaxFrameSize int
}

// DefaultPeerSettings is what a peer has said before its first SETTINGS.
func DefaultPeerSettings() PeerSettings {
	return PeerSettings{InitialWindow: DefaultWindow, MaxFrameSize: DefaultMaxFrameSize}
}

// ValidateSetting checks one setting's value (RFC 9113 6.5.2); an invalid
// one is a ConnError with the code the RFC names.
func ValidateSetting(s http2.Setting) error {
	err := s.Valid()
	if err == nil {
		return nil
	}
	if ce, ok := errors.AsType[http2.ConnectionError](err); ok {
		return ConnError{http2.ErrCode(ce), "invalid setting " + s.ID.String()}
	}
	return ConnError{http2.ErrCodeProtocol, "invalid setting " + s.ID.String()}
}

// Apply validates and applies the settings of a SETTINGS frame that is not
// an ACK, in order. After each valid setting, each (if not nil) is called
// with it and, for SETTINGS_INITIAL_WINDOW_SIZE, windowDelta, the change to
// add to every open stream's send window (SendWindow.Grow; it may leave a
// window negative, and one that would pass MaxWindow is a connection error
// of type FLOW_CONTROL_ERROR). An error, from validation or from each, stops
// the processing; the caller sends the ACK once Apply returns nil.
func (p *PeerSettings) Apply(f *http2.SettingsFrame, each func(s http2.Setting, windowDelta int64) error) error {
	for i := range f.NumSettings() {
		s := f.Setting(i)
		if err := ValidateSetting(s); err != nil {
			return err
		}
		var delta int64
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta = int64(s.Val) - p.InitialWindow
			p.InitialWindow = int64(s.Val)
		case http2.SettingMaxFrameSize:
			p.MaxFrameSize = int(s.Val)
		}
		if each != nil {
			if err := each(s, delta); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrStreamWindowOverflow is the connection error for a change of
// SETTINGS_INITIAL_WINDOW_SIZE that takes a stream's window past MaxWindow.
var ErrStreamWindowOverflow = ConnError{http2.ErrCodeFlowControl, "stream window overflow"}

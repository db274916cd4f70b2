package http2core

import (
	"testing"

	"golang.org/x/net/http2"
)

func TestClientStreams(t *testing.T) {
	var s ClientStreams
	tests := []struct {
		name string
		id   uint32
		code http2.ErrCode // 0: opened
	}{
		{name: "first", id: 1},
		{name: "skipping ids", id: 7},
		{name: "even", id: 8, code: http2.ErrCodeProtocol},
		{name: "reused", id: 7, code: http2.ErrCodeStreamClosed},
		{name: "below the last", id: 3, code: http2.ErrCodeStreamClosed},
		{name: "next", id: 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Open(tc.id)
			code, isConn := ConnErrorCode(err)
			switch {
			case tc.code == 0 && err != nil:
				t.Fatalf("Open(%d): %v", tc.id, err)
			case tc.code != 0 && (!isConn || code != tc.code):
				t.Fatalf("Open(%d): %v, want %v", tc.id, err, tc.code)
			}
		})
	}
	if s.Last() != 9 || s.Idle(9) || s.Idle(3) || !s.Idle(11) {
		t.Fatalf("last %d; idle(9)=%v idle(3)=%v idle(11)=%v", s.Last(), s.Idle(9), s.Idle(3), s.Idle(11))
	}
}

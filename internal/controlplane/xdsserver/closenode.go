package xdsserver

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// nodeTrack is a stream's entry in Server.byNode: how CloseNode reaches it.
// It is a separate allocation, made only when Authorize is set, so that a
// server that never revokes keeps its per-stream memory unchanged.
type nodeTrack struct {
	c *conn
	// end ends the stream on its transport with a status; nil until the
	// transport has armed it. Guarded by Server.nmu.
	end func(error)
	// closed is CloseNode's status once it has reached this stream. Guarded
	// by Server.nmu.
	closed error
}

// track lists c under its node before Authorize reads anything: a change
// that Authorize's read misses (written after it) is announced to CloseNode
// after the stream is listed, so no stream opens unseen by a revocation.
func (s *Server) track(c *conn) {
	if s.auth == nil {
		return
	}
	t := &nodeTrack{c: c}
	c.trk = t
	id := c.node.GetId()
	s.nmu.Lock()
	if s.byNode == nil {
		s.byNode = make(map[string][]*nodeTrack)
	}
	s.byNode[id] = append(s.byNode[id], t)
	s.nmu.Unlock()
}

// untrack forgets a stream that ended or was refused.
func (s *Server) untrack(c *conn) {
	t := c.trk
	if t == nil {
		return
	}
	id := c.node.GetId()
	s.nmu.Lock()
	defer s.nmu.Unlock()
	ts := s.byNode[id]
	for i, x := range ts {
		if x == t {
			ts[i] = ts[len(ts)-1]
			ts[len(ts)-1] = nil
			ts = ts[:len(ts)-1]
			break
		}
	}
	if len(ts) == 0 {
		delete(s.byNode, id)
	} else {
		s.byNode[id] = ts
	}
}

// arm tells CloseNode how to end the stream once its transport can. If
// CloseNode already reached the stream (between Authorize and now), arm
// returns its status instead, for the caller to end the stream with.
func (c *conn) arm(end func(error)) error {
	t := c.trk
	if t == nil {
		return nil
	}
	c.s.nmu.Lock()
	defer c.s.nmu.Unlock()
	if t.closed != nil {
		return t.closed
	}
	t.end = end
	return nil
}

// CloseNode ends every open stream (both transports, SotW and delta) of the
// node with err's gRPC status (PermissionDenied when it has none), as when
// the node's identity is revoked: the client gets the status, its stream's
// cache subscription ends at once, and its reconnect goes through Authorize
// again. A stream still opening is ended as soon as it is set up. It
// returns the number of streams reached. Streams are listed by node only
// when Authorize is set (without it every node may connect, and there is
// nothing to withdraw), so without Authorize CloseNode does nothing.
func (s *Server) CloseNode(nodeID string, err error) int {
	if _, ok := status.FromError(err); !ok || err == nil {
		msg := "xds: node " + nodeID + ": access withdrawn"
		if err != nil {
			msg = err.Error()
		}
		err = status.Error(codes.PermissionDenied, msg)
	}
	s.nmu.Lock()
	var ends []func(error)
	n := 0
	for _, t := range s.byNode[nodeID] {
		if t.closed != nil {
			continue
		}
		t.closed = err
		n++
		if t.end != nil {
			ends = append(ends, t.end)
		}
	}
	s.nmu.Unlock()
	for _, end := range ends {
		end(err)
	}
	if n > 0 {
		s.log.Info("xds streams of node closed", "node", nodeID, "streams", n, "status", err)
	}
	return n
}

// runGRPC runs a grpc-go stream's loop. A tracked stream runs it on a
// goroutine of its own, so that CloseNode can end the handler (the only way
// to end a grpc-go stream with a status) while the loop waits in Recv; the
// loop's goroutine ends when grpc-go cancels the stream on the handler's
// return. Untracked streams keep the one goroutine grpc-go gives them.
func (c *conn) runGRPC(loop func() error) error {
	if c.trk == nil {
		return loop()
	}
	kill := make(chan error, 1) // CloseNode calls end at most once
	if err := c.arm(func(err error) { kill <- err }); err != nil {
		c.close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- loop() }()
	select {
	case err := <-done:
		return err
	case err := <-kill:
		c.close() // no push from here on
		return err
	}
}

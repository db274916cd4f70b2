package xdsserver

import (
	"errors"
	"io"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// LoadReports receives Envoy's Load Reporting Service streams
// (envoy.service.load_stats.v3) on the xDS port: proxies and Envoy report
// their per-cluster load there. Both transports call it from the stream's
// receiving goroutine, one request at a time per stream; it must not block.
type LoadReports interface {
	// Open answers a stream's first request: which clusters to report and
	// how often. An error ends the stream with its status.
	Open(node *corev3.Node) (*lrsv3.LoadStatsResponse, error)
	// Report takes every request of the stream (the first one included),
	// in order, with the node the first one named.
	Report(node *corev3.Node, req *lrsv3.LoadStatsRequest)
}

// lrsOpen checks a stream's first request and asks LoadReports for the
// answer; the stream's client must pass Authorize as an xDS stream does.
func (s *Server) lrsOpen(req *lrsv3.LoadStatsRequest, p Peer) (*corev3.Node, *lrsv3.LoadStatsResponse, error) {
	node := req.GetNode()
	if node.GetId() == "" {
		return nil, nil, status.Error(codes.InvalidArgument, "lrs: first request carries no node id")
	}
	if _, err := s.authorize(node, p); err != nil {
		return nil, nil, err
	}
	resp, err := s.lrs.Open(node)
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Error(codes.Internal, err.Error())
		}
		return nil, nil, err
	}
	node = proto.CloneOf(node)
	return node, resp, nil
}

// lrsService is LoadReportingService on a grpc.Server.
type lrsService struct {
	lrsv3.UnimplementedLoadReportingServiceServer
	s *Server
}

func (l lrsService) StreamLoadStats(stream lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	node, resp, err := l.s.lrsOpen(req, peerOf(stream.Context()))
	if err != nil {
		return err
	}
	if err := stream.Send(resp); err != nil {
		return err
	}
	for {
		l.s.lrs.Report(node, req)
		if req, err = stream.Recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// handleLRS is the lean transport's LoadReportingService: one request,
// decoded on the connection's reader goroutine.
func (st *h2stream) handleLRS(b []byte) error {
	req := &lrsv3.LoadStatsRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		return status.Errorf(codes.Internal, "lrs: decoding the request: %v", err)
	}
	if st.lrsNode == nil {
		node, resp, err := st.c.s.lrsOpen(req, st.c.peer())
		if err != nil {
			return err
		}
		if err := st.send(resp); err != nil {
			return err
		}
		st.lrsNode = node
	}
	st.c.s.lrs.Report(st.lrsNode, req)
	return nil
}

//go:build wasip1

package proxywasm

// Network (L4) filters: a plugin on a tcp listener gets a TCPContext per
// connection and sees the bytes each way before they are forwarded.

// TCPRootContext is implemented by the root context of a network filter:
// a context created while its NewTCPContext returns non-nil is a
// connection's, otherwise an HTTP stream's.
type TCPRootContext interface {
	NewTCPContext(contextID uint32) TCPContext
}

// PeerType says which side closed a connection.
type PeerType uint32

const (
	PeerTypeUnknown PeerType = 0
	PeerTypeLocal   PeerType = 1
	PeerTypeRemote  PeerType = 2
)

// TCPContext handles one proxied connection. Data callbacks read and
// replace the bytes with Get/ReplaceDownstreamData (bytes from the client)
// and Get/ReplaceUpstreamData (bytes from the upstream). ActionPause holds
// the bytes back; they are shown again with the next ones. CloseConnection
// closes both sides.
type TCPContext interface {
	OnNewConnection() Action
	OnDownstreamData(dataSize int, endOfStream bool) Action
	OnUpstreamData(dataSize int, endOfStream bool) Action
	OnDownstreamClose(peer PeerType)
	OnUpstreamClose(peer PeerType)
}

// DefaultTCPContext passes every byte; embed it and override what you need.
type DefaultTCPContext struct{}

func (DefaultTCPContext) OnNewConnection() Action           { return ActionContinue }
func (DefaultTCPContext) OnDownstreamData(int, bool) Action { return ActionContinue }
func (DefaultTCPContext) OnUpstreamData(int, bool) Action   { return ActionContinue }
func (DefaultTCPContext) OnDownstreamClose(PeerType)        {}
func (DefaultTCPContext) OnUpstreamClose(PeerType)          {}

const (
	bufDownstreamData = 2
	bufUpstreamData   = 3
)

// GetDownstreamData returns up to max bytes from start of the data being
// shown in OnDownstreamData.
func GetDownstreamData(start, max int) ([]byte, error) {
	return getBuffer(bufDownstreamData, start, max)
}

// ReplaceDownstreamData replaces the data being forwarded upstream.
func ReplaceDownstreamData(b []byte) error {
	return asErr(proxySetBufferBytes(bufDownstreamData, 0, 1<<31, ptr(b), uint32(len(b))))
}

// GetUpstreamData returns up to max bytes from start of the data being
// shown in OnUpstreamData.
func GetUpstreamData(start, max int) ([]byte, error) { return getBuffer(bufUpstreamData, start, max) }

// ReplaceUpstreamData replaces the data being forwarded downstream.
func ReplaceUpstreamData(b []byte) error {
	return asErr(proxySetBufferBytes(bufUpstreamData, 0, 1<<31, ptr(b), uint32(len(b))))
}

// CloseConnection closes the connection, both ways.
func CloseConnection() error { return asErr(proxyCloseStream(streamRequest)) }

//go:wasmimport env proxy_close_stream
func proxyCloseStream(streamType uint32) uint32

type tcpEntry struct {
	id  uint32
	ctx TCPContext
}

var tcpStreams []tcpEntry

// newTCPContext makes id a connection's context if the root has one for it.
func newTCPContext(id uint32, root RootContext) bool {
	tr, ok := root.(TCPRootContext)
	if !ok {
		return false
	}
	c := tr.NewTCPContext(id)
	if c == nil {
		return false
	}
	tcpStreams = append(tcpStreams, tcpEntry{id, c})
	return true
}

func deleteTCPContext(id uint32) bool {
	for i, s := range tcpStreams {
		if s.id == id {
			last := len(tcpStreams) - 1
			tcpStreams[i] = tcpStreams[last]
			tcpStreams[last] = tcpEntry{}
			tcpStreams = tcpStreams[:last]
			return true
		}
	}
	return false
}

func tcpStream(id uint32) TCPContext {
	currentID = id
	for _, s := range tcpStreams {
		if s.id == id {
			return s.ctx
		}
	}
	return DefaultTCPContext{}
}

//go:wasmexport proxy_on_new_connection
func proxyOnNewConnection(id uint32) uint32 { return uint32(tcpStream(id).OnNewConnection()) }

//go:wasmexport proxy_on_downstream_data
func proxyOnDownstreamData(id, size, eos uint32) uint32 {
	return uint32(tcpStream(id).OnDownstreamData(int(size), eos != 0))
}

//go:wasmexport proxy_on_upstream_data
func proxyOnUpstreamData(id, size, eos uint32) uint32 {
	return uint32(tcpStream(id).OnUpstreamData(int(size), eos != 0))
}

//go:wasmexport proxy_on_downstream_connection_close
func proxyOnDownstreamConnectionClose(id, peer uint32) {
	tcpStream(id).OnDownstreamClose(PeerType(peer))
}

//go:wasmexport proxy_on_upstream_connection_close
func proxyOnUpstreamConnectionClose(id, peer uint32) {
	tcpStream(id).OnUpstreamClose(PeerType(peer))
}

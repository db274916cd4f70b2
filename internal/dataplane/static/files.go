package static

import (
	"crypto/sha256"
	"os"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/omnirelay/omnirelay/internal/shared/resources"
)

// ReferencedFiles lists the files a snapshot's TLS contexts and secrets read
// (certificate chains, keys, trusted CAs, OCSP staples), sorted and without
// duplicates. The watcher re-applies the config when one of them changes,
// so a renewed certificate (certbot, cert-manager) is served without a
// SIGHUP.
func ReferencedFiles(s *resources.Snapshot) []string {
	var files []string
	socket := func(ts *corev3.TransportSocket) {
		a := ts.GetTypedConfig()
		if a == nil {
			return
		}
		var m proto.Message
		switch a.MessageName() {
		case "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext":
			m = &tlsv3.DownstreamTlsContext{}
		case "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":
			m = &tlsv3.UpstreamTlsContext{}
		default:
			return
		}
		if a.UnmarshalTo(m) == nil {
			files = dataSourceFiles(m.ProtoReflect(), files)
		}
	}
	for _, l := range s.Listeners {
		for _, fc := range l.GetFilterChains() {
			socket(fc.GetTransportSocket())
		}
		socket(l.GetDefaultFilterChain().GetTransportSocket())
	}
	for _, c := range s.Clusters {
		socket(c.GetTransportSocket())
		for _, m := range c.GetTransportSocketMatches() {
			socket(m.GetTransportSocket())
		}
	}
	for _, sec := range s.Secrets {
		files = dataSourceFiles(sec.ProtoReflect(), files)
	}
	slices.Sort(files)
	return slices.Compact(files)
}

var dataSourceName = (&corev3.DataSource{}).ProtoReflect().Descriptor().FullName()

// dataSourceFiles appends the filename of every DataSource set in m.
func dataSourceFiles(m protoreflect.Message, files []string) []string {
	if m.Descriptor().FullName() == dataSourceName {
		if f := m.Interface().(*corev3.DataSource).GetFilename(); f != "" {
			files = append(files, f)
		}
		return files
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				files = dataSourceFiles(l.Get(i).Message(), files)
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					files = dataSourceFiles(mv.Message(), files)
				}
				return true
			})
		default:
			files = dataSourceFiles(v.Message(), files)
		}
		return true
	})
	return files
}

// filesSum hashes the content of files; a missing or unreadable file hashes
// as its error, so that its return is a change too.
func filesSum(files []string) []byte {
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			data = []byte("error: " + err.Error())
		}
		s := sha256.Sum256(data)
		h.Write([]byte(f))
		h.Write(s[:])
	}
	return h.Sum(nil)
}

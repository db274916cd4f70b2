package h2

type clientStream struct{}

func (cs *clientStream) downstreamCancelled() {}

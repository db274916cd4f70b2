package wasm

import (
	"context"
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// sharedState is what a plugin's instances share, as Envoy shares it between
// the worker VMs of one plugin: key-value data with compare-and-swap, named
// queues, and the plugin's metric ids.
type sharedState struct {
	mu     sync.Mutex
	data   map[string]sharedValue
	casSeq uint32
	queues map[string]uint32
	qdata  map[uint32][][]byte
	// ready carries queue ids to the background instance.
	ready chan uint32

	metricIDs map[string]uint32
	metrics   []*metric

	// bytes is what data and queues hold, bounded by maxSharedBytes so that
	// a plugin cannot grow the proxy's heap without limit.
	bytes int
}

// maxSharedBytes bounds a plugin's shared data and queued items together.
const maxSharedBytes = 64 << 20

type sharedValue struct {
	value []byte
	cas   uint32
}

func newSharedState() *sharedState {
	return &sharedState{
		data:      map[string]sharedValue{},
		queues:    map[string]uint32{},
		qdata:     map[uint32][][]byte{},
		ready:     make(chan uint32, 64),
		metricIDs: map[string]uint32{},
	}
}

func (s *sharedState) hasQueues() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queues) > 0
}

// maxQueueDepth bounds a queue nobody dequeues.
const maxQueueDepth = 10000

func hostGetSharedData(ctx context.Context, in *instance, a []uint64) uint32 {
	key, ok := in.read(u32(a[0]), u32(a[1]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	sh := in.p.shared
	sh.mu.Lock()
	v, found := sh.data[string(key)]
	sh.mu.Unlock()
	if !found {
		return statusNotFound
	}
	if !in.mem.WriteUint32Le(u32(a[4]), v.cas) {
		return statusInvalidMemoryAccess
	}
	return in.returnBytes(ctx, v.value, u32(a[2]), u32(a[3]))
}

func hostSetSharedData(_ context.Context, in *instance, a []uint64) uint32 {
	key, ok1 := in.read(u32(a[0]), u32(a[1]))
	val, ok2 := in.read(u32(a[2]), u32(a[3]))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	cas := u32(a[4])
	sh := in.p.shared
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur, found := sh.data[string(key)]
	if cas != 0 && (!found || cur.cas != cas) {
		return statusCasMismatch
	}
	grow := len(val) - len(cur.value)
	if !found {
		grow += len(key)
	}
	if sh.bytes+grow > maxSharedBytes {
		return statusInternalFailure
	}
	sh.bytes += grow
	sh.casSeq++
	if sh.casSeq == 0 {
		sh.casSeq = 1
	}
	sh.data[string(key)] = sharedValue{value: append([]byte(nil), val...), cas: sh.casSeq}
	return statusOK
}

func hostRegisterQueue(_ context.Context, in *instance, a []uint64) uint32 {
	name, ok := in.read(u32(a[0]), u32(a[1]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	sh := in.p.shared
	sh.mu.Lock()
	id, found := sh.queues[string(name)]
	if !found {
		id = uint32(len(sh.queues) + 1)
		sh.queues[string(name)] = id
	}
	sh.mu.Unlock()
	if !in.mem.WriteUint32Le(u32(a[2]), id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hostResolveQueue(_ context.Context, in *instance, a []uint64) uint32 {
	// Queues are per plugin: the vm_id argument (a[0], a[1]) names the
	// plugin's own VM or nothing.
	name, ok := in.read(u32(a[2]), u32(a[3]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	sh := in.p.shared
	sh.mu.Lock()
	id, found := sh.queues[string(name)]
	sh.mu.Unlock()
	if !found {
		return statusNotFound
	}
	if !in.mem.WriteUint32Le(u32(a[4]), id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hostEnqueue(_ context.Context, in *instance, a []uint64) uint32 {
	data, ok := in.read(u32(a[1]), u32(a[2]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	id := u32(a[0])
	sh := in.p.shared
	sh.mu.Lock()
	if id == 0 || id > uint32(len(sh.queues)) {
		sh.mu.Unlock()
		return statusNotFound
	}
	if len(sh.qdata[id]) >= maxQueueDepth || sh.bytes+len(data) > maxSharedBytes {
		sh.mu.Unlock()
		return statusInternalFailure
	}
	sh.bytes += len(data)
	sh.qdata[id] = append(sh.qdata[id], append([]byte(nil), data...))
	sh.mu.Unlock()
	select {
	case sh.ready <- id:
	default: // the background instance will find the items on its next notification
	}
	return statusOK
}

func hostDequeue(ctx context.Context, in *instance, a []uint64) uint32 {
	id := u32(a[0])
	sh := in.p.shared
	sh.mu.Lock()
	if id == 0 || id > uint32(len(sh.queues)) {
		sh.mu.Unlock()
		return statusNotFound
	}
	q := sh.qdata[id]
	if len(q) == 0 {
		sh.mu.Unlock()
		return statusEmpty
	}
	item := q[0]
	q[0] = nil
	sh.qdata[id] = q[1:]
	sh.bytes -= len(item)
	sh.mu.Unlock()
	return in.returnBytes(ctx, item, u32(a[1]), u32(a[2]))
}

// Metric types of proxy_define_metric.
const (
	metricCounter   = 0
	metricGauge     = 1
	metricHistogram = 2
)

// histogramBounds are the buckets of guest histograms: the ABI says nothing
// about units, so they span 1 to 10^7 in 1-2-5 steps.
var histogramBounds = func() []float64 {
	var b []float64
	for m := 1.0; m <= 1e7; m *= 10 {
		b = append(b, m, 2*m, 5*m)
	}
	return b
}()

// metric is one guest-defined metric. Values are atomics: any instance of
// the plugin may update it while /metrics reads it.
type metric struct {
	plugin, name string
	kind         uint32
	value        atomic.Int64
	buckets      []atomic.Uint64 // histogram only
	count        atomic.Uint64
	sum          atomic.Uint64 // float64 bits
}

func (m *metric) record(v uint64) {
	for i, b := range histogramBounds {
		if float64(v) <= b {
			m.buckets[i].Add(1)
		}
	}
	m.count.Add(1)
	for {
		old := m.sum.Load()
		if m.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+float64(v))) {
			return
		}
	}
}

// metricSet holds every plugin's metrics for the runtime's collector.
type metricSet struct {
	mu  sync.Mutex
	all map[[2]string]*metric
}

func newMetricSet() *metricSet { return &metricSet{all: map[[2]string]*metric{}} }

func (ms *metricSet) get(plugin, name string, kind uint32) *metric {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	k := [2]string{plugin, name}
	if m, ok := ms.all[k]; ok && m.kind == kind {
		return m
	}
	m := &metric{plugin: plugin, name: name, kind: kind}
	if kind == metricHistogram {
		m.buckets = make([]atomic.Uint64, len(histogramBounds))
	}
	ms.all[k] = m
	return m
}

func hostDefineMetric(_ context.Context, in *instance, a []uint64) uint32 {
	kind := u32(a[0])
	if kind > metricHistogram {
		return statusBadArgument
	}
	name, ok := in.read(u32(a[1]), u32(a[2]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	sh := in.p.shared
	sh.mu.Lock()
	id, found := sh.metricIDs[string(name)]
	if !found {
		sh.metrics = append(sh.metrics, in.p.rt.metrics.get(in.p.name, string(name), kind))
		id = uint32(len(sh.metrics))
		sh.metricIDs[string(name)] = id
	}
	sh.mu.Unlock()
	if !in.mem.WriteUint32Le(u32(a[3]), id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func (sh *sharedState) metric(id uint32) *metric {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if id == 0 || id > uint32(len(sh.metrics)) {
		return nil
	}
	return sh.metrics[id-1]
}

func hostIncrementMetric(_ context.Context, in *instance, a []uint64) uint32 {
	m := in.p.shared.metric(u32(a[0]))
	if m == nil {
		return statusNotFound
	}
	if m.kind == metricHistogram {
		return statusBadArgument
	}
	off := int64(a[1])
	if m.kind == metricCounter && off < 0 {
		return statusBadArgument
	}
	m.value.Add(off)
	return statusOK
}

func hostRecordMetric(_ context.Context, in *instance, a []uint64) uint32 {
	m := in.p.shared.metric(u32(a[0]))
	if m == nil {
		return statusNotFound
	}
	switch m.kind {
	case metricHistogram:
		m.record(a[1])
	case metricGauge:
		m.value.Store(int64(a[1]))
	default:
		return statusBadArgument
	}
	return statusOK
}

func hostGetMetric(_ context.Context, in *instance, a []uint64) uint32 {
	m := in.p.shared.metric(u32(a[0]))
	if m == nil {
		return statusNotFound
	}
	v := uint64(m.value.Load())
	if m.kind == metricHistogram {
		v = m.count.Load()
	}
	if !in.mem.WriteUint64Le(u32(a[1]), v) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

var (
	descCounter   = prometheus.NewDesc("omnirelay_wasm_counter", "Counter defined by a Proxy-Wasm plugin (proxy_define_metric).", []string{"plugin", "name"}, nil)
	descGauge     = prometheus.NewDesc("omnirelay_wasm_gauge", "Gauge defined by a Proxy-Wasm plugin.", []string{"plugin", "name"}, nil)
	descHistogram = prometheus.NewDesc("omnirelay_wasm_histogram", "Histogram defined by a Proxy-Wasm plugin.", []string{"plugin", "name"}, nil)
)

// Collector exports the metrics plugins define, for the proxy's /metrics
// registry: omnirelay_wasm_counter, _gauge and _histogram, labelled by
// plugin and metric name.
func (r *Runtime) Collector() prometheus.Collector { return collector{r.metrics} }

type collector struct{ ms *metricSet }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCounter
	ch <- descGauge
	ch <- descHistogram
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.ms.mu.Lock()
	ms := make([]*metric, 0, len(c.ms.all))
	for _, m := range c.ms.all {
		ms = append(ms, m)
	}
	c.ms.mu.Unlock()
	sort.Slice(ms, func(i, j int) bool { return ms[i].plugin+ms[i].name < ms[j].plugin+ms[j].name })
	for _, m := range ms {
		switch m.kind {
		case metricCounter:
			ch <- prometheus.MustNewConstMetric(descCounter, prometheus.CounterValue, float64(m.value.Load()), m.plugin, m.name)
		case metricGauge:
			ch <- prometheus.MustNewConstMetric(descGauge, prometheus.GaugeValue, float64(m.value.Load()), m.plugin, m.name)
		case metricHistogram:
			b := make(map[float64]uint64, len(histogramBounds))
			for i, ub := range histogramBounds {
				b[ub] = m.buckets[i].Load()
			}
			ch <- prometheus.MustNewConstHistogram(descHistogram, m.count.Load(), math.Float64frombits(m.sum.Load()), b, m.plugin, m.name)
		}
	}
}

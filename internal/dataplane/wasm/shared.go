package wasm

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// sharedState is the shared data of a VM, as Envoy keys it by vm_id:
// key-value data with compare-and-swap, seen by every instance of the
// plugins of one vm_id (a plugin with no vm_id has its own).
type sharedState struct {
	mu     sync.Mutex
	data   map[string]sharedValue
	casSeq uint32

	// bytes is what data holds, bounded by maxSharedBytes so that a plugin
	// cannot grow the proxy's heap without limit.
	bytes int
}

// maxSharedBytes bounds a VM's shared data, and each queue's items.
const maxSharedBytes = 64 << 20

type sharedValue struct {
	value []byte
	cas   uint32
}

func newSharedState() *sharedState {
	return &sharedState{data: map[string]sharedValue{}}
}

// vmShared is the runtime's shared data by vm_id, each held while a plugin
// of that vm_id is loaded.
type vmShared struct {
	sh    *sharedState
	users int
	// started records, per module (sha256), that a plugin of the vm_id ran
	// proxy_on_vm_start: the VM started.
	started map[[32]byte]*atomic.Bool
}

// sharedFor returns the shared data of vmID (a new one for an empty vm_id)
// and the VM-started flag of the module sum in it; releaseShared gives them
// back at the plugin's Close.
func (r *Runtime) sharedFor(vmID string, sum [32]byte) (*sharedState, *atomic.Bool) {
	if vmID == "" {
		return newSharedState(), new(atomic.Bool)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.vmData[vmID]
	if v == nil {
		v = &vmShared{sh: newSharedState(), started: map[[32]byte]*atomic.Bool{}}
		r.vmData[vmID] = v
	}
	v.users++
	f := v.started[sum]
	if f == nil {
		f = new(atomic.Bool)
		v.started[sum] = f
	}
	return v.sh, f
}

// claimVMStart reports whether the caller is to run proxy_on_vm_start:
// true once per VM.
func (p *Plugin) claimVMStart() bool { return p.vmStarted.CompareAndSwap(false, true) }

func (r *Runtime) releaseShared(vmID string) {
	if vmID == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.vmData[vmID]; v != nil {
		if v.users--; v.users <= 0 {
			delete(r.vmData, vmID)
		}
	}
}

// queueSet holds the runtime's shared queues. As in Envoy, a queue is
// named by (vm_id, name) and its id is valid across VMs: a plugin resolves
// another VM's queue by that VM's id and enqueues to it; the plugin that
// registered it last is notified (proxy_on_queue_ready). A queue outlives
// its plugin (a reload registers it again), bounded by maxQueueDepth items
// and maxSharedBytes.
type queueSet struct {
	mu     sync.Mutex
	byName map[[2]string]uint32
	q      []*sharedQueue // id-1
}

type sharedQueue struct {
	items [][]byte
	bytes int
	ready chan uint32 // the owner's notifications
}

// queueVM is the vm_id under which p's queues are named: its vm_id, or a
// name of its own when it has none.
func (p *Plugin) queueVM() string {
	if p.vm.ID != "" {
		return p.vm.ID
	}
	return fmt.Sprintf("\x00%p", p)
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
	p := in.p
	qs := &p.rt.queues
	k := [2]string{p.queueVM(), string(name)}
	qs.mu.Lock()
	id, found := qs.byName[k]
	if !found {
		qs.q = append(qs.q, &sharedQueue{})
		id = uint32(len(qs.q))
		qs.byName[k] = id
	}
	qs.q[id-1].ready = p.ready
	qs.mu.Unlock()
	p.queued.Store(true)
	if !in.mem.WriteUint32Le(u32(a[2]), id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func hostResolveQueue(_ context.Context, in *instance, a []uint64) uint32 {
	vm, ok1 := in.read(u32(a[0]), u32(a[1]))
	name, ok2 := in.read(u32(a[2]), u32(a[3]))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	// An empty vm_id is the plugin's own VM.
	vmID := string(vm)
	if vmID == "" {
		vmID = in.p.queueVM()
	}
	qs := &in.p.rt.queues
	qs.mu.Lock()
	id, found := qs.byName[[2]string{vmID, string(name)}]
	qs.mu.Unlock()
	if !found {
		return statusNotFound
	}
	if !in.mem.WriteUint32Le(u32(a[4]), id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func (qs *queueSet) get(id uint32) *sharedQueue {
	if id == 0 || id > uint32(len(qs.q)) {
		return nil
	}
	return qs.q[id-1]
}

func hostEnqueue(_ context.Context, in *instance, a []uint64) uint32 {
	data, ok := in.read(u32(a[1]), u32(a[2]))
	if !ok {
		return statusInvalidMemoryAccess
	}
	id := u32(a[0])
	qs := &in.p.rt.queues
	qs.mu.Lock()
	q := qs.get(id)
	if q == nil {
		qs.mu.Unlock()
		return statusNotFound
	}
	if len(q.items) >= maxQueueDepth || q.bytes+len(data) > maxSharedBytes {
		qs.mu.Unlock()
		return statusInternalFailure
	}
	q.bytes += len(data)
	q.items = append(q.items, append([]byte(nil), data...))
	ready := q.ready
	qs.mu.Unlock()
	select {
	case ready <- id:
	default: // the owner will find the items on its next notification
	}
	return statusOK
}

func hostDequeue(ctx context.Context, in *instance, a []uint64) uint32 {
	id := u32(a[0])
	qs := &in.p.rt.queues
	qs.mu.Lock()
	q := qs.get(id)
	if q == nil {
		qs.mu.Unlock()
		return statusNotFound
	}
	if len(q.items) == 0 {
		qs.mu.Unlock()
		return statusEmpty
	}
	item := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	q.bytes -= len(item)
	qs.mu.Unlock()
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
	p := in.p
	p.metricMu.Lock()
	id, found := p.metricIDs[string(name)]
	if !found {
		p.metrics = append(p.metrics, p.rt.metrics.get(p.name, string(name), kind))
		id = uint32(len(p.metrics))
		if p.metricIDs == nil {
			p.metricIDs = map[string]uint32{}
		}
		p.metricIDs[string(name)] = id
	}
	p.metricMu.Unlock()
	if !in.mem.WriteUint32Le(u32(a[3]), id) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

func (p *Plugin) metric(id uint32) *metric {
	p.metricMu.Lock()
	defer p.metricMu.Unlock()
	if id == 0 || id > uint32(len(p.metrics)) {
		return nil
	}
	return p.metrics[id-1]
}

func hostIncrementMetric(_ context.Context, in *instance, a []uint64) uint32 {
	m := in.p.metric(u32(a[0]))
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
	m := in.p.metric(u32(a[0]))
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
	m := in.p.metric(u32(a[0]))
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

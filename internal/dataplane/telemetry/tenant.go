package telemetry

import (
	"hash/maphash"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/metric"
)

// Budget is what one tenant may emit. Zero rates mean "unlimited"; a
// negative rate means "nothing".
type Budget struct {
	SpansPerSecond float64
	SpanBurst      float64 // bucket size; 0 means one second's worth
	LogsPerSecond  float64
	LogBurst       float64
	// MaxSeries caps the distinct metric attribute sets the tenant may create
	// per instrument; beyond it measurements go to the tenant's overflow
	// series (otel.metric.overflow=true). 0 means the table default.
	MaxSeries int
}

// OverflowTenant is where requests of tenants beyond the table's capacity
// are accounted, and the tenant name of requests whose tenant could not be
// derived is DefaultTenant.
const (
	OverflowTenant = "_overflow"
	DefaultTenant  = "_default"
)

// Drop reasons, the "reason" label of omnirelay_telemetry_dropped_total.
const (
	ReasonRateLimited    = "rate_limited"    // the tenant's token bucket was empty
	ReasonQueueFull      = "queue_full"      // the export queue was full
	ReasonExportFailed   = "export_failed"   // the collector rejected or was unreachable
	ReasonSeriesOverflow = "series_overflow" // a metric series went to the overflow series
	ReasonTooManyAttempt = "attempts_cap"    // attempt spans past the per-request cap
)

type signalKind int

const (
	sigSpans signalKind = iota
	sigLogs
	sigMetrics
	numSignals
)

var signalNames = [numSignals]string{"spans", "logs", "metrics"}

const (
	rRate = iota
	rQueue
	rExport
	rSeries
	rAttempts
	numReasons
)

var reasonNames = [numReasons]string{ReasonRateLimited, ReasonQueueFull, ReasonExportFailed, ReasonSeriesOverflow, ReasonTooManyAttempt}

// Tenant is one entry of the tenant table. Its buckets are guarded by mu
// (uncontended unless one tenant is hot on both cores); drop counters are
// atomics read by the Prometheus collector at scrape time.
type Tenant struct {
	name   string
	budget Budget

	mu    sync.Mutex
	spans bucket
	logs  bucket

	dropped [numSignals][numReasons]atomic.Uint64

	// series is used by export workers only (metrics are recorded there),
	// never on the request path; smu orders the workers of several
	// pipelines (one per collector) that share the tenant table.
	smu      sync.Mutex
	series   map[seriesKey]*seriesEntry
	nseries  [numInst]int
	overflow [numInst]metric.MeasurementOption
}

// Name returns the tenant's name.
func (t *Tenant) Name() string { return t.name }

type bucket struct {
	tokens float64
	last   int64 // unix nanos of the last refill
}

// take refills by elapsed time and takes one token.
func (b *bucket) take(rate, burst float64, now int64) bool {
	if rate == 0 {
		return true
	}
	if rate < 0 {
		return false
	}
	if burst <= 0 {
		burst = math.Max(rate, 1)
	}
	if b.last == 0 {
		b.tokens, b.last = burst, now
	}
	if el := now - b.last; el > 0 {
		b.tokens = math.Min(burst, b.tokens+float64(el)*rate/1e9)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

func (t *Tenant) allow(sig signalKind, now int64) bool {
	t.mu.Lock()
	var ok bool
	if sig == sigSpans {
		ok = t.spans.take(t.budget.SpansPerSecond, t.budget.SpanBurst, now)
	} else {
		ok = t.logs.take(t.budget.LogsPerSecond, t.budget.LogBurst, now)
	}
	t.mu.Unlock()
	if !ok {
		t.dropped[sig][rRate].Add(1)
	}
	return ok
}

func (t *Tenant) drop(sig signalKind, reason int) { t.dropped[sig][reason].Add(1) }

// TenantsConfig sizes the table and sets the budgets.
type TenantsConfig struct {
	// MaxTenants caps the table; tenants past it share OverflowTenant.
	// Default 10,000.
	MaxTenants int
	// Default is the budget of a tenant without its own entry.
	Default Budget
	// Budgets are per-tenant overrides.
	Budgets map[string]Budget
	// DefaultMaxSeries is used when a budget's MaxSeries is 0 (default 1000).
	DefaultMaxSeries int
}

const tenantShards = 64

// Tenants is the bounded table of tenants. It outlives config versions so
// that buckets and counters carry over reloads; budgets are replaced with
// SetConfig. Lookups take one shard's read lock: no global lock on the
// request path.
type Tenants struct {
	seed   maphash.Seed
	shards [tenantShards]tenantShard
	count  atomic.Int64

	cfg      atomic.Pointer[TenantsConfig]
	overflow *Tenant
	deflt    *Tenant
}

type tenantShard struct {
	mu sync.RWMutex
	m  map[string]*Tenant
}

// NewTenants returns an empty table.
func NewTenants(cfg TenantsConfig) *Tenants {
	t := &Tenants{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = map[string]*Tenant{}
	}
	t.SetConfig(cfg)
	return t
}

// SetConfig replaces the budgets; existing tenants pick up their new budget.
func (ts *Tenants) SetConfig(cfg TenantsConfig) {
	if cfg.MaxTenants <= 0 {
		cfg.MaxTenants = 10000
	}
	if cfg.DefaultMaxSeries <= 0 {
		cfg.DefaultMaxSeries = 1000
	}
	ts.cfg.Store(&cfg)
	if ts.overflow == nil {
		ts.overflow = ts.newTenant(OverflowTenant, &cfg)
		ts.deflt = ts.newTenant(DefaultTenant, &cfg)
	}
	ts.overflow.setBudget(ts.budgetFor(OverflowTenant, &cfg))
	ts.deflt.setBudget(ts.budgetFor(DefaultTenant, &cfg))
	for i := range ts.shards {
		sh := &ts.shards[i]
		sh.mu.RLock()
		for name, t := range sh.m {
			t.setBudget(ts.budgetFor(name, &cfg))
		}
		sh.mu.RUnlock()
	}
}

func (t *Tenant) setBudget(b Budget) {
	t.mu.Lock()
	t.budget = b
	t.mu.Unlock()
}

func (ts *Tenants) budgetFor(name string, cfg *TenantsConfig) Budget {
	b, ok := cfg.Budgets[name]
	if !ok {
		b = cfg.Default
	}
	if b.MaxSeries <= 0 {
		b.MaxSeries = cfg.DefaultMaxSeries
	}
	return b
}

func (ts *Tenants) newTenant(name string, cfg *TenantsConfig) *Tenant {
	return &Tenant{name: name, budget: ts.budgetFor(name, cfg)}
}

// Lookup returns the tenant named name, creating it while the table has
// room; an empty name is DefaultTenant, a name past the cap OverflowTenant.
// It does not allocate for a tenant already in the table.
func (ts *Tenants) Lookup(name []byte) *Tenant {
	if len(name) == 0 {
		return ts.deflt
	}
	sh := &ts.shards[maphash.Bytes(ts.seed, name)%tenantShards]
	sh.mu.RLock()
	t := sh.m[string(name)]
	sh.mu.RUnlock()
	if t != nil {
		return t
	}
	cfg := ts.cfg.Load()
	if ts.count.Load() >= int64(cfg.MaxTenants) {
		return ts.overflow
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if t = sh.m[string(name)]; t != nil {
		return t
	}
	if ts.count.Add(1) > int64(cfg.MaxTenants) {
		ts.count.Add(-1)
		return ts.overflow
	}
	t = ts.newTenant(string(name), cfg)
	sh.m[t.name] = t
	return t
}

// Len returns the number of named tenants in the table.
func (ts *Tenants) Len() int { return int(ts.count.Load()) }

func (ts *Tenants) each(fn func(*Tenant)) {
	fn(ts.deflt)
	fn(ts.overflow)
	for i := range ts.shards {
		sh := &ts.shards[i]
		sh.mu.RLock()
		for _, t := range sh.m {
			fn(t)
		}
		sh.mu.RUnlock()
	}
}

// Dropped returns how many records of signal ("spans", "logs", "metrics")
// tenant name dropped for reason (tests and the admin dump).
func (ts *Tenants) Dropped(name, signal, reason string) uint64 {
	var n uint64
	ts.each(func(t *Tenant) {
		if t.name != name {
			return
		}
		for s := range numSignals {
			for r := range numReasons {
				if signalNames[s] == signal && reasonNames[r] == reason {
					n += t.dropped[s][r].Load()
				}
			}
		}
	})
	return n
}

var droppedDesc = prometheus.NewDesc("omnirelay_telemetry_dropped_total",
	"Telemetry records not exported, by tenant, signal (spans, logs, metrics) and reason.",
	[]string{"tenant", "signal", "reason"}, nil)

var tenantsDesc = prometheus.NewDesc("omnirelay_telemetry_tenants",
	"Named tenants in the telemetry tenant table (capped; the rest share _overflow).", nil, nil)

// Describe implements prometheus.Collector.
func (ts *Tenants) Describe(ch chan<- *prometheus.Desc) {
	ch <- droppedDesc
	ch <- tenantsDesc
}

// Collect implements prometheus.Collector: counters are read at scrape
// time from the tenants' atomics (a CounterVec child per tenant and reason
// would cost ~15 allocations and ~1 KiB per tenant).
func (ts *Tenants) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(tenantsDesc, prometheus.GaugeValue, float64(ts.Len()))
	type row struct {
		t    string
		s, r int
		v    uint64
	}
	var rows []row
	ts.each(func(t *Tenant) {
		for s := range numSignals {
			for r := range numReasons {
				if v := t.dropped[s][r].Load(); v > 0 {
					rows = append(rows, row{t.name, int(s), r, v})
				}
			}
		}
	})
	sort.Slice(rows, func(i, j int) bool { return rows[i].t < rows[j].t })
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(r.v), r.t, signalNames[r.s], reasonNames[r.r])
	}
}

var _ prometheus.Collector = (*Tenants)(nil)

func nowNanos() int64 { return time.Now().UnixNano() }

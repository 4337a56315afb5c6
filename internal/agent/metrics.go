package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/dns"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/healthprobe"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// Metrics is the agent's Prometheus registry: series named tabby_*, plus Go's and the
// process's. Counters the agent counts itself live here; the rest is read from the
// subsystems when scraped. A nil *Metrics records nothing.
type Metrics struct {
	reg        *prometheus.Registry
	apply      *prometheus.HistogramVec
	applyErrs  *prometheus.CounterVec
	datastore  *prometheus.HistogramVec
	ipamAllocs *prometheus.CounterVec
	probes     *prometheus.CounterVec
	probed     *prometheus.GaugeVec
	dns        *dnsMetrics // registered by the DNS subsystem, if it runs
}

// NewMetrics returns the registry with the agent's own series registered.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tabby_dataplane_apply_duration_seconds",
			Help:    "Time a dataplane writer took to apply its desired state (routes, iptables, ipsets, vxlan, ipip).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"writer"}),
		applyErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tabby_dataplane_apply_errors_total",
			Help: "Dataplane applies that failed, by writer.",
		}, []string{"writer"}),
		datastore: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tabby_datastore_request_duration_seconds",
			Help:    "Latency of the agent's etcd requests, by gRPC method and result.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}, []string{"method", "result"}),
		ipamAllocs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tabby_ipam_allocations_total",
			Help: "IPAM allocations the agent made (tunnel addresses), by result (ok, error).",
		}, []string{"result"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tabby_endpoint_probes_total",
			Help: "Health probes of this node's endpoints of health-checked Services, by check (tcp, http) and result (pass, fail).",
		}, []string{"check", "result"}),
		probed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tabby_endpoints_health_checked",
			Help: "This node's endpoints of health-checked Services, by state (unknown: not probed yet, passing, failing).",
		}, []string{"state"}),
	}
	m.reg.MustRegister(m.apply, m.applyErrs, m.datastore, m.ipamAllocs, m.probes, m.probed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tabby_build_info", Help: "Always 1; the version label says which tabby-node runs.",
		ConstLabels: prometheus.Labels{"version": version}})
	info.Set(1)
	m.reg.MustRegister(info)
	return m
}

// Registry is the registry behind /metrics (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveDatastore records one etcd request (datastore.Config.Observe).
func (m *Metrics) ObserveDatastore(method string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.datastore.WithLabelValues(method, result(err)).Observe(d.Seconds())
}

// observeApply records one dataplane apply (felix's observer).
func (m *Metrics) observeApply(writer string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.apply.WithLabelValues(writer).Observe(d.Seconds())
	if err != nil {
		m.applyErrs.WithLabelValues(writer).Inc()
	}
}

func (m *Metrics) observeTunnelAllocation(err error) {
	if m == nil {
		return
	}
	m.ipamAllocs.WithLabelValues(result(err)).Inc()
}

// observeProbe counts one health probe.
func (m *Metrics) observeProbe(hc api.HealthCheck, err error) {
	if m == nil {
		return
	}
	check, res := "tcp", "pass"
	if hc.Path != "" {
		check = "http"
	}
	if err != nil {
		res = "fail"
	}
	m.probes.WithLabelValues(check, res).Inc()
}

// setProbeStates counts the prober's targets by state.
func (m *Metrics) setProbeStates(p *healthprobe.Prober) {
	if m == nil {
		return
	}
	var n [3]int
	for _, t := range p.Targets() {
		st, _ := p.Status(t.Key)
		n[st.State]++
	}
	for _, s := range []healthprobe.State{healthprobe.Unknown, healthprobe.Passing, healthprobe.Failing} {
		m.probed.WithLabelValues(s.String()).Set(float64(n[s]))
	}
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// gaugeFunc registers a gauge read at every scrape.
func (m *Metrics) gaugeFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// counterFunc registers a counter read at every scrape.
func (m *Metrics) counterFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

func (m *Metrics) watchSnapshot(snap *snapshot.Snapshot) {
	if m == nil {
		return
	}
	m.counterFunc("tabby_snapshot_resyncs_total", "Re-lists of a datastore watch after the first (compaction, lost connection).",
		func() float64 { return float64(snap.Resyncs()) })
	m.gaugeFunc("tabby_snapshot_block_affinities", "Confirmed IPAM block affinities in the snapshot, every node.",
		func() float64 { return float64(len(snap.View().Affinities)) })
	m.reg.MustRegister(&funcCollector{
		desc: prometheus.NewDesc("tabby_snapshot_resources", "Resources in the agent's snapshot, by kind.", []string{"kind"}, nil),
		collect: func(emit func(float64, ...string)) {
			v := snap.View()
			for _, k := range snap.Kinds() {
				emit(float64(v.Count(k)), k.Plural)
			}
		},
	})
}

func (m *Metrics) watchDataplane(dp *felix.Dataplane) {
	if m == nil {
		return
	}
	m.gaugeFunc("tabby_routes_programmed", "Routes felix programmed in the kernel (tabby's route protocol).",
		func() float64 { return float64(dp.Status().Routes) })
	m.counterFunc("tabby_route_passes_total", "Route reconciliation passes felix ran.",
		func() float64 { return float64(dp.Status().Passes) })
}

func (m *Metrics) watchPolicy(s *felix.PolicySyncer) {
	if m == nil {
		return
	}
	m.counterFunc("tabby_iptables_restores_total", "iptables-restore and ip6tables-restore runs (filter and nat tables).",
		func() float64 { return float64(s.Stats().RestoreRuns) })
	m.counterFunc("tabby_iptables_lines_written_total", "Lines written to iptables-restore and ip6tables-restore.",
		func() float64 { return float64(s.Stats().RestoreLinesTotal) })
	m.counterFunc("tabby_ipset_restores_total", "ipset restore runs (creating, updating and destroying tabby's sets).",
		func() float64 { return float64(s.Stats().IPSetRestoreRuns) })
	m.gaugeFunc("tabby_ipset_members", "Members of tabby's ipsets, both families.",
		func() float64 { return float64(s.Stats().IPSetMembers) })
	m.counterFunc("tabby_policy_syncs_total", "Policy syncs (iptables and ipsets) run.",
		func() float64 { return float64(s.Stats().Syncs) })
}

// bgpScrapeTimeout bounds how long a scrape waits for the BGP subsystem.
const bgpScrapeTimeout = 2 * time.Second

func (m *Metrics) watchBGP(b *bgpSubsystem) {
	if m == nil {
		return
	}
	m.reg.MustRegister(&funcCollector{
		desc: prometheus.NewDesc("tabby_bgp_peers", "BGP peers, by session state.", []string{"state"}, nil),
		extra: []*prometheus.Desc{
			prometheus.NewDesc("tabby_bgp_routes_learned", "Best paths learned from BGP peers.", nil, nil),
			prometheus.NewDesc("tabby_bgp_routes_advertised", "Prefixes this node originates over BGP.", nil, nil),
		},
		collectAll: func(ch chan<- prometheus.Metric, descs []*prometheus.Desc) {
			ctx, cancel := context.WithTimeout(context.Background(), bgpScrapeTimeout)
			defer cancel()
			st, ok := b.Report(ctx)
			if !ok {
				return
			}
			states := map[string]int{"Established": 0}
			for _, p := range st.Peers {
				states[p.State]++
			}
			for s, n := range states {
				ch <- prometheus.MustNewConstMetric(descs[0], prometheus.GaugeValue, float64(n), s)
			}
			ch <- prometheus.MustNewConstMetric(descs[1], prometheus.GaugeValue, float64(st.Learned))
			ch <- prometheus.MustNewConstMetric(descs[2], prometheus.GaugeValue, float64(len(st.Advertised)))
		},
	})
}

// funcCollector is a collector whose values are computed at scrape time: collect emits
// values of desc by label values, or collectAll writes the metrics of desc and extra.
type funcCollector struct {
	desc       *prometheus.Desc
	extra      []*prometheus.Desc
	collect    func(emit func(v float64, labels ...string))
	collectAll func(ch chan<- prometheus.Metric, descs []*prometheus.Desc)
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	for _, d := range c.extra {
		ch <- d
	}
}

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	if c.collectAll != nil {
		c.collectAll(ch, append([]*prometheus.Desc{c.desc}, c.extra...))
		return
	}
	c.collect(func(v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, labels...)
	})
}

// serve serves /metrics on addr until ctx ends.
func (m *Metrics) serve(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{}}))
	slog.Info("metrics endpoint listening", "addr", l.Addr().String())
	if err := serveHTTP(ctx, l, mux); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// slogErrorLog hands promhttp's errors to slog.
type slogErrorLog struct{}

func (slogErrorLog) Println(v ...any) { slog.Warn("metrics", "err", fmt.Sprint(v...)) }

// dnsMetrics counts the DNS server's queries, cache lookups and upstream latency; nil
// counts nothing.
func (m *Metrics) dnsMetrics() dns.Metrics {
	if m == nil {
		return nil
	}
	if m.dns == nil {
		m.dns = &dnsMetrics{
			queriesDesc: prometheus.NewDesc("tabby_dns_queries_total",
				"DNS queries answered, by query type (OTHER: a type not listed) and response code.", []string{"qtype", "rcode"}, nil),
			cacheDesc: prometheus.NewDesc("tabby_dns_cache_lookups_total",
				"DNS cache lookups, by result (hit, miss).", []string{"result"}, nil),
			upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tabby_dns_upstream_duration_seconds",
				Help: "Latency of queries forwarded upstream, by result.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}, []string{"result"}),
		}
		m.reg.MustRegister(m.dns, m.dns.upstream)
	}
	return m.dns
}

// The query types and response codes tabby_dns_queries_total tells apart; any other is
// counted as the last of its list ("OTHER"), so that the series stay few.
var (
	dnsQtypes = [...]string{"A", "AAAA", "PTR", "SRV", "CNAME", "TXT", "SOA", "NS", "MX", "HTTPS", "SVCB", "CAA",
		"ANY", "AXFR", "IXFR", "NONE", "OTHER"}
	dnsRcodes = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "OTHER"}
)

func dnsQtypeIndex(t string) int {
	switch t {
	case "A":
		return 0
	case "AAAA":
		return 1
	case "PTR":
		return 2
	case "SRV":
		return 3
	case "CNAME":
		return 4
	case "TXT":
		return 5
	case "SOA":
		return 6
	case "NS":
		return 7
	case "MX":
		return 8
	case "HTTPS":
		return 9
	case "SVCB":
		return 10
	case "CAA":
		return 11
	case "ANY":
		return 12
	case "AXFR":
		return 13
	case "IXFR":
		return 14
	case "NONE":
		return 15
	}
	return len(dnsQtypes) - 1
}

func dnsRcodeIndex(r string) int {
	switch r {
	case "NOERROR":
		return 0
	case "FORMERR":
		return 1
	case "SERVFAIL":
		return 2
	case "NXDOMAIN":
		return 3
	case "NOTIMP":
		return 4
	case "REFUSED":
		return 5
	case "BADVERS":
		return 6
	}
	return len(dnsRcodes) - 1
}

// dnsMetrics is the server's dns.Metrics. Counting a query or a cache lookup is one
// atomic add to a fixed counter (the server counts every query, from every socket's
// goroutine: a CounterVec's label lookup per query cost more than the answer); the
// counters become series when scraped, those that are not zero.
type dnsMetrics struct {
	queriesDesc, cacheDesc *prometheus.Desc
	queries                [len(dnsQtypes)][len(dnsRcodes)]atomic.Uint64
	hits, misses           atomic.Uint64
	upstream               *prometheus.HistogramVec
}

func (d *dnsMetrics) Query(qtype, rcode string) {
	d.queries[dnsQtypeIndex(qtype)][dnsRcodeIndex(rcode)].Add(1)
}

func (d *dnsMetrics) Cache(hit bool) {
	if hit {
		d.hits.Add(1)
	} else {
		d.misses.Add(1)
	}
}

func (d *dnsMetrics) Upstream(dur time.Duration, err error) {
	d.upstream.WithLabelValues(result(err)).Observe(dur.Seconds())
}

func (d *dnsMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.queriesDesc
	ch <- d.cacheDesc
}

func (d *dnsMetrics) Collect(ch chan<- prometheus.Metric) {
	for i := range d.queries {
		for j := range d.queries[i] {
			if n := d.queries[i][j].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(d.queriesDesc, prometheus.CounterValue, float64(n), dnsQtypes[i], dnsRcodes[j])
			}
		}
	}
	for _, c := range []struct {
		result string
		n      uint64
	}{{"hit", d.hits.Load()}, {"miss", d.misses.Load()}} {
		if c.n > 0 {
			ch <- prometheus.MustNewConstMetric(d.cacheDesc, prometheus.CounterValue, float64(c.n), c.result)
		}
	}
}

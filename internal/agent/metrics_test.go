package agent

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/healthprobe"
)

// TestDNSMetrics: queries are counted by type and rcode (unlisted ones as OTHER), cache
// lookups by result, and only counters that counted something are series.
func TestDNSMetrics(t *testing.T) {
	for i, q := range dnsQtypes {
		if dnsQtypeIndex(q) != i {
			t.Errorf("dnsQtypeIndex(%q) = %d, want %d", q, dnsQtypeIndex(q), i)
		}
	}
	for i, r := range dnsRcodes {
		if dnsRcodeIndex(r) != i {
			t.Errorf("dnsRcodeIndex(%q) = %d, want %d", r, dnsRcodeIndex(r), i)
		}
	}
	m := NewMetrics("test")
	d := m.dnsMetrics()
	d.Query("A", "NOERROR")
	d.Query("A", "NOERROR")
	d.Query("AAAA", "NXDOMAIN")
	d.Query("WKS", "NOERROR")
	d.Query("A", "YXDOMAIN")
	d.Cache(true)
	d.Cache(false)
	d.Cache(false)
	want := []string{
		`tabby_dns_cache_lookups_total{result="hit"} 1`,
		`tabby_dns_cache_lookups_total{result="miss"} 2`,
		`tabby_dns_queries_total{qtype="A",rcode="NOERROR"} 2`,
		`tabby_dns_queries_total{qtype="A",rcode="OTHER"} 1`,
		`tabby_dns_queries_total{qtype="AAAA",rcode="NXDOMAIN"} 1`,
		`tabby_dns_queries_total{qtype="OTHER",rcode="NOERROR"} 1`,
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "tabby_dns_") || mf.GetName() == "tabby_dns_upstream_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			got = append(got, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), s.GetCounter().GetValue()))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func BenchmarkDNSMetricsQuery(b *testing.B) {
	d := NewMetrics("test").dnsMetrics()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.Query("A", "NOERROR")
		}
	})
}

// TestProbeMetrics: probes are counted by check and result, endpoints by state.
func TestProbeMetrics(t *testing.T) {
	m := NewMetrics("test")
	tcp, http := api.HealthCheck{Interval: time.Second, Threshold: 1}, api.HealthCheck{Path: "/", Interval: time.Second, Threshold: 1}
	m.observeProbe(tcp, nil)
	m.observeProbe(tcp, errString("refused"))
	m.observeProbe(http, errString("HTTP 503"))
	p := healthprobe.New()
	now := time.Now()
	p.Set(now, []healthprobe.Target{{Key: "a", Check: tcp}, {Key: "b", Check: tcp}, {Key: "c", Check: tcp}})
	p.Result(now, "a", nil)
	p.Result(now, "b", errString("refused"))
	m.setProbeStates(p)
	want := []string{
		`tabby_endpoint_probes_total{check="http",result="fail"} 1`,
		`tabby_endpoint_probes_total{check="tcp",result="fail"} 1`,
		`tabby_endpoint_probes_total{check="tcp",result="pass"} 1`,
		`tabby_endpoints_health_checked{state="failing"} 1`,
		`tabby_endpoints_health_checked{state="passing"} 1`,
		`tabby_endpoints_health_checked{state="unknown"} 1`,
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "tabby_endpoint") {
			continue
		}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			got = append(got, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), s.GetCounter().GetValue()+s.GetGauge().GetValue()))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

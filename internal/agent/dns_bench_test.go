package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/dns"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// TestServeAgentDNSForBench serves what the agent's DNS subsystem serves, without the
// rest of the agent: the real cluster zone built by dnsData from a view of
// DNS_BENCH_SERVICES Services (s<i>.bench.svc.cluster.local, ClusterIP 10.100.<i/256>.<i%256>,
// one named port), the server and the agent's Prometheus adapter (unless
// DNS_BENCH_METRICS=0), on DNS_BENCH_LISTEN (addr:port) until killed, or for
// DNS_BENCH_SECONDS (then -test.cpuprofile and -test.memprofile cover the run). For
// dnsperf from a shell (bench/dns-qps.sh compares servers); skipped unless
// DNS_BENCH_LISTEN is set.
func TestServeAgentDNSForBench(t *testing.T) {
	listen := os.Getenv("DNS_BENCH_LISTEN")
	if listen == "" {
		t.Skip("DNS_BENCH_LISTEN is not set")
	}
	n, err := strconv.Atoi(os.Getenv("DNS_BENCH_SERVICES"))
	if err != nil {
		t.Fatalf("DNS_BENCH_SERVICES: %v", err)
	}
	rs := make([]api.Resource, 0, n)
	for i := range n {
		s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}, Spec: api.ServiceSpec{ClusterIP: fmt.Sprintf("10.100.%d.%d", i>>8&255, i&255),
			Ports: []api.ServicePort{{Name: "http", Port: 80}}}}
		s.Namespace, s.Name = "bench", fmt.Sprintf("s%d", i)
		rs = append(rs, s)
	}
	v, err := snapshot.NewView(nil, rs...)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	zone := dns.NewZone(dns.ZoneConfig{Logger: quiet})
	zone.Update(dnsData(serviceInputs(v)))
	var m dns.Metrics
	if os.Getenv("DNS_BENCH_METRICS") != "0" {
		m = NewMetrics("bench").dnsMetrics()
	}
	srv, err := dns.NewServer(dns.Config{Listen: []string{listen}, Authority: zone, Metrics: m, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if secs, err := strconv.Atoi(os.Getenv("DNS_BENCH_SECONDS")); err == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(secs)*time.Second)
		defer cancel()
	}
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

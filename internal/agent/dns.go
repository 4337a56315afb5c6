package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tabby-net/tabby/dns"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// DNSConfig configures the node-local cluster DNS server.
type DNSConfig struct {
	Enabled bool
	// Addresses are put on lo and served on port 53: the cluster DNS address and the
	// node-local one (NodeLocal DNSCache's 169.254.20.10).
	Addresses []netip.Addr
	Zone      string        // the cluster domain
	TTL       time.Duration // of the cluster zone's answers
	// Upstreams answer every other name; empty: the host's /etc/resolv.conf.
	Upstreams []string
	// NoForward answers only the cluster zone: every other name is REFUSED.
	NoForward bool
	CacheSize int
}

// dnsRetry is how soon a failed lo or server setup is tried again.
const dnsRetry = 2 * time.Second

// dnsRebuildGap is the least time between two rebuilds of the cluster zone (or the time
// the last one took, if longer): a burst of changes (10,000 Services applied in ten
// transactions published some 35 views) is indexed a few times instead of once per
// view, each rebuild being garbage of the size of the index. A change waits at most
// that long.
const dnsRebuildGap = 100 * time.Millisecond

// dnsSubsystem serves the cluster zone from the snapshot and forwards the rest: it puts
// its addresses on lo, exempts their traffic from conntrack (raw table, through the
// policy syncer: one iptables writer), and hands the zone new data whenever Services,
// Endpoints or WorkloadEndpoints change.
type dnsSubsystem struct {
	cfg      DNSConfig
	snap     *snapshot.Snapshot
	services *serviceIndex
	syncer   *felix.PolicySyncer
	lo       *felix.LoopbackReconciler
	zone     *dns.Zone
	server   *dns.Server
	ready    *Readiness
	log      *slog.Logger
}

func newDNSSubsystem(cfg DNSConfig, snap *snapshot.Snapshot, services *serviceIndex, syncer *felix.PolicySyncer, ready *Readiness, m *Metrics) (*dnsSubsystem, error) {
	log := slog.Default().With("component", "dns")
	zone := dns.NewZone(dns.ZoneConfig{Zone: cfg.Zone, TTL: cfg.TTL})
	var fwd *dns.Forwarder
	if !cfg.NoForward {
		var err error
		if fwd, err = dns.NewForwarder(dns.ForwarderConfig{Upstreams: cfg.Upstreams, Metrics: m.dnsMetrics(), Log: log}); err != nil {
			if len(cfg.Upstreams) > 0 {
				return nil, fmt.Errorf("--dns-upstream: %w", err)
			}
			// A host without a usable resolv.conf still gets the cluster zone.
			log.Warn("dns: no upstream: names outside the cluster zone are refused", "err", err)
			fwd = nil
		}
	}
	listen := make([]string, len(cfg.Addresses))
	for i, a := range cfg.Addresses {
		listen[i] = netip.AddrPortFrom(a, 53).String()
	}
	srv, err := dns.NewServer(dns.Config{Listen: listen, Authority: zone, Cache: dns.NewCache(dns.CacheConfig{Size: cfg.CacheSize}),
		Forwarder: fwd, LoopProbe: true, Metrics: m.dnsMetrics(), Log: log})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if fwd != nil && m != nil {
		m.counterFunc("tabby_dns_forward_loops_total", "Forwarded DNS queries (or the loop probe) that came back to this server: a forwarding loop.",
			func() float64 { return float64(fwd.Loops()) })
		m.counterFunc("tabby_dns_forward_merged_total", "DNS queries that waited for an identical one already on its way upstream.",
			func() float64 { return float64(fwd.Merged()) })
	}
	lo := felix.NewLoopbackReconciler(nil)
	lo.Observe = m.observeApply
	d := &dnsSubsystem{cfg: cfg, snap: snap, services: services, syncer: syncer, lo: lo, zone: zone, server: srv, ready: ready, log: log}
	ready.Check("dns", func() []string {
		switch {
		case !zone.Synced():
			return []string{"dns: the cluster zone has no data yet"}
		case !srv.Ready():
			return []string{"dns: not serving on " + strings.Join(listen, ", ") + " yet"}
		}
		return nil
	})
	return d, nil
}

func (d *dnsSubsystem) Name() string { return "dns" }

// dnsKinds are the kinds the cluster zone is built from: the Services' inputs and the
// Namespaces.
var dnsKinds = append(slices.Clone(serviceInputKinds), kindNamespaces)

func (d *dnsSubsystem) Run(ctx context.Context) error {
	d.syncer.UpdateRaw(felix.RenderDNSNotrack(d.cfg.Addresses))
	// The addresses must be on lo before the server binds them.
	for {
		n, err := d.lo.Apply(d.cfg.Addresses)
		if err == nil {
			if n > 0 {
				d.log.Info("dns addresses on lo", "addrs", d.cfg.Addresses)
			}
			d.ready.SetProblems("dns")
			break
		}
		d.ready.SetProblems("dns", "dns: cannot put its addresses on lo: "+err.Error())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(dnsRetry):
		}
	}
	serverDone := make(chan error, 1)
	go func() { serverDone <- d.server.Run(ctx) }()
	sub := d.snap.Subscribe()
	tick := time.NewTicker(encapResync)
	defer tick.Stop()
	var (
		prev      *snapshot.View
		nextBuild time.Time        // no rebuild before (see dnsRebuildGap)
		wait      <-chan time.Time // a change waits for nextBuild
	)
	rebuild := func() {
		v := d.snap.View()
		if !v.Synced || !v.Differs(prev, false, dnsKinds...) {
			return
		}
		prev = v
		start := time.Now()
		data := dnsData(d.services.inputs(v))
		data.Namespaces = namespaceNames(v)
		d.zone.Update(data)
		took := time.Since(start)
		nextBuild = time.Now().Add(max(dnsRebuildGap, took))
		d.log.Debug("cluster zone updated", "services", len(data.Services), "took", took)
	}
	for {
		select {
		case <-ctx.Done():
			return <-serverDone
		case err := <-serverDone:
			return fmt.Errorf("dns server: %w", err)
		case <-tick.C:
			// Repair: an address removed from lo by hand comes back.
			if n, err := d.lo.Apply(d.cfg.Addresses); err != nil {
				d.log.Warn("dns addresses on lo", "err", err)
			} else if n > 0 {
				d.log.Info("dns addresses on lo repaired", "writes", n)
			}
		case <-sub:
			if wait != nil {
				continue // a rebuild is due already; it takes the latest view
			}
			if delay := time.Until(nextBuild); delay > 0 {
				wait = time.After(delay)
				continue
			}
			rebuild()
		case <-wait:
			wait = nil
			rebuild()
		}
	}
}

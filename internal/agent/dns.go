package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/dns"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// DNSConfig configures the node-local cluster DNS server.
type DNSConfig struct {
	Enabled bool
	// Addresses are put on lo and served on port 53: the cluster DNS address and the
	// node-local one (NodeLocal DNSCache's 169.254.20.10), of either family. The cluster
	// addresses of the Service kube-system/kube-dns, when there is one, are served as well
	// (dnsAddrs).
	Addresses []netip.Addr
	Zone      string        // the cluster domain
	TTL       time.Duration // of the cluster zone's answers
	// Upstreams answer every other name; empty: the host's /etc/resolv.conf.
	Upstreams []string
	// NoForward answers only the cluster zone: every other name is REFUSED.
	NoForward bool
	CacheSize int
}

// The Service whose cluster addresses are the cluster DNS address, as kubelet's
// --cluster-dns names kube-dns's ClusterIP.
const (
	kubeDNSNamespace = "kube-system"
	kubeDNSName      = "kube-dns"
)

// dnsAddrs are the addresses the DNS server serves in view v: the configured ones and the
// cluster addresses of the kube-system/kube-dns Service (both families), sorted. A
// kube-dns Service with a bad address (the datastore refuses those) adds nothing.
func dnsAddrs(configured []netip.Addr, v *snapshot.View) []netip.Addr {
	out := slices.Clone(configured)
	if svc, ok := snapshot.Get[*api.Service](v, kubeDNSNamespace, kubeDNSName); ok {
		addrs, _ := svc.ClusterAddrs()
		out = append(out, addrs...)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
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

	// want are the addresses to serve (dnsAddrs of the last view), served those last
	// put on lo and bound; they differ until an apply succeeds.
	mu           sync.Mutex
	want, served []netip.Addr
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
	srv, err := dns.NewServer(dns.Config{Listen: listenOn(cfg.Addresses), Authority: zone, Cache: dns.NewCache(dns.CacheConfig{Size: cfg.CacheSize}),
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
	lo, err := felix.NewLoopbackReconciler(netns.None())
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	lo.Observe = m.observeApply
	d := &dnsSubsystem{cfg: cfg, snap: snap, services: services, syncer: syncer, lo: lo, zone: zone, server: srv, ready: ready, log: log,
		want: cfg.Addresses}
	ready.Check("dns", func() []string {
		switch {
		case !zone.Synced():
			return []string{"dns: the cluster zone has no data yet"}
		case !srv.Ready():
			d.mu.Lock()
			defer d.mu.Unlock()
			return []string{"dns: not serving on " + strings.Join(listenOn(d.want), ", ") + " yet"}
		}
		return nil
	})
	return d, nil
}

// listenOn is port 53 of every address.
func listenOn(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = netip.AddrPortFrom(a, 53).String()
	}
	return out
}

// setAddrs serves want: its NOTRACK rules, lo, and the server's sockets, in that order
// (a query for a new address is untracked from the first). It returns whether it
// changed anything; on an error the next call tries again.
func (d *dnsSubsystem) setAddrs(want []netip.Addr) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.want = want
	if slices.Equal(d.served, want) {
		return false, nil
	}
	d.syncer.UpdateRaw(felix.RenderDNSNotrack(want))
	if _, err := d.lo.Apply(want); err != nil {
		return true, fmt.Errorf("put its addresses on lo: %w", err)
	}
	if err := d.server.SetListen(listenOn(want)); err != nil {
		return true, err
	}
	d.served = want
	return true, nil
}

func (d *dnsSubsystem) Name() string { return "dns" }

// dnsKinds are the kinds the cluster zone is built from: the Services' inputs and the
// Namespaces.
var dnsKinds = append(slices.Clone(serviceInputKinds), kindNamespaces)

func (d *dnsSubsystem) Run(ctx context.Context) error {
	// The addresses must be on lo before the server binds them.
	for {
		_, err := d.setAddrs(d.cfg.Addresses)
		if err == nil {
			d.log.Info("dns addresses on lo", "addrs", d.cfg.Addresses)
			d.ready.SetProblems("dns")
			break
		}
		d.ready.SetProblems("dns", "dns: "+err.Error())
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
		d.follow(dnsAddrs(d.cfg.Addresses, v))
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
			// Repair: an address removed from lo by hand comes back, and a failed
			// change is tried again.
			d.mu.Lock()
			want := d.want
			d.mu.Unlock()
			if n, err := d.lo.Apply(want); err != nil {
				d.log.Warn("dns addresses on lo", "err", err)
			} else if n > 0 {
				d.log.Info("dns addresses on lo repaired", "writes", n)
			}
			d.follow(want)
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

// follow serves want, logging a change and keeping a failure in the readiness problems
// until a later call succeeds.
func (d *dnsSubsystem) follow(want []netip.Addr) {
	changed, err := d.setAddrs(want)
	switch {
	case err != nil:
		d.log.Warn("dns addresses", "addrs", want, "err", err)
		d.ready.SetProblems("dns", fmt.Sprintf("dns: serving %v: %v", want, err))
	case changed:
		d.log.Info("dns addresses changed", "addrs", want)
		d.ready.SetProblems("dns")
	}
}

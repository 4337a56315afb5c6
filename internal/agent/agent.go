// Package agent is tabby-node: it registers the node, creates the default IP pools on
// first boot (when the cluster has none of their IP version), keeps one snapshot of the datastore,
// and runs the subsystems that derive their desired state from it (routes, encapsulation,
// policy, BGP, IPAM garbage collection, the Service proxy, cluster DNS, endpoint health
// probes), with the status socket, health and metrics endpoints. cmd/tabby-node only
// turns flags into a Config and calls Run.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/dns"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/ipam"
	"github.com/tabby-net/tabby/policy"
)

// Agent roles: a node runs workloads and BGP; a route reflector host only BGP.
const (
	RoleNode           = "node"
	RoleRouteReflector = "route-reflector"
)

// Config is the agent's whole configuration, a plain value.
type Config struct {
	NodeName string
	Role     string // RoleNode or RoleRouteReflector
	// IPv4 and IPv6 are the node's addresses with their prefix lengths, "autodetect" or
	// "none"; the methods say how autodetect finds them (Calico's syntax).
	IPv4, IPv4Method string
	IPv6, IPv6Method string
	// RouteRefresh is the period of full route and sysctl passes (0: felix's default).
	RouteRefresh time.Duration
	// IPIPMTU and VXLANMTU are tunl0's and vxlan.tabby's MTUs (0: the underlay's less
	// the tunnel header).
	IPIPMTU, VXLANMTU int
	// LogLevel is the level of the agent's logger, which a FelixConfiguration's
	// logSeverityScreen changes; nil leaves the logger alone.
	LogLevel *slog.LevelVar
	// ExplicitFlags names the flags given on the command line or in the environment:
	// they win over a FelixConfiguration.
	ExplicitFlags map[string]bool
	// IPAMGCInterval is the period of IPAM garbage collection (one agent runs it).
	IPAMGCInterval time.Duration
	// DefaultPools are the IPPools the agent creates when the cluster has none.
	DefaultPools DefaultPoolsConfig
	Policy       PolicyConfig
	BGP          BGPConfig
	DNS          DNSConfig
	WireGuard    WireGuardConfig
	// ProxyMode is how Services are load-balanced: ProxyNFTables, ProxyIPTables or
	// ProxyNone.
	ProxyMode string
	// StatusSocket is the Unix socket tabbyctl node status reads.
	StatusSocket string
	// SnapshotCache is the file that keeps the last synced snapshot, for a start while
	// etcd does not answer ("" keeps none: such a start fails).
	SnapshotCache string
	// HealthListen serves GET /liveness and /readiness ("" turns it off).
	HealthListen string
	// MetricsListen serves Prometheus metrics on /metrics ("" turns it off).
	MetricsListen string
	// PprofListen serves Go's runtime profiles on /debug/pprof/ ("" turns it off).
	PprofListen string
	// Version is reported in tabby_build_info.
	Version string
	// Flags are the effective command-line settings ("--name=value"), for diagnostics.
	Flags []string
	// Logs keeps the recent log lines for diagnostics; nil keeps none.
	Logs *LogRing
}

// PolicyConfig configures policy enforcement.
type PolicyConfig struct {
	// Refresh is the period of full iptables and ipset passes (repairs drift).
	Refresh time.Duration
	// EndpointToHostAction is what happens to traffic from a workload to its own host once
	// its egress policy allowed it: ACCEPT, DROP or RETURN.
	EndpointToHostAction string
	// FailsafeInbound and FailsafeOutbound are the ports host endpoint policy never
	// closes; nil is Calico's defaults.
	FailsafeInbound, FailsafeOutbound []felix.FailsafePort
	// AutoHostEndpoints keeps the node's automatic host endpoint ("<node>-auto-hep",
	// every interface, the node's labels); off deletes it.
	AutoHostEndpoints bool
	// IptablesBackend is auto (detected), legacy or nft.
	IptablesBackend string
	// ChainInsertMode is where the hooks into the kernel's chains go: insert (the top)
	// or append (the bottom).
	ChainInsertMode string
}

// BGPConfig are the BGP speaker's settings.
type BGPConfig struct {
	Enabled       bool
	RouterID      string
	PasswordDir   string
	GRPCAddress   string // "" serves no GoBGP gRPC API
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	ConnectRetry  time.Duration
	NoGR          bool
	SyncTimeout   time.Duration
}

// Subsystem is one part of the agent: it runs until ctx ends, and reports into the agent's
// Readiness. An error it returns ends the agent: running half of it would hide the failure.
type Subsystem interface {
	Name() string
	Run(ctx context.Context) error
}

// snapshotKinds are the kinds the agent watches: one watch each, read by every subsystem.
func snapshotKinds() []*api.Kind {
	plurals := []string{"nodes", "ippools", "bgppeers", "bgpfilters", "bgpconfigurations", "felixconfigurations", "services", "endpoints", "endpointslices", "endpointhealths"}
	for _, p := range policy.InputKinds {
		if !slices.Contains(plurals, p) {
			plurals = append(plurals, p)
		}
	}
	kinds := make([]*api.Kind, len(plurals))
	for i, p := range plurals {
		kinds[i] = mustKind(p)
	}
	return kinds
}

func mustKind(plural string) *api.Kind {
	k, err := api.LookupKind(plural)
	if err != nil {
		panic(err)
	}
	return k
}

var (
	kindNodes             = mustKind("nodes")
	kindIPPools           = mustKind("ippools")
	kindBGPPeers          = mustKind("bgppeers")
	kindBGPFilters        = mustKind("bgpfilters")
	kindBGPConfigs        = mustKind("bgpconfigurations")
	kindFelixConfigs      = mustKind("felixconfigurations")
	kindWorkloadEndpoints = mustKind("workloadendpoints")
)

// Validate checks what can be checked before anything starts, naming the flag at fault.
func (cfg Config) Validate() error {
	if cfg.NodeName == "" {
		return errors.New("--node-name is empty and the host name is unknown")
	}
	if cfg.Role != RoleNode && cfg.Role != RoleRouteReflector {
		return fmt.Errorf("--role %q: want %s or %s", cfg.Role, RoleNode, RoleRouteReflector)
	}
	switch cfg.Policy.EndpointToHostAction {
	case "ACCEPT", "DROP", "RETURN":
	default:
		return fmt.Errorf("--default-endpoint-to-host-action %q: want ACCEPT, DROP or RETURN", cfg.Policy.EndpointToHostAction)
	}
	switch cfg.Policy.IptablesBackend {
	case "", "auto", "legacy", "nft":
	default:
		return fmt.Errorf("--iptables-backend %q: want auto, legacy or nft", cfg.Policy.IptablesBackend)
	}
	switch cfg.Policy.ChainInsertMode {
	case "", "insert", "append":
	default:
		return fmt.Errorf("--chain-insert-mode %q: want insert or append", cfg.Policy.ChainInsertMode)
	}
	for _, m := range []struct {
		flag string
		mtu  int
	}{{"--ipip-mtu", cfg.IPIPMTU}, {"--vxlan-mtu", cfg.VXLANMTU}} {
		if m.mtu != 0 && (m.mtu < api.MinMTU || m.mtu > api.MaxMTU) {
			return fmt.Errorf("%s %d: want %d-%d, or 0 for the underlay's MTU less the tunnel header", m.flag, m.mtu, api.MinMTU, api.MaxMTU)
		}
	}
	if cfg.Role == RoleRouteReflector && !cfg.BGP.Enabled {
		return errors.New("nothing to run: a route reflector needs BGP (--bgp)")
	}
	if cfg.StatusSocket == "" {
		return errors.New("no status socket path")
	}
	if _, err := cfg.DefaultPools.Pools(); err != nil {
		return err
	}
	switch cfg.ProxyMode {
	case ProxyNFTables, ProxyIPTables, ProxyNone:
	default:
		return fmt.Errorf("--proxy-mode %q: want nftables, iptables or none", cfg.ProxyMode)
	}
	if cfg.WireGuard.Enabled && (cfg.WireGuard.Port < 1 || cfg.WireGuard.Port > 65535) {
		return fmt.Errorf("--wireguard-port %d: want 1-65535", cfg.WireGuard.Port)
	}
	if cfg.DNS.Enabled {
		if len(cfg.DNS.Addresses) == 0 {
			return errors.New("--dns-addresses: none given (--dns=false turns DNS off)")
		}
		for _, a := range cfg.DNS.Addresses {
			// An IPv6 address on lo that clients reach through the node: neither
			// link-local (it would need a zone) nor an IPv4 one in disguise.
			if a.Is6() && (!a.IsGlobalUnicast() || a.Is4In6() || a.Zone() != "") {
				return fmt.Errorf("--dns-addresses %s: want IPv4 or global unicast IPv6 addresses without a zone (a ULA such as fd00:96::a will do)", a)
			}
		}
		if err := (dns.ZoneConfig{Zone: cfg.DNS.Zone, TTL: cfg.DNS.TTL}).Validate(); err != nil {
			return fmt.Errorf("--dns-zone, --dns-ttl: %w", err)
		}
	}
	return nil
}

// felixSettings are the settings of the flags, before any FelixConfiguration.
func (cfg Config) felixSettings() FelixSettings {
	s := FelixSettings{
		LogLevel: slog.LevelInfo, IPIPMTU: cfg.IPIPMTU, VXLANMTU: cfg.VXLANMTU,
		FailsafeInbound: cfg.Policy.FailsafeInbound, FailsafeOutbound: cfg.Policy.FailsafeOutbound,
		EndpointToHostAction: cfg.Policy.EndpointToHostAction, IptablesBackend: cfg.Policy.IptablesBackend,
		RouteRefresh: cfg.RouteRefresh, IptablesRefresh: cfg.Policy.Refresh,
		WireGuard: cfg.WireGuard.Enabled, ChainInsertMode: cfg.Policy.ChainInsertMode,
	}
	if cfg.LogLevel != nil {
		s.LogLevel = cfg.LogLevel.Level()
	}
	if s.FailsafeInbound == nil {
		s.FailsafeInbound = felix.DefaultFailsafeInbound
	}
	if s.FailsafeOutbound == nil {
		s.FailsafeOutbound = felix.DefaultFailsafeOutbound
	}
	if s.IptablesBackend == "" {
		s.IptablesBackend = "auto"
	}
	if s.ChainInsertMode == "" {
		s.ChainInsertMode = "insert"
	}
	if s.RouteRefresh <= 0 {
		s.RouteRefresh = felix.DefaultResyncInterval
	}
	if s.IptablesRefresh <= 0 {
		s.IptablesRefresh = felix.DefaultPolicyRefresh
	}
	return s
}

// Run registers the node and runs the agent until ctx ends. ds is the datastore client
// (datastore.Dial); the caller closes it. When etcd does not answer within the dial
// timeout, the agent runs from its snapshot cache and registers once etcd answers; with
// no usable cache the error says so.
func Run(ctx context.Context, cfg Config, ds *datastore.Client, m *Metrics) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	v4, err := nodeAddress("--ip", cfg.IPv4, "--ip-autodetection-method", cfg.IPv4Method, 4)
	if err != nil {
		return err
	}
	v6, err := nodeAddress("--ip6", cfg.IPv6, "--ip6-autodetection-method", cfg.IPv6Method, 6)
	if err != nil {
		return err
	}
	cached, err := chooseStart(ctx, ds, cfg)
	if err != nil {
		return err
	}
	register := func(ctx context.Context) error {
		if _, err := registerNode(ctx, ds, cfg.NodeName, v4, v6); err != nil {
			return err
		}
		slog.Info("node registered", "node", cfg.NodeName, "ipv4", v4, "ipv6", v6)
		pools, _ := cfg.DefaultPools.Pools() // validated above
		return ensureDefaultPools(ctx, ds, pools, slog.Default())
	}
	writes := newWriteGate(cached == nil)
	if cached == nil {
		if err := register(ctx); err != nil {
			return err
		}
	}

	ipamc := ipam.New(ds, nil)
	snap := snapshot.New(ds, ipamc, snapshotKinds(), slog.Default().With("component", "snapshot"))
	ready := NewReadiness()
	lease := newAgentLease(ds, cfg.NodeName, cfg.Version)
	subs := []Subsystem{runFunc("snapshot", snap.Run), newDatastoreHealth(ds, snap, cfg.SnapshotCache, writes, ready), afterWrites(writes, lease)}
	if cached != nil {
		slog.Warn("etcd does not answer: starting from the snapshot cache; datastore writes wait for etcd",
			"cache", cfg.SnapshotCache, "written", cached.CachedAt, "age", time.Since(cached.CachedAt).Round(time.Second))
		snap.Seed(cached)
		subs = append(subs, deferredWrites(ds, writes, register, slog.Default().With("component", "deferred-writes")))
	}
	if cfg.SnapshotCache != "" {
		subs = append(subs, runFunc("snapshot-cache", func(ctx context.Context) error {
			return snap.KeepCache(ctx, cfg.SnapshotCache, cfg.NodeName, snapshotCacheDebounce)
		}))
	}
	m.watchSnapshot(snap)
	fc := &felixConfig{node: cfg.NodeName, flags: cfg.felixSettings(), explicit: cfg.ExplicitFlags}
	fcSub := &felixConfigSubsystem{cfg: fc, snap: snap, level: cfg.LogLevel, log: slog.Default().With("component", "felix-configuration")}
	subs = append(subs, fcSub)

	var learned *learnedRoutes // BGP → felix
	var bgpSub *bgpSubsystem
	// The proxy, DNS and BGP derive Services' endpoints once per view; none on a route
	// reflector, which has no endpoints.
	var services *serviceIndex
	if cfg.Role == RoleNode {
		dp, err := felix.NewDataplane(felix.Config{
			ResyncInterval: cfg.RouteRefresh,
			Log:            slog.Default().With("component", "felix"),
			Observe:        m.observeApply,
		})
		if err != nil {
			return err
		}
		defer dp.Close()
		fcSub.dp = dp
		m.watchDataplane(dp)
		if cfg.BGP.Enabled {
			learned = newLearnedRoutes(dp)
		}
		encapOut := newHandoff[*felix.Encap]()
		routes := &routesSubsystem{node: cfg.NodeName, snap: snap, dp: dp, learned: learned, encap: encapOut,
			ready: ready, log: slog.Default().With("component", "routes")}
		syncer, err := felix.NewPolicySyncer(ctx, felix.Runner{}, slog.Default().With("component", "policy"))
		if err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		// A backend the flag chose is the one the Service proxy starts on too; one a
		// FelixConfiguration chooses moves policy's chains only (README).
		if err := syncer.SetBackend(fc.flags.IptablesBackend); err != nil {
			return fmt.Errorf("--iptables-backend: %w", err)
		}
		services = &serviceIndex{}
		pol := newPolicySubsystem(cfg.NodeName, fc, v4.IsValid(), snap, syncer, services, ready, m)
		var exempt func(*snapshot.View) []netip.Addr
		if cfg.DNS.Enabled {
			d, err := newDNSSubsystem(cfg.DNS, snap, services, syncer, ready, m)
			if err != nil {
				return err
			}
			subs = append(subs, d)
			exempt = func(v *snapshot.View) []netip.Addr { return dnsAddrs(cfg.DNS.Addresses, v) }
		} else {
			// No DNS exemption: the raw table holds only untracked host endpoint policy.
			syncer.UpdateRaw(felix.RenderDNSNotrack(nil))
		}
		if cfg.ProxyMode != ProxyNone {
			p, err := newProxySubsystem(cfg.NodeName, cfg.ProxyMode, syncer.Backend(), syncer.IPv6(), exempt, snap, services, ready, m)
			if err != nil {
				return err
			}
			subs = append(subs, p)
		}
		// Every node probes its own endpoints of health-checked Services, whatever its
		// proxy mode: the other nodes' proxies and DNS read the results.
		subs = append(subs, afterWrites(writes, newHealthProbeSubsystem(cfg.NodeName, ds, snap, services, lease, m)))
		subs = append(subs, afterWrites(writes, &autoHEPSubsystem{node: cfg.NodeName, enabled: cfg.Policy.AutoHostEndpoints, ds: ds, snap: snap,
			log: slog.Default().With("component", "auto-host-endpoint")}))
		subs = append(subs, routes, pol,
			afterWrites(writes, runFunc("ipam-gc", func(ctx context.Context) error {
				return ipamc.RunGarbageCollector(ctx, cfg.NodeName, cfg.IPAMGCInterval, ipam.GCOptions{})
			})))
		if v4.IsValid() || v6.IsValid() {
			subs = append(subs, newEncapSubsystem(cfg.NodeName, v4, v6, cfg.WireGuard, fc, ds, ipamc, snap, encapOut, writes, ready, m))
		}
	}
	if cfg.BGP.Enabled {
		bgpSub = newBGPSubsystem(cfg, snap, services, learned, ready)
		m.watchBGP(bgpSub)
		subs = append(subs, bgpSub)
	}
	subs = append(subs, newMemoryTrim(snap, learned))
	st := &statusServer{node: cfg.NodeName, role: cfg.Role, ready: ready, bgp: bgpSub, felix: fcSub,
		stalled: func() []string { return snap.Stalled(livenessStall) }}
	st.diags = &diagCollector{status: st, version: cfg.Version, flags: cfg.Flags, logs: cfg.Logs, ipam: ipamc, run: runDiagCommand}
	subs = append(subs, runFunc("status-socket", func(ctx context.Context) error { return st.serveSocket(ctx, cfg.StatusSocket) }))
	if cfg.HealthListen != "" {
		subs = append(subs, runFunc("health", func(ctx context.Context) error { return st.serveHealth(ctx, cfg.HealthListen) }))
	}
	if cfg.MetricsListen != "" {
		subs = append(subs, runFunc("metrics", func(ctx context.Context) error { return m.serve(ctx, cfg.MetricsListen) }))
	}
	if cfg.PprofListen != "" {
		subs = append(subs, runFunc("pprof", func(ctx context.Context) error { return servePprof(ctx, cfg.PprofListen) }))
	}
	slog.Info("agent running", "node", cfg.NodeName, "role", cfg.Role, "bgp", cfg.BGP.Enabled)
	return runAll(ctx, subs)
}

// runAll runs every subsystem until ctx ends or one returns, which ends them all.
func runAll(ctx context.Context, subs []Subsystem) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	done := make(chan result, len(subs))
	for _, s := range subs {
		go func() { done <- result{s.Name(), s.Run(ctx)} }()
	}
	var first error
	for range subs {
		r := <-done
		if first == nil {
			first = r.err
			if first != nil {
				first = fmt.Errorf("%s: %w", r.name, first)
			} else if ctx.Err() == nil {
				first = fmt.Errorf("%s stopped unexpectedly", r.name)
			}
			cancel()
		}
	}
	if first == nil {
		slog.Info("shutting down")
	}
	return first
}

// runFunc makes a subsystem of a function.
func runFunc(name string, run func(context.Context) error) Subsystem { return funcSubsystem{name, run} }

type funcSubsystem struct {
	name string
	run  func(context.Context) error
}

func (f funcSubsystem) Name() string                  { return f.name }
func (f funcSubsystem) Run(ctx context.Context) error { return f.run(ctx) }

// nodeAddress resolves an --ip/--ip6 value: an address with its prefix length, none, or
// autodetect with the given method.
func nodeAddress(flag, value, methodFlag, method string, version int) (netip.Prefix, error) {
	switch value {
	case "none":
		return netip.Prefix{}, nil
	case "autodetect":
		m, err := felix.ParseAutodetectMethod(method, version)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s %q: %w", methodFlag, method, err)
		}
		a, err := felix.DetectNodeAddress(nil, m)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%s=autodetect (%s): %w", flag, method, err)
		}
		return a.Prefix, nil
	}
	p, err := netip.ParsePrefix(value)
	if err != nil || (version == 4) != p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %q: want an IPv%d address with its prefix length (like %s), autodetect or none",
			flag, value, version, map[int]string{4: "10.0.0.5/24", 6: "fd00::5/64"}[version])
	}
	return p, nil
}

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/bgp"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/nodestatus"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/proxy"
)

// publishInterval is the least time between two hand-overs of learned routes to felix.
const publishInterval = 250 * time.Millisecond

// bgpSubsystem runs the speaker for one node: on every snapshot change that matters it
// derives the desired peers and advertisements and hands the speaker only the
// differences. Learned routes go to the routes subsystem through learned.
type bgpSubsystem struct {
	cfg  BGPConfig
	node string
	role string
	snap *snapshot.Snapshot
	// services derives Services' endpoints, shared with the proxy and DNS; nil on a route
	// reflector, which has no endpoints.
	services *serviceIndex
	// local are the Services with a ready endpoint here and externalTrafficPolicy Local
	// (localServices), derived again only on a view that changes serviceInputKinds.
	local   []*api.Service
	learned *handoff[learnedRoutes] // nil on a route reflector: it installs nothing
	ready   *Readiness
	log     *slog.Logger
	status  chan chan nodestatus.Status // requests from the status socket and metrics

	speaker  *bgp.Speaker
	identity bgp.Options // what the running speaker was started with
	severity string      // logSeverityScreen applied to the running speaker
	problems []string
	// published is what felix was last given, so that only changes are sent.
	published *learnedRoutes
}

func newBGPSubsystem(cfg Config, snap *snapshot.Snapshot, services *serviceIndex, learned *handoff[learnedRoutes], ready *Readiness) *bgpSubsystem {
	ready.Set("bgp", "bgp: the speaker is not running yet")
	return &bgpSubsystem{cfg: cfg.BGP, node: cfg.NodeName, role: cfg.Role, snap: snap, services: services, learned: learned, ready: ready,
		log: slog.Default().With("component", "bgp"), status: make(chan chan nodestatus.Status)}
}

func (a *bgpSubsystem) Name() string { return "bgp" }

func (a *bgpSubsystem) Run(ctx context.Context) error {
	defer func() {
		if a.speaker != nil {
			a.speaker.Close() // no CEASE: peers keep our routes through a restart
		}
	}()
	sub := a.snap.Subscribe()
	var prev *snapshot.View
	var changed <-chan struct{}
	// Learned routes go to felix at most every publishInterval: a first change at once, a
	// burst (a peer sending a full table) in batches, so that re-publishing the whole set
	// does not starve the speaker.
	var lastPublish time.Time
	var publishC <-chan time.Time
	// The readiness reason is refreshed on a timer too: "synced" changes inside the speaker.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
			v := a.snap.View()
			if !a.take(prev, v) {
				continue
			}
			prev = v
			if err := a.reconcile(ctx, v); err != nil {
				a.log.Warn("BGP reconcile", "err", err)
			}
			if a.speaker != nil {
				changed = a.speaker.Changed()
			}
		case <-changed:
			if publishC != nil {
				continue // a publish is already due
			}
			if wait := publishInterval - time.Since(lastPublish); wait > 0 {
				publishC = time.After(wait)
				continue
			}
			a.publishLearned()
			lastPublish = time.Now()
		case <-publishC:
			publishC = nil
			a.publishLearned()
			lastPublish = time.Now()
		case reply := <-a.status:
			reply <- a.report(ctx)
		case <-tick.C:
		}
		a.ready.Set("bgp", a.notReady()...)
	}
}

// take says whether view v, after prev (the last view taken), changes what the speaker is
// told; if it changed what the local Services are derived from, it derives them again.
func (a *bgpSubsystem) take(prev, v *snapshot.View) bool {
	kinds := []*api.Kind{kindNodes, kindBGPPeers, kindBGPConfigs, kindIPPools, kindWorkloadEndpoints}
	if a.services != nil {
		kinds = append(kinds, serviceInputKinds...)
	}
	if !v.Synced || !v.Differs(prev, a.role == RoleNode, kinds...) {
		return false
	}
	if a.services != nil && v.Differs(prev, false, serviceInputKinds...) {
		a.local = localServices(a.node, a.services.inputs(v))
	}
	return true
}

// notReady is BGP's reason not to be ready: no speaker, or learned routes not synced.
func (a *bgpSubsystem) notReady() []string {
	if a.speaker == nil {
		return []string{"bgp: the speaker is not running yet"}
	}
	if _, synced := a.speaker.Learned(); !synced {
		return []string{"bgp: learned routes not synced yet (waiting for End-of-RIB from every peer, at most --bgp-sync-timeout or a peer's graceful restart time)"}
	}
	return nil
}

// Report asks the subsystem for its status; ok is false when ctx ended first.
func (a *bgpSubsystem) Report(ctx context.Context) (nodestatus.Status, bool) {
	reply := make(chan nodestatus.Status, 1)
	select {
	case a.status <- reply:
	case <-ctx.Done():
		return nodestatus.Status{}, false
	case <-time.After(10 * time.Second):
		return nodestatus.Status{Node: a.node, Role: a.role, Err: "the BGP agent is busy"}, true
	}
	select {
	case rep := <-reply:
		return rep, true
	case <-ctx.Done():
		return nodestatus.Status{}, false
	}
}

// bgpInput is what the speaker's desired state is derived from, taken from a view.
func bgpInput(v *snapshot.View, node string, role string) (me *api.Node, configs [2]*api.BGPConfiguration, blocks []netip.Prefix, addrs []netip.Addr) {
	me, _ = snapshot.Get[*api.Node](v, "", node)
	configs[0], _ = snapshot.Get[*api.BGPConfiguration](v, "", api.DefaultBGPConfigurationName)
	configs[1], _ = snapshot.Get[*api.BGPConfiguration](v, "", api.NodeBGPConfigurationPrefix+node)
	if role == RoleNode {
		state, _ := localState(v, node, learnedRoutes{}, nil)
		blocks, addrs = localRoutes(state)
	}
	return me, configs, blocks, addrs
}

// localServices returns the Services of in that have a ready endpoint on node and
// externalTrafficPolicy Local: bgp.DesiredAdvertisements gives their addresses host
// routes from this node (it ignores any other Service, so they are left out here).
func localServices(node string, in []proxy.ServiceInput) []*api.Service {
	var out []*api.Service
	for _, s := range in {
		if s.Service.Spec.ExternalTrafficPolicy == api.TrafficPolicyLocal && localReadyEndpoints(node, s.Endpoints) > 0 {
			out = append(out, s.Service)
		}
	}
	return out
}

func (a *bgpSubsystem) reconcile(ctx context.Context, v *snapshot.View) error {
	me, configs, blocks, addrs := bgpInput(v, a.node, a.role)
	cfg, problems := bgp.ConfigFrom(configs[0], configs[1])
	if me == nil {
		return fmt.Errorf("node %s is not registered", a.node)
	}
	selfInfo, err := bgp.NodeInfoFrom(me)
	if err != nil {
		return err
	}
	if !selfInfo.Addr.IsValid() {
		return fmt.Errorf("node %s has no spec.bgp.ipv4Address: BGP needs one", a.node)
	}
	self := bgp.Self{Name: a.node, Addr: selfInfo.Addr, Addr6: selfInfo.Addr6, ASN: cfg.ASN, RouterID: selfInfo.Addr, ClusterID: selfInfo.ClusterID, Labels: me.Labels}
	if selfInfo.ASN != 0 {
		self.ASN = selfInfo.ASN
	}
	if a.cfg.RouterID != "" {
		if self.RouterID, err = netip.ParseAddr(a.cfg.RouterID); err != nil {
			return fmt.Errorf("--bgp-router-id %q: %w", a.cfg.RouterID, err)
		}
	}
	opts := bgp.Options{
		Self: self, ListenPort: cfg.ListenPort, GRPCAddress: a.cfg.GRPCAddress, PasswordDir: a.cfg.PasswordDir,
		HoldTime: a.cfg.HoldTime, KeepaliveTime: a.cfg.KeepaliveTime, ConnectRetry: a.cfg.ConnectRetry,
		NoGracefulRestart: a.cfg.NoGR, SyncTimeout: a.cfg.SyncTimeout, Log: a.log,
	}
	// The speaker's identity (AS, router ID, cluster ID, port) is fixed for its life: a
	// change restarts it, which resets every session, as in any BGP daemon.
	ident := opts
	ident.Self.Labels = nil
	if a.speaker != nil && !reflect.DeepEqual(ident, a.identity) {
		a.log.Info("BGP identity changed; restarting the speaker", "asn", self.ASN, "router-id", self.RouterID, "cluster-id", self.ClusterID)
		a.speaker.Stop(ctx)
		a.speaker = nil
	}
	if a.speaker == nil {
		if a.speaker, err = bgp.Start(ctx, opts); err != nil {
			return err
		}
		a.identity = ident
		a.severity = ""
		a.log.Info("BGP speaker started", "asn", self.ASN, "router-id", self.RouterID, "address6", self.Addr6, "port", cfg.ListenPort,
			"route-reflector", self.ClusterID.IsValid(), "grpc", opts.GRPCAddress)
	}

	if err := a.speaker.SetLogSeverity(cfg.LogSeverity); err != nil {
		problems = append(problems, err.Error())
	} else if cfg.LogSeverity != a.severity {
		a.log.Info("GoBGP's log level (logSeverityScreen)", "severity", cfg.LogSeverity)
		a.severity = cfg.LogSeverity
	}

	nodes := snapshot.List[*api.Node](v)
	infos := make([]bgp.NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		ni, err := bgp.NodeInfoFrom(n)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		infos = append(infos, ni)
	}
	desired, pp := bgp.DesiredPeers(bgp.PeerInput{Self: self, Config: cfg, Nodes: infos, Peers: snapshot.List[*api.BGPPeer](v)})
	problems = append(problems, pp...)
	if !slices.Equal(problems, a.problems) && len(problems) > 0 {
		a.log.Warn("BGP configuration problems", "problems", problems)
	}
	a.problems = problems
	// Advertisements before peers: a restarted speaker's first UPDATE to a peer (and its
	// End-of-RIB, on which the peer drops the routes it kept) must already hold them all.
	adverts := bgp.WithCommunities(bgp.DesiredAdvertisements(bgp.AdvertInput{
		Pools: snapshot.List[*api.IPPool](v), Blocks: blocks, Addrs: addrs, Services: cfg.Services, LocalServices: a.local,
	}), cfg.Communities)
	aerr := a.speaker.SetAdvertisements(ctx, adverts)
	perr := a.speaker.SetPeers(ctx, desired)
	a.publishLearned()
	if perr != nil {
		return perr
	}
	return aerr
}

// publishLearned hands the routes subsystem the speaker's learned routes.
func (a *bgpSubsystem) publishLearned() {
	if a.learned == nil || a.speaker == nil {
		return
	}
	rs, synced := a.speaker.Learned()
	out := learnedRoutes{routes: make([]felix.Route, 0, len(rs)), synced: synced}
	for _, r := range rs {
		// A plain route via the next hop: on the node's subnet the kernel resolves it;
		// felix rewrites it for next hops behind a tunnel.
		out.routes = append(out.routes, felix.Route{Dst: r.Dst, Type: felix.RouteGateway, Gateway: r.NextHop})
	}
	if p := a.published; p != nil && p.synced == out.synced && slices.Equal(p.routes, out.routes) {
		return
	}
	a.published = &out
	a.learned.put(out)
}

func (a *bgpSubsystem) report(ctx context.Context) nodestatus.Status {
	r := nodestatus.Status{Node: a.node, Role: a.role, Problems: a.problems, Peers: []nodestatus.Peer{}, Advertised: []string{}}
	if a.speaker == nil {
		r.Err = "the BGP speaker is not running yet"
		return r
	}
	self := a.identity.Self
	r.ASN, r.Address, r.RouterID = self.ASN, self.Addr.String(), self.RouterID.String()
	if self.Addr6.IsValid() {
		r.Address6 = self.Addr6.String()
	}
	if self.ClusterID.IsValid() {
		r.ClusterID = self.ClusterID.String()
	}
	peers, err := a.speaker.Status(ctx)
	if err != nil {
		r.Err = err.Error()
	}
	for _, p := range peers {
		r.Peers = append(r.Peers, nodestatus.Peer{Address: p.Address, Port: p.Port, ASN: p.ASN, Type: string(p.Type),
			Source: p.Source, State: p.State, Since: p.Since, Info: p.Info, Received: p.Received, Advertised: p.Advertised})
	}
	for _, p := range a.speaker.Advertised() {
		r.Advertised = append(r.Advertised, p.String())
	}
	learned, synced := a.speaker.Learned()
	r.Learned, r.Synced = len(learned), synced
	return r
}

package main

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
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/felix"
)

// bgpOptions are tabby-node's BGP flags.
type bgpOptions struct {
	enabled       bool
	routerID      string
	passwordDir   string
	grpc          bool
	grpcAddress   string
	holdTime      time.Duration
	keepaliveTime time.Duration
	connectRetry  time.Duration
	noGR          bool
	syncTimeout   time.Duration
}

// localRoutes is what the workload side tells BGP: the node's confirmed blocks and its
// workloads' addresses (some of which may be borrowed from others' blocks).
type localRoutes struct {
	blocks []netip.Prefix
	addrs  []netip.Addr
}

// learnedRoutes is what BGP tells felix.
type learnedRoutes struct {
	routes []felix.Route
	synced bool
}

// sendLatest replaces any value waiting in c with v.
func sendLatest[T any](c chan T, v T) {
	select {
	case <-c:
	default:
	}
	c <- v
}

var (
	kindNodes      = mustKind("nodes")
	kindBGPPeers   = mustKind("bgppeers")
	kindBGPConfigs = mustKind("bgpconfigurations")
	kindIPPools    = mustKind("ippools")
)

func mustKind(plural string) *api.Kind {
	k, err := api.LookupKind(plural)
	if err != nil {
		panic(err)
	}
	return k
}

// bgpAgent runs the speaker for one node: it watches Nodes, BGPPeers, BGPConfigurations
// and IPPools, recomputes the desired peers and advertisements on every change, and hands
// the speaker only the differences. Learned routes go out on learned.
type bgpAgent struct {
	o       bgpOptions
	node    string
	ds      *datastore.Client
	log     *slog.Logger
	local   <-chan localRoutes     // nil on a route reflector: it has no workloads
	learned chan learnedRoutes     // nil on a route reflector: it installs nothing
	status  chan chan statusReport // requests from the status socket

	speaker  *bgp.Speaker
	identity bgp.Options // what the running speaker was started with
	problems []string
	// published is what felix was last given, so that only changes are sent.
	published *learnedRoutes
}

// statusReport is what the status socket serves.
type statusReport struct {
	Node       string           `json:"node"`
	Role       string           `json:"role"`
	ASN        uint32           `json:"asn"`
	Address    string           `json:"address"`
	RouterID   string           `json:"routerID"`
	ClusterID  string           `json:"clusterID,omitempty"`
	Synced     bool             `json:"synced"`
	Peers      []bgp.PeerStatus `json:"peers"`
	Advertised []string         `json:"advertised"`
	Learned    int              `json:"learned"`
	Problems   []string         `json:"problems,omitempty"`
	Err        string           `json:"error,omitempty"`
}

func (a *bgpAgent) run(ctx context.Context) error {
	nodesC := a.ds.Watch(ctx, kindNodes, "", 0)
	peersC := a.ds.Watch(ctx, kindBGPPeers, "", 0)
	configsC := a.ds.Watch(ctx, kindBGPConfigs, "", 0)
	poolsC := a.ds.Watch(ctx, kindIPPools, "", 0)
	nodes := map[string]*api.Node{}
	peers := map[string]*api.BGPPeer{}
	configs := map[string]*api.BGPConfiguration{}
	pools := map[string]*api.IPPool{}
	synced := map[*api.Kind]bool{}
	var local localRoutes
	localRead := a.local == nil
	defer func() {
		if a.speaker != nil {
			a.speaker.Close() // no CEASE: peers keep our routes through a restart
		}
	}()
	var changed <-chan struct{}
	// Learned routes go to felix at most every publishInterval: a first change at once, a
	// burst (a peer sending a full table) in batches, so that re-publishing the whole set
	// does not starve the speaker.
	var lastPublish time.Time
	var publishC <-chan time.Time
	for {
		dirty := false
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-nodesC:
			if !ok {
				return ctx.Err()
			}
			dirty = applyEvent(ev, nodes, synced, kindNodes, a.log)
		case ev, ok := <-peersC:
			if !ok {
				return ctx.Err()
			}
			dirty = applyEvent(ev, peers, synced, kindBGPPeers, a.log)
		case ev, ok := <-configsC:
			if !ok {
				return ctx.Err()
			}
			dirty = applyEvent(ev, configs, synced, kindBGPConfigs, a.log)
		case ev, ok := <-poolsC:
			if !ok {
				return ctx.Err()
			}
			dirty = applyEvent(ev, pools, synced, kindIPPools, a.log)
		case l := <-a.local:
			local, localRead, dirty = l, true, true
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
		}
		if !dirty || len(synced) < 4 || !localRead {
			continue
		}
		if err := a.reconcile(ctx, nodes, peers, configs, pools, local); err != nil {
			a.log.Warn("BGP reconcile", "err", err)
		}
		if a.speaker != nil {
			changed = a.speaker.Changed()
		}
	}
}

// publishInterval is the least time between two hand-overs of learned routes to felix.
const publishInterval = 250 * time.Millisecond

// applyEvent applies a watch event to m, keyed by name; it reports whether m changed or
// the watch synced.
func applyEvent[T api.Resource](ev datastore.Event, m map[string]T, synced map[*api.Kind]bool, kind *api.Kind, log *slog.Logger) bool {
	switch ev.Type {
	case datastore.Added, datastore.Modified:
		r := ev.Resource.(T)
		m[r.GetObjectMeta().Name] = r
	case datastore.Deleted:
		delete(m, ev.Resource.(T).GetObjectMeta().Name)
	case datastore.Synced:
		synced[kind] = true
	case datastore.Error:
		log.Warn("watch", "kind", kind.Name, "err", ev.Err)
		return false
	}
	return true
}

func (a *bgpAgent) reconcile(ctx context.Context, nodes map[string]*api.Node, peers map[string]*api.BGPPeer,
	configs map[string]*api.BGPConfiguration, pools map[string]*api.IPPool, local localRoutes) error {
	cfg, problems := bgp.ConfigFrom(configs[api.DefaultBGPConfigurationName], configs[api.NodeBGPConfigurationPrefix+a.node])
	me, ok := nodes[a.node]
	if !ok {
		return fmt.Errorf("node %s is not registered", a.node)
	}
	selfInfo, err := bgp.NodeInfoFrom(me)
	if err != nil {
		return err
	}
	if !selfInfo.Addr.IsValid() {
		return fmt.Errorf("node %s has no spec.bgp.ipv4Address: BGP needs one", a.node)
	}
	self := bgp.Self{Name: a.node, Addr: selfInfo.Addr, ASN: cfg.ASN, RouterID: selfInfo.Addr, ClusterID: selfInfo.ClusterID, Labels: me.Labels}
	if selfInfo.ASN != 0 {
		self.ASN = selfInfo.ASN
	}
	if a.o.routerID != "" {
		if self.RouterID, err = netip.ParseAddr(a.o.routerID); err != nil {
			return fmt.Errorf("--bgp-router-id %q: %w", a.o.routerID, err)
		}
	}
	opts := bgp.Options{
		Self: self, ListenPort: cfg.ListenPort, GRPCAddress: a.o.grpcAddress, PasswordDir: a.o.passwordDir,
		HoldTime: a.o.holdTime, KeepaliveTime: a.o.keepaliveTime, ConnectRetry: a.o.connectRetry,
		NoGracefulRestart: a.o.noGR, SyncTimeout: a.o.syncTimeout, Log: a.log,
	}
	if !a.o.grpc {
		opts.GRPCAddress = ""
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
		a.log.Info("BGP speaker started", "asn", self.ASN, "router-id", self.RouterID, "port", cfg.ListenPort,
			"route-reflector", self.ClusterID.IsValid(), "grpc", opts.GRPCAddress)
	}

	infos := make([]bgp.NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		ni, err := bgp.NodeInfoFrom(n)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		infos = append(infos, ni)
	}
	desired, pp := bgp.DesiredPeers(bgp.PeerInput{Self: self, Config: cfg, Nodes: infos, Peers: values(peers)})
	problems = append(problems, pp...)
	if !slices.Equal(problems, a.problems) && len(problems) > 0 {
		a.log.Warn("BGP configuration problems", "problems", problems)
	}
	a.problems = problems
	perr := a.speaker.SetPeers(ctx, desired)
	adverts := bgp.DesiredAdvertisements(bgp.AdvertInput{
		Pools: values(pools), Blocks: local.blocks, Addrs: local.addrs, ServiceCIDRs: cfg.ServiceCIDRs,
	})
	aerr := a.speaker.SetAdvertisements(ctx, adverts)
	a.publishLearned()
	if perr != nil {
		return perr
	}
	return aerr
}

// publishLearned hands felix the speaker's learned routes.
func (a *bgpAgent) publishLearned() {
	if a.learned == nil || a.speaker == nil {
		return
	}
	rs, synced := a.speaker.Learned()
	out := learnedRoutes{routes: make([]felix.Route, 0, len(rs)), synced: synced}
	for _, r := range rs {
		// A plain route via the next hop: on the node's subnet the kernel resolves it; the
		// encapsulation issue adds tunnel routes for next hops it cannot reach.
		out.routes = append(out.routes, felix.Route{Dst: r.Dst, Type: felix.RouteGateway, Gateway: r.NextHop})
	}
	if p := a.published; p != nil && p.synced == out.synced && slices.Equal(p.routes, out.routes) {
		return
	}
	a.published = &out
	sendLatest(a.learned, out)
}

func (a *bgpAgent) report(ctx context.Context) statusReport {
	r := statusReport{Node: a.node, Role: "node", Problems: a.problems, Peers: []bgp.PeerStatus{}, Advertised: []string{}}
	if a.local == nil {
		r.Role = "route-reflector"
	}
	if a.speaker == nil {
		r.Err = "the BGP speaker is not running yet"
		return r
	}
	self := a.identity.Self
	r.ASN, r.Address, r.RouterID = self.ASN, self.Addr.String(), self.RouterID.String()
	if self.ClusterID.IsValid() {
		r.ClusterID = self.ClusterID.String()
	}
	peers, err := a.speaker.Status(ctx)
	if err != nil {
		r.Err = err.Error()
	} else {
		r.Peers = peers
	}
	for _, p := range a.speaker.Advertised() {
		r.Advertised = append(r.Advertised, p.String())
	}
	learned, synced := a.speaker.Learned()
	r.Learned, r.Synced = len(learned), synced
	return r
}

func values[T any](m map[string]T) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

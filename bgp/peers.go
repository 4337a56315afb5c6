package bgp

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/policy/selector"
)

// PeerType says why a peer is configured, as calicoctl node status names it.
type PeerType string

// Peer types.
const (
	PeerMesh           PeerType = "node-to-node mesh"
	PeerRouteReflector PeerType = "route reflector"
	PeerGlobal         PeerType = "global"
	PeerNodeSpecific   PeerType = "node specific"
)

// Self is this node's BGP identity.
type Self struct {
	Name string
	Addr netip.Addr // the IPv4 session address (Node.spec.bgp.ipv4Address)
	// Addr6 is the IPv6 session address (Node.spec.bgp.ipv6Address); invalid: no IPv6
	// sessions. IPv6 prefixes go over IPv6 sessions only, with it as next hop, as Calico's.
	Addr6    netip.Addr
	ASN      uint32
	RouterID netip.Addr
	// ClusterID is set on a route reflector (Node.spec.bgp.routeReflectorClusterID).
	ClusterID netip.Addr
	Labels    map[string]string
}

// Config is the part of BGPConfiguration the speaker uses, defaults applied.
type Config struct {
	ASN            uint32
	ListenPort     uint16
	Mesh           bool
	MeshMaxRestart time.Duration
	// MeshPassword names the mesh sessions' TCP MD5 key, as Peer.Password.
	MeshPassword string
	Services     ServiceCIDRs
	// LogSeverity is logSeverityScreen, GoBGP's log level (Speaker.SetLogSeverity).
	LogSeverity string
	// Communities are prefixAdvertisements, sorted by CIDR: the default object's, an
	// entry of the node's override replacing the one for the same CIDR.
	Communities []PrefixCommunities
}

// ConfigFrom merges the default BGPConfiguration and this node's "node.<name>" override
// (either may be nil) over Calico's defaults.
func ConfigFrom(def, node *api.BGPConfiguration) (Config, []string) {
	c := Config{ASN: uint32(api.DefaultASNumber), ListenPort: api.DefaultBGPListenPort, Mesh: true, MeshMaxRestart: api.DefaultMaxRestartTime,
		LogSeverity: api.DefaultBGPLogSeverity}
	var problems []string
	names := map[string]string{} // community name -> value
	byCIDR := map[netip.Prefix]PrefixCommunities{}
	for _, bc := range []*api.BGPConfiguration{def, node} {
		if bc == nil {
			continue
		}
		s := bc.Spec
		if s.ASNumber != nil {
			c.ASN = uint32(*s.ASNumber)
		}
		if s.ListenPort != 0 {
			c.ListenPort = s.ListenPort
		}
		if s.LogSeverityScreen != "" {
			c.LogSeverity = s.LogSeverityScreen
		}
		if s.NodeToNodeMeshEnabled != nil {
			c.Mesh = *s.NodeToNodeMeshEnabled
		}
		if s.NodeMeshMaxRestartTime != nil {
			c.MeshMaxRestart = s.NodeMeshMaxRestartTime.Duration
		}
		if s.NodeMeshPassword != nil {
			c.MeshPassword = s.NodeMeshPassword.PasswordRef()
		}
		for _, k := range []struct {
			blocks []api.ServiceIPBlock
			to     *[]netip.Prefix
		}{
			{s.ServiceClusterIPs, &c.Services.ClusterIPs},
			{s.ServiceExternalIPs, &c.Services.ExternalIPs},
			{s.ServiceLoadBalancerIPs, &c.Services.LoadBalancerIPs},
		} {
			for _, b := range k.blocks {
				p, err := api.ParseNet(b.CIDR)
				if err != nil {
					problems = append(problems, fmt.Sprintf("BGPConfiguration %s: %v", bc.Name, err))
					continue
				}
				*k.to = append(*k.to, p)
			}
		}
		for _, cm := range s.Communities {
			names[cm.Name] = cm.Value
		}
		for _, pa := range s.PrefixAdvertisements {
			pc, err := prefixCommunities(pa, names)
			if err != nil {
				problems = append(problems, fmt.Sprintf("BGPConfiguration %s: prefixAdvertisements: %v", bc.Name, err))
				continue
			}
			byCIDR[pc.CIDR] = pc
		}
	}
	for _, pc := range byCIDR {
		c.Communities = append(c.Communities, pc)
	}
	slices.SortFunc(c.Communities, func(a, b PrefixCommunities) int { return comparePrefix(a.CIDR, b.CIDR) })
	return c, problems
}

// prefixCommunities resolves one prefixAdvertisements entry: each of its communities is a
// name defined in communities (names) or a literal value.
func prefixCommunities(pa api.PrefixAdvertisement, names map[string]string) (PrefixCommunities, error) {
	cidr, err := api.ParseNet(pa.CIDR)
	if err != nil {
		return PrefixCommunities{}, err
	}
	pc := PrefixCommunities{CIDR: cidr}
	for _, name := range pa.Communities {
		v, ok := names[name]
		if !ok {
			v = name
		}
		parts, err := api.ParseCommunity(v)
		if err != nil && !ok {
			return PrefixCommunities{}, fmt.Errorf("%s: %q is neither a name defined in communities nor a value: %w", cidr, name, err)
		} else if err != nil {
			return PrefixCommunities{}, fmt.Errorf("%s: community %s: %w", cidr, name, err)
		}
		var c Communities
		if len(parts) == 2 {
			c.Standard = []uint32{parts[0]<<16 | parts[1]}
		} else {
			c.Large = []LargeCommunity{{parts[0], parts[1], parts[2]}}
		}
		pc.Communities.add(c)
	}
	return pc, nil
}

// NodeInfo is what the peer computation needs of one Node resource.
type NodeInfo struct {
	Name      string
	Addr      netip.Addr // invalid: the node has no IPv4 BGP address
	Addr6     netip.Addr // invalid: the node has no IPv6 BGP address
	ASN       uint32     // 0: the cluster's
	ClusterID netip.Addr // set on route reflectors
	Labels    map[string]string
}

// NodeInfoFrom extracts a Node's BGP identity.
func NodeInfoFrom(n *api.Node) (NodeInfo, error) {
	ni := NodeInfo{Name: n.Name, Labels: n.Labels}
	b := n.Spec.BGP
	if b == nil {
		return ni, nil
	}
	if b.ASNumber != nil {
		ni.ASN = uint32(*b.ASNumber)
	}
	p, err := b.IPv4Prefix()
	if err != nil {
		return ni, fmt.Errorf("node %s: %w", n.Name, err)
	}
	if p.IsValid() {
		ni.Addr = p.Addr()
	}
	p6, err := b.IPv6Prefix()
	if err != nil {
		return ni, fmt.Errorf("node %s: %w", n.Name, err)
	}
	if p6.IsValid() {
		ni.Addr6 = p6.Addr()
	}
	if b.RouteReflectorClusterID != "" {
		if ni.ClusterID, err = netip.ParseAddr(b.RouteReflectorClusterID); err != nil {
			return ni, fmt.Errorf("node %s: routeReflectorClusterID: %w", n.Name, err)
		}
	}
	return ni, nil
}

// addrFor is this node's address of a's family: the session address toward a.
func (s Self) addrFor(a netip.Addr) netip.Addr {
	if a.Is4() {
		return s.Addr
	}
	return s.Addr6
}

// sessionAddrs are n's addresses of the families self has one of too: where self has
// sessions with n, IPv4 first.
func (n NodeInfo) sessionAddrs(self Self) []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{n.Addr, n.Addr6} {
		if a.IsValid() && self.addrFor(a).IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// Peer is one BGP session the node should have. It is comparable: a peer whose Peer value
// changes is updated in the speaker, one that stays equal is left alone.
type Peer struct {
	Addr netip.Addr
	Port uint16 // 0: 179; node peers get the cluster's listen port
	ASN  uint32
	Type PeerType
	// Source names what configured the peer: a node name or "BGPPeer <name>".
	Source string
	// RRClient: this node is a route reflector and the peer one of its clients.
	RRClient bool
	// Password names the TCP MD5 key ("<secret name>/<key>"), empty for none.
	Password            string
	KeepOriginalNextHop bool
	RestartTime         time.Duration
	// LocalAddr binds the session to this node's address (sourceAddress: UseNodeIP).
	LocalAddr netip.Addr
	// Passive: wait for the peer to connect, never dial it. Between two tabby nodes only
	// the one with the lower address dials: GoBGP resolves no connection collision (it
	// closes a connection that arrives while its own attempt is under way, or while it
	// sits in its 5 s idle hold after a failure), so two nodes dialing each other after a
	// restart can fail each other's attempts for minutes. The waiting side accepts only a
	// connection from the dialing node's address: one dialing without LocalAddr (a
	// BGPPeer with sourceAddress None) must have the kernel pick that address.
	Passive bool
	// LongLived negotiates long-lived graceful restart (RFC 9494) with a stale time of
	// RestartTime, on sessions between tabby nodes: GoBGP, as graceful restart helper,
	// drops the restarting peer's routes on the first failed reconnection attempt (any
	// fall back to Idle), not when the restart time runs out; with long-lived graceful
	// restart negotiated it keeps them instead.
	LongLived bool
}

// Key identifies a peer in the speaker: its address.
func (p Peer) Key() string { return p.Addr.String() }

// IBGP says whether the session is internal to localASN.
func (p Peer) IBGP(localASN uint32) bool { return p.ASN == localASN }

// PeerInput is everything DesiredPeers reads.
type PeerInput struct {
	Self   Self
	Config Config
	Nodes  []NodeInfo
	Peers  []*api.BGPPeer
}

// DesiredPeers computes the sessions this node should have, sorted by address, and the
// problems (bad selectors, unusable peers) met on the way. Rules, as Calico's:
//
//   - each family over its own sessions: a session with another node for each of IPv4
//     and IPv6 that both nodes have an address of (Self.Addr, Self.Addr6), a BGPPeer's
//     peerIP only if this node has an address of its family;
//   - node-to-node mesh (Config.Mesh): every other node with an address, except that route
//     reflectors (nodes with a cluster ID) are neither in the mesh nor mesh with others;
//   - BGPPeers that apply to this node (no node and no nodeSelector: global; node or
//     nodeSelector matching: node specific) give a peer at peerIP, or one per other node
//     that peerSelector selects (type "route reflector" when that node is one);
//   - a route reflector reflects to a node peer that is not a reflector of its own cluster;
//   - one session per address: explicit BGPPeers win over the mesh, node-specific over
//     global, and among equals the name that sorts first.
func DesiredPeers(in PeerInput) ([]Peer, []string) {
	var problems []string
	self := in.Self
	nodes := slices.Clone(in.Nodes)
	slices.SortFunc(nodes, func(a, b NodeInfo) int { return cmp.Compare(a.Name, b.Name) })
	asnOf := func(n NodeInfo) uint32 {
		if n.ASN != 0 {
			return n.ASN
		}
		return in.Config.ASN
	}
	isRR := self.ClusterID.IsValid()
	// Sessions between two tabby nodes: one side dials, and long-lived graceful restart
	// (see Peer). Both ends read the same Nodes, so they agree on which side waits.
	betweenNodes := func(p *Peer) {
		p.Passive, p.LongLived = self.addrFor(p.Addr).Compare(p.Addr) > 0, true
	}
	nodeAddrs := map[netip.Addr]bool{}
	for _, n := range nodes {
		if n.Name != self.Name {
			for _, a := range n.sessionAddrs(self) {
				nodeAddrs[a] = true
			}
		}
	}
	// nodePeers are the sessions with node n: one per family both have an address of.
	nodePeers := func(n NodeInfo, typ PeerType, restart time.Duration) []Peer {
		var out []Peer
		for _, a := range n.sessionAddrs(self) {
			p := Peer{Addr: a, Port: in.Config.ListenPort, ASN: asnOf(n), Type: typ, Source: n.Name, RestartTime: restart, LocalAddr: self.addrFor(a)}
			if isRR && n.ClusterID != self.ClusterID && p.ASN == self.ASN {
				p.RRClient = true
			}
			betweenNodes(&p)
			out = append(out, p)
		}
		return out
	}

	type candidate struct {
		peer Peer
		rank int // lower wins
		name string
	}
	var cands []candidate
	if in.Config.Mesh && !isRR {
		for _, n := range nodes {
			if n.Name == self.Name || n.ClusterID.IsValid() {
				continue
			}
			for _, p := range nodePeers(n, PeerMesh, in.Config.MeshMaxRestart) {
				p.Password = in.Config.MeshPassword
				cands = append(cands, candidate{p, 2, n.Name})
			}
		}
	}
	bgpPeers := slices.Clone(in.Peers)
	slices.SortFunc(bgpPeers, func(a, b *api.BGPPeer) int { return cmp.Compare(a.Name, b.Name) })
	for _, bp := range bgpPeers {
		s := bp.Spec
		// localSide says whether the peering applies to node n (its name and labels).
		typ, rank := PeerGlobal, 1
		localSide := func(string, map[string]string) bool { return true }
		switch {
		case s.Node != "":
			typ, rank = PeerNodeSpecific, 0
			localSide = func(name string, _ map[string]string) bool { return name == s.Node }
		case s.NodeSelector != "":
			sel, err := selector.Parse(s.NodeSelector)
			if err != nil {
				problems = append(problems, fmt.Sprintf("BGPPeer %s: nodeSelector: %v", bp.Name, err))
				continue
			}
			typ, rank = PeerNodeSpecific, 0
			localSide = func(_ string, labels map[string]string) bool { return sel.Evaluate(labels) }
		}
		password := s.Password.PasswordRef()
		// local is the session's source address for a peer at a: this node's address of
		// a's family, unless sourceAddress is None.
		local := func(a netip.Addr) netip.Addr {
			if s.SourceAddress == api.SourceAddressNone {
				return netip.Addr{}
			}
			return self.addrFor(a)
		}
		if s.PeerIP != "" {
			if !localSide(self.Name, self.Labels) {
				continue
			}
			addr, port, err := s.PeerAddrPort()
			if err != nil {
				problems = append(problems, fmt.Sprintf("BGPPeer %s: %v", bp.Name, err))
				continue
			}
			if addr == self.Addr || addr == self.Addr6 {
				continue
			}
			if !self.addrFor(addr).IsValid() {
				problems = append(problems, fmt.Sprintf("BGPPeer %s: peerIP %s: node %s has no IP%s address of that family to peer from",
					bp.Name, addr, self.Name, map[bool]string{true: "v4", false: "v6 (--ip6)"}[addr.Is4()]))
				continue
			}
			p := Peer{Addr: addr, Port: port, ASN: uint32(s.ASNumber), Type: typ, Source: "BGPPeer " + bp.Name,
				Password: password, KeepOriginalNextHop: s.KeepOriginalNextHop, RestartTime: s.RestartTime(), LocalAddr: local(addr)}
			if nodeAddrs[addr] && (port == 0 || port == in.Config.ListenPort) {
				betweenNodes(&p) // another node's speaker
			}
			cands = append(cands, candidate{p, rank, bp.Name})
			continue
		}
		sel, err := selector.Parse(s.PeerSelector)
		if err != nil {
			problems = append(problems, fmt.Sprintf("BGPPeer %s: peerSelector: %v", bp.Name, err))
			continue
		}
		// Selector peerings are symmetric, as Calico's: a node the BGPPeer applies to peers
		// with the nodes peerSelector selects, and each selected node peers back.
		selfLocal, selfSelected := localSide(self.Name, self.Labels), sel.Evaluate(self.Labels)
		for _, n := range nodes {
			if n.Name == self.Name {
				continue
			}
			if !(selfLocal && sel.Evaluate(n.Labels)) && !(selfSelected && localSide(n.Name, n.Labels)) {
				continue
			}
			t := typ
			if n.ClusterID.IsValid() || isRR {
				t = PeerRouteReflector
			}
			for _, p := range nodePeers(n, t, s.RestartTime()) {
				p.Password, p.KeepOriginalNextHop, p.LocalAddr = password, s.KeepOriginalNextHop, local(p.Addr)
				cands = append(cands, candidate{p, rank, bp.Name})
			}
		}
	}

	best := map[netip.Addr]candidate{}
	for _, c := range cands {
		if !c.peer.Addr.IsValid() {
			continue
		}
		if b, ok := best[c.peer.Addr]; ok && cmp.Or(cmp.Compare(b.rank, c.rank), cmp.Compare(b.name, c.name)) <= 0 {
			continue
		}
		best[c.peer.Addr] = c
	}
	peers := make([]Peer, 0, len(best))
	for _, c := range best {
		peers = append(peers, c.peer)
	}
	slices.SortFunc(peers, func(a, b Peer) int { return a.Addr.Compare(b.Addr) })
	return peers, problems
}

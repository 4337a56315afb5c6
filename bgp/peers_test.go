package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
)

func node(name, addr string, labels map[string]string) NodeInfo {
	return NodeInfo{Name: name, Addr: netip.MustParseAddr(addr), Labels: labels}
}

func rr(n NodeInfo, cluster string) NodeInfo {
	n.ClusterID = netip.MustParseAddr(cluster)
	return n
}

// dual gives n an IPv6 address too.
func dual(n NodeInfo, addr6 string) NodeInfo {
	n.Addr6 = netip.MustParseAddr(addr6)
	return n
}

func selfOf(n NodeInfo, asn uint32) Self {
	return Self{Name: n.Name, Addr: n.Addr, Addr6: n.Addr6, ASN: asn, RouterID: n.Addr, ClusterID: n.ClusterID, Labels: n.Labels}
}

func bgpPeer(name string, spec api.BGPPeerSpec) *api.BGPPeer {
	p := &api.BGPPeer{Spec: spec}
	p.Name = name
	return p
}

// describe prints peers as "addr:port asn type source [rr-client] [pw=...] [keep-nh] [llgr] [passive]" lines.
func describe(peers []Peer) string {
	var b strings.Builder
	for _, p := range peers {
		fmt.Fprintf(&b, "%s:%d %d %s %s", p.Addr, p.Port, p.ASN, p.Type, p.Source)
		if p.RRClient {
			b.WriteString(" rr-client")
		}
		if p.Password != "" {
			b.WriteString(" pw=" + p.Password)
		}
		if p.KeepOriginalNextHop {
			b.WriteString(" keep-nh")
		}
		if p.LongLived {
			b.WriteString(" llgr")
		}
		if p.Passive {
			b.WriteString(" passive")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestDesiredPeers(t *testing.T) {
	cfg := Config{ASN: 64512, ListenPort: 179, Mesh: true, MeshMaxRestart: 120 * time.Second}
	noMesh := cfg
	noMesh.Mesh = false
	meshPW := cfg
	meshPW.MeshPassword = "bgp/mesh"
	n1 := node("node1", "10.0.0.1", nil)
	n2 := node("node2", "10.0.0.2", nil)
	n3 := node("node3", "10.0.0.3", map[string]string{"rack": "a"})
	r1 := rr(node("rr1", "10.0.0.101", map[string]string{"route-reflector": "true"}), "1.0.0.1")
	r2 := rr(node("rr2", "10.0.0.102", map[string]string{"route-reflector": "true"}), "1.0.0.1")
	noAddr := NodeInfo{Name: "node9"}
	toRRs := bgpPeer("to-rrs", api.BGPPeerSpec{PeerSelector: "route-reflector == 'true'"})
	tor := bgpPeer("tor", api.BGPPeerSpec{PeerIP: "10.0.0.254", ASNumber: 65001, KeepOriginalNextHop: true,
		Password: &api.BGPPassword{SecretKeyRef: &api.SecretKeySelector{Name: "bgp", Key: "tor"}}})
	rackA := bgpPeer("rack-a", api.BGPPeerSpec{NodeSelector: "rack == 'a'", PeerIP: "10.0.0.253:1179", ASNumber: 65002})
	only2 := bgpPeer("only-node2", api.BGPPeerSpec{Node: "node2", PeerIP: "10.0.0.254", ASNumber: 65003})

	tests := []struct {
		name     string
		self     Self
		cfg      Config
		nodes    []NodeInfo
		peers    []*api.BGPPeer
		want     string
		problems int
	}{
		{
			name: "mesh: every other node with an address",
			self: selfOf(n1, 64512), cfg: cfg, nodes: []NodeInfo{n3, n1, n2, noAddr},
			want: "10.0.0.2:179 64512 node-to-node mesh node2 llgr\n10.0.0.3:179 64512 node-to-node mesh node3 llgr\n",
		},
		{
			name: "between nodes the lower address dials, the higher one waits",
			self: selfOf(n2, 64512), cfg: cfg, nodes: []NodeInfo{n3, n1, n2},
			want: "10.0.0.1:179 64512 node-to-node mesh node1 llgr passive\n10.0.0.3:179 64512 node-to-node mesh node3 llgr\n",
		},
		{
			name: "nodeMeshPassword on the mesh sessions only, not on a BGPPeer to a node or a reflector",
			self: selfOf(n1, 64512), cfg: meshPW, nodes: []NodeInfo{n1, n2, n3, r1},
			peers: []*api.BGPPeer{toRRs, bgpPeer("n3", api.BGPPeerSpec{PeerIP: "10.0.0.3", ASNumber: 64512})},
			want: "10.0.0.2:179 64512 node-to-node mesh node2 pw=bgp/mesh llgr\n10.0.0.3:0 64512 global BGPPeer n3 llgr\n" +
				"10.0.0.101:179 64512 route reflector rr1 llgr\n",
		},
		{
			name: "mesh off: nothing",
			self: selfOf(n1, 64512), cfg: noMesh, nodes: []NodeInfo{n1, n2, n3},
		},
		{
			name: "node with its own AS",
			self: selfOf(n1, 64512), cfg: cfg, nodes: []NodeInfo{n1, {Name: "node2", Addr: n2.Addr, ASN: 65099}},
			want: "10.0.0.2:179 65099 node-to-node mesh node2 llgr\n",
		},
		{
			name: "client peers only with the reflectors",
			self: selfOf(n1, 64512), cfg: noMesh, nodes: []NodeInfo{n1, n2, n3, r1, r2}, peers: []*api.BGPPeer{toRRs},
			want: "10.0.0.101:179 64512 route reflector rr1 llgr\n10.0.0.102:179 64512 route reflector rr2 llgr\n",
		},
		{
			name: "reflector: clients (symmetric peering) and the other reflector of its cluster",
			self: selfOf(r1, 64512), cfg: noMesh, nodes: []NodeInfo{n1, n2, r1, r2}, peers: []*api.BGPPeer{toRRs},
			want: "10.0.0.1:179 64512 route reflector node1 rr-client llgr passive\n10.0.0.2:179 64512 route reflector node2 rr-client llgr passive\n" +
				"10.0.0.102:179 64512 route reflector rr2 llgr\n",
		},
		{
			name: "reflectors are excluded from the mesh",
			self: selfOf(n1, 64512), cfg: cfg, nodes: []NodeInfo{n1, n2, r1},
			want: "10.0.0.2:179 64512 node-to-node mesh node2 llgr\n",
		},
		{
			name: "reflector with the mesh on meshes with no one",
			self: selfOf(r1, 64512), cfg: cfg, nodes: []NodeInfo{n1, n2, r1},
		},
		{
			name: "global peer, node selector, and a node-specific peer for another node",
			self: selfOf(n3, 64512), cfg: noMesh, nodes: []NodeInfo{n1, n2, n3}, peers: []*api.BGPPeer{tor, rackA, only2},
			want: "10.0.0.253:1179 65002 node specific BGPPeer rack-a\n10.0.0.254:0 65001 global BGPPeer tor pw=bgp/tor keep-nh\n",
		},
		{
			name: "node-specific wins over global for one address",
			self: selfOf(n2, 64512), cfg: noMesh, nodes: []NodeInfo{n1, n2, n3}, peers: []*api.BGPPeer{tor, rackA, only2},
			want: "10.0.0.254:0 65003 node specific BGPPeer only-node2\n",
		},
		{
			name: "explicit peer wins over the mesh",
			self: selfOf(n1, 64512), cfg: cfg, nodes: []NodeInfo{n1, n2},
			peers: []*api.BGPPeer{bgpPeer("n2", api.BGPPeerSpec{PeerIP: "10.0.0.2", ASNumber: 64512})},
			want:  "10.0.0.2:0 64512 global BGPPeer n2 llgr\n",
		},
		{
			name: "a peer at a node's address but another port is not that node's speaker",
			self: selfOf(n3, 64512), cfg: noMesh, nodes: []NodeInfo{n1, n2, n3},
			peers: []*api.BGPPeer{bgpPeer("n1", api.BGPPeerSpec{PeerIP: "10.0.0.1:1179", ASNumber: 64512}), bgpPeer("n2", api.BGPPeerSpec{PeerIP: "10.0.0.2:179", ASNumber: 64512})},
			want:  "10.0.0.1:1179 64512 global BGPPeer n1\n10.0.0.2:179 64512 global BGPPeer n2 llgr passive\n",
		},
		{
			name: "a peer at this node's own address is skipped",
			self: selfOf(n1, 64512), cfg: noMesh, nodes: []NodeInfo{n1},
			peers: []*api.BGPPeer{bgpPeer("self", api.BGPPeerSpec{PeerIP: "10.0.0.1", ASNumber: 64512})},
		},
		{
			name: "dual stack: a session per family both nodes have, each side dialing by its family's addresses",
			self: selfOf(dual(n2, "fd00::2"), 64512), cfg: cfg, nodes: []NodeInfo{n1, dual(n2, "fd00::2"), dual(n3, "fd00::3"), {Name: "v6only", Addr6: netip.MustParseAddr("fd00::1")}},
			want: "10.0.0.1:179 64512 node-to-node mesh node1 llgr passive\n10.0.0.3:179 64512 node-to-node mesh node3 llgr\n" +
				"fd00::1:179 64512 node-to-node mesh v6only llgr passive\nfd00::3:179 64512 node-to-node mesh node3 llgr\n",
		},
		{
			name: "an IPv4-only node has no IPv6 sessions",
			self: selfOf(n1, 64512), cfg: cfg, nodes: []NodeInfo{n1, dual(n2, "fd00::2")},
			want: "10.0.0.2:179 64512 node-to-node mesh node2 llgr\n",
		},
		{
			name: "dual stack reflectors: a client peers with both addresses of each",
			self: selfOf(dual(n1, "fd00::1"), 64512), cfg: noMesh, nodes: []NodeInfo{dual(n1, "fd00::1"), dual(r1, "fd00::101")}, peers: []*api.BGPPeer{toRRs},
			want: "10.0.0.101:179 64512 route reflector rr1 llgr\nfd00::101:179 64512 route reflector rr1 llgr\n",
		},
		{
			name: "a BGPPeer with an IPv6 peerIP, and one at a node's IPv6 address",
			self: selfOf(dual(n1, "fd00::1"), 64512), cfg: noMesh, nodes: []NodeInfo{dual(n1, "fd00::1"), dual(n2, "fd00::2")},
			peers: []*api.BGPPeer{bgpPeer("tor6", api.BGPPeerSpec{PeerIP: "fd00::fe", ASNumber: 65001}), bgpPeer("n2", api.BGPPeerSpec{PeerIP: "[fd00::2]:179", ASNumber: 64512})},
			want:  "fd00::2:179 64512 global BGPPeer n2 llgr\nfd00::fe:0 65001 global BGPPeer tor6\n",
		},
		{
			name: "an IPv6 peerIP on a node without an IPv6 address is a problem",
			self: selfOf(n1, 64512), cfg: noMesh, nodes: []NodeInfo{n1},
			peers:    []*api.BGPPeer{bgpPeer("tor6", api.BGPPeerSpec{PeerIP: "fd00::fe", ASNumber: 65001})},
			problems: 1,
		},
		{
			name: "bad selector is a problem, not a crash",
			self: selfOf(n1, 64512), cfg: noMesh, nodes: []NodeInfo{n1, n2},
			peers:    []*api.BGPPeer{bgpPeer("bad", api.BGPPeerSpec{PeerSelector: "a ==="})},
			problems: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := DesiredPeers(PeerInput{Self: tt.self, Config: tt.cfg, Nodes: tt.nodes, Peers: tt.peers})
			if d := describe(got); d != tt.want {
				t.Errorf("peers:\n%s\nwant:\n%s", d, tt.want)
			}
			if len(problems) != tt.problems {
				t.Errorf("problems %q, want %d", problems, tt.problems)
			}
		})
	}
}

// An unrelated change (a new node elsewhere, a label) leaves existing Peer values equal,
// so the speaker touches no established session.
func TestDesiredPeersStable(t *testing.T) {
	cfg := Config{ASN: 64512, ListenPort: 179, Mesh: true, MeshMaxRestart: 120 * time.Second}
	n1, n2, n3 := node("node1", "10.0.0.1", nil), node("node2", "10.0.0.2", nil), node("node3", "10.0.0.3", nil)
	before, _ := DesiredPeers(PeerInput{Self: selfOf(n1, 64512), Config: cfg, Nodes: []NodeInfo{n1, n2}})
	n2.Labels = map[string]string{"x": "y"}
	after, _ := DesiredPeers(PeerInput{Self: selfOf(n1, 64512), Config: cfg, Nodes: []NodeInfo{n1, n2, n3}})
	if len(after) != 2 || after[0] != before[0] {
		t.Errorf("before %v after %v", before, after)
	}
}

func TestConfigFrom(t *testing.T) {
	asn := api.ASNumber(65000)
	off := false
	def := &api.BGPConfiguration{Spec: api.BGPConfigurationSpec{ASNumber: &asn, NodeToNodeMeshEnabled: &off,
		ServiceClusterIPs:      []api.ServiceIPBlock{{CIDR: "10.96.0.0/12"}},
		ServiceExternalIPs:     []api.ServiceIPBlock{{CIDR: "bad"}, {CIDR: "198.51.100.0/24"}},
		ServiceLoadBalancerIPs: []api.ServiceIPBlock{{CIDR: "203.0.113.0/24"}, {CIDR: "fd00:113::/120"}}}}
	def.Name = "default"
	c, problems := ConfigFrom(def, nil)
	if c.ASN != 65000 || c.Mesh || c.ListenPort != 179 || len(problems) != 1 {
		t.Errorf("ConfigFrom: %+v %q", c, problems)
	}
	if got := fmt.Sprint(c.Services); got != "{[10.96.0.0/12] [198.51.100.0/24] [203.0.113.0/24 fd00:113::/120]}" {
		t.Errorf("Service CIDRs: %s", got)
	}
	if c, _ := ConfigFrom(nil, nil); c.ASN != 64512 || !c.Mesh || c.MeshMaxRestart != 120*time.Second || c.LogSeverity != "Info" {
		t.Errorf("defaults: %+v", c)
	}
	def.Spec.LogSeverityScreen = "Warning"
	node := &api.BGPConfiguration{Spec: api.BGPConfigurationSpec{LogSeverityScreen: "Debug"}}
	if c, _ := ConfigFrom(def, nil); c.LogSeverity != "Warning" {
		t.Errorf("logSeverityScreen from default: %q", c.LogSeverity)
	}
	if c, _ := ConfigFrom(def, node); c.LogSeverity != "Debug" {
		t.Errorf("logSeverityScreen from the node's override: %q", c.LogSeverity)
	}
}

// prefixAdvertisements resolve community names from the default object, take literal
// values, report unknown names (dropping only that entry), and a node's override
// replaces the default's entry for the same CIDR.
func TestConfigFromCommunities(t *testing.T) {
	def := &api.BGPConfiguration{Spec: api.BGPConfigurationSpec{
		Communities: []api.Community{{Name: "rack", Value: "65001:100"}, {Name: "big", Value: "4200000000:1:2"}},
		PrefixAdvertisements: []api.PrefixAdvertisement{
			{CIDR: "10.65.0.0/16", Communities: []string{"rack", "65001:300"}},
			{CIDR: "10.66.0.0/16", Communities: []string{"big", "rack", "rack"}},
			{CIDR: "10.67.0.0/16", Communities: []string{"nosuch"}},
			{CIDR: "10.68.0.0/16", Communities: []string{"rack"}},
		}}}
	def.Name = "default"
	node := &api.BGPConfiguration{Spec: api.BGPConfigurationSpec{PrefixAdvertisements: []api.PrefixAdvertisement{
		{CIDR: "10.68.0.0/16", Communities: []string{"big"}},
		{CIDR: "10.69.0.0/24", Communities: []string{"1:2:3"}},
	}}}
	node.Name = "node.node1"
	c, problems := ConfigFrom(def, node)
	var got []string
	for _, pc := range c.Communities {
		got = append(got, pc.CIDR.String()+" "+pc.Communities.String())
	}
	want := []string{
		"10.65.0.0/16 (65001,100) (65001,300)",
		"10.66.0.0/16 (65001,100) (4200000000,1,2)",
		"10.68.0.0/16 (4200000000,1,2)",
		"10.69.0.0/24 (1,2,3)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("communities:\n got %q\nwant %q", got, want)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], `"nosuch" is neither a name defined in communities nor a value`) ||
		!strings.Contains(problems[0], "BGPConfiguration default") {
		t.Errorf("problems: %q", problems)
	}
}

// nodeMeshMaxRestartTime and nodeMeshPassword reach the mesh sessions only; a BGPPeer's
// session keeps its own restart time and password.
func TestMeshSessionSettings(t *testing.T) {
	restart := api.Duration{Duration: 7 * time.Second}
	def := &api.BGPConfiguration{Spec: api.BGPConfigurationSpec{NodeMeshMaxRestartTime: &restart,
		NodeMeshPassword: &api.BGPPassword{SecretKeyRef: &api.SecretKeySelector{Name: "bgp", Key: "mesh"}}}}
	def.Name = "default"
	cfg, problems := ConfigFrom(def, nil)
	if len(problems) > 0 || cfg.MeshMaxRestart != 7*time.Second || cfg.MeshPassword != "bgp/mesh" {
		t.Fatalf("ConfigFrom: %+v %q", cfg, problems)
	}
	n1, n2 := node("node1", "10.0.0.1", nil), node("node2", "10.0.0.2", nil)
	tor := bgpPeer("tor", api.BGPPeerSpec{PeerIP: "10.0.0.254", ASNumber: 65001})
	peers, _ := DesiredPeers(PeerInput{Self: selfOf(n1, 64512), Config: cfg, Nodes: []NodeInfo{n1, n2}, Peers: []*api.BGPPeer{tor}})
	if len(peers) != 2 {
		t.Fatalf("peers: %+v", peers)
	}
	if p := peers[0]; p.Type != PeerMesh || p.RestartTime != 7*time.Second || p.Password != "bgp/mesh" {
		t.Errorf("mesh peer: %+v", p)
	}
	if p := peers[1]; p.Type != PeerGlobal || p.RestartTime != api.DefaultMaxRestartTime || p.Password != "" {
		t.Errorf("BGPPeer: %+v", p)
	}
}

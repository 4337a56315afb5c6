package agent

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/policy"
	"github.com/tabby-net/tabby/proxy"
)

func wep(ns, name, node, iface string, nets ...string) *api.WorkloadEndpoint {
	w := &api.WorkloadEndpoint{TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.VersionCalico}}
	w.Namespace, w.Name = ns, name
	w.Spec.Node, w.Spec.InterfaceName, w.Spec.IPNetworks = node, iface, nets
	return w
}

func testNode(name, addr string) *api.Node {
	n := &api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.VersionCalico}}
	n.Name = name
	n.Spec.BGP = &api.NodeBGPSpec{IPv4Address: addr}
	return n
}

func testPool(name, cidr string, vxlan api.EncapMode, nat bool) *api.IPPool {
	p := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.VersionCalico}}
	p.Name = name
	p.Spec.CIDR, p.Spec.VXLANMode, p.Spec.NATOutgoing = cidr, vxlan, nat
	return p
}

func mustView(t *testing.T, aff map[netip.Prefix]string, rs ...api.Resource) *snapshot.View {
	t.Helper()
	v, err := snapshot.NewView(aff, rs...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var (
	blockA = netip.MustParsePrefix("10.244.0.0/26")
	blockB = netip.MustParsePrefix("10.244.0.64/26")
	blockC = netip.MustParsePrefix("10.244.1.0/26")
)

func TestLocalState(t *testing.T) {
	v := mustView(t, map[netip.Prefix]string{blockB: "node1", blockA: "node1", blockC: "node2"},
		wep("shop", "web-2", "node1", "tabbyb", "10.244.0.2/32"),
		wep("shop", "web-1", "node1", "tabbya", "10.244.0.1/32", "fd00::1/128"),
		wep("shop", "db", "node2", "tabbyc", "10.244.1.1/32"),
		wep("shop", "broken", "node1", "", "10.244.0.3/32"),
	)
	state, bad := localState(v, "node1", false, nil)
	if want := []netip.Prefix{blockA, blockB}; !slices.Equal(state.Blocks, want) {
		t.Errorf("blocks = %v, want %v (only node1's, sorted)", state.Blocks, want)
	}
	var names []string
	for _, w := range state.Workloads {
		names = append(names, w.Name)
	}
	if want := []string{"shop/web-1", "shop/web-2"}; !slices.Equal(names, want) {
		t.Errorf("workloads = %v, want %v (node1's, key order, the broken one out)", names, want)
	}
	if len(bad) != 1 || !strings.Contains(bad[0], "shop/broken") || !strings.Contains(bad[0], "interfaceName") {
		t.Errorf("bad = %q, want shop/broken without an interfaceName", bad)
	}
	if !state.HoldLearned {
		t.Error("HoldLearned not set: want learned routes held until BGP syncs")
	}
	blocks, addrs := localRoutes(state)
	if len(blocks) != 2 || len(addrs) != 3 {
		t.Errorf("localRoutes = %v %v, want 2 blocks, 3 addresses", blocks, addrs)
	}
}

func TestBGPInputOnRouteReflector(t *testing.T) {
	v := mustView(t, map[netip.Prefix]string{blockA: "rr1"}, testNode("rr1", "172.31.1.9/24"),
		wep("shop", "web", "rr1", "tabbya", "10.244.0.1/32"))
	me, _, blocks, addrs := bgpInput(v, "rr1", RoleRouteReflector)
	if me == nil || me.Name != "rr1" {
		t.Fatalf("me = %v", me)
	}
	if len(blocks) != 0 || len(addrs) != 0 {
		t.Errorf("a route reflector originates %v %v, want nothing", blocks, addrs)
	}
	_, _, blocks, addrs = bgpInput(v, "rr1", RoleNode)
	if len(blocks) != 1 || len(addrs) != 1 {
		t.Errorf("a node originates %v %v, want its block and workload", blocks, addrs)
	}
}

func TestEncapInputAndNAT(t *testing.T) {
	v := mustView(t, map[netip.Prefix]string{blockA: "node1", blockC: "node2"},
		testNode("node1", "172.31.1.1/24"), testNode("node2", "172.31.2.1/24"),
		testPool("vx", "10.244.0.0/16", api.EncapAlways, true),
		testPool("bad", "not-a-cidr", api.EncapNever, true))
	in := encapInput(v, "node1")
	if len(in.Nodes) != 2 || in.Nodes[1].Addr != netip.MustParsePrefix("172.31.2.1/24") {
		t.Errorf("nodes = %+v", in.Nodes)
	}
	if len(in.Pools) != 1 || in.Pools[0].Name != "vx" {
		t.Errorf("pools = %+v, want only the pool whose CIDR parses", in.Pools)
	}
	e := felix.DesiredEncap(in)
	if !slices.Equal(e.VXLANPools, []string{"vx"}) {
		t.Errorf("VXLAN pools = %v", e.VXLANPools)
	}
	if nat := felix.RenderNATOutgoing(encapPools(v)); nat == nil || len(nat.Chains) == 0 {
		t.Errorf("natOutgoing state = %+v, want a chain for pool vx", nat)
	}
}

// An IPv6 VXLAN pool and the Nodes' IPv6 addresses and IPv6 VTEPs reach DesiredEncap.
func TestEncapInputV6(t *testing.T) {
	node1, node2 := testNode("node1", "172.31.1.1/24"), testNode("node2", "172.31.2.1/24")
	node1.Spec.BGP.IPv6Address, node2.Spec.BGP.IPv6Address = "fd00:172:31:1::1/64", "fd00:172:31:2::1/64"
	node2.Spec.IPv6VXLANTunnelAddr, node2.Spec.VXLANTunnelMACAddrV6 = "fd00:10:244::40", felix.VXLANMACV6("node2").String()
	block := netip.MustParsePrefix("fd00:10:244::40/122")
	v := mustView(t, map[netip.Prefix]string{block: "node2"}, node1, node2, testPool("vx6", "fd00:10:244::/64", api.EncapAlways, false))
	e := felix.DesiredEncap(encapInput(v, "node1"))
	if !slices.Equal(e.VXLANPoolsV6, []string{"vx6"}) || len(e.VXLANPeersV6) != 1 || e.VXLANPeersV6[0].Underlay != netip.MustParseAddr("fd00:172:31:2::1") {
		t.Errorf("IPv6 VXLAN pools %v, peers %+v", e.VXLANPoolsV6, e.VXLANPeersV6)
	}
	if len(e.Routes) != 1 || e.Routes[0].String() != "fd00:10:244::40/122 via fd00:10:244::40 dev vxlan-v6.tabby onlink" {
		t.Errorf("routes %v", e.Routes)
	}
}

func TestPolicyInputTakesEveryPolicyKind(t *testing.T) {
	gnp := &api.GlobalNetworkPolicy{TypeMeta: api.TypeMeta{Kind: "GlobalNetworkPolicy", APIVersion: api.VersionCalico}}
	gnp.Name = "deny"
	gnp.Spec.Selector = "all()"
	v := mustView(t, nil, gnp, wep("shop", "web", "node1", "tabbya", "10.244.0.1/32"), testNode("node1", "172.31.1.1/24"))
	kinds := make([]*api.Kind, len(policy.InputKinds))
	for i, p := range policy.InputKinds {
		kinds[i] = mustKind(p)
	}
	in := policyInput(v, kinds)
	if len(in.GlobalNetworkPolicies) != 1 || len(in.Endpoints) != 1 {
		t.Errorf("input = %d policies, %d endpoints; want 1 and 1", len(in.GlobalNetworkPolicies), len(in.Endpoints))
	}
}

func TestSnapshotKindsCoverEverySubsystem(t *testing.T) {
	var got []string
	for _, k := range snapshotKinds() {
		got = append(got, k.Plural)
	}
	for _, want := range append([]string{"nodes", "ippools", "bgppeers", "bgpconfigurations", "felixconfigurations", "services", "endpoints", "endpointslices"}, policy.InputKinds...) {
		if !slices.Contains(got, want) {
			t.Errorf("snapshot kinds %v lack %s", got, want)
		}
	}
	if len(got) != len(slices.Compact(slices.Sorted(slices.Values(got)))) {
		t.Errorf("snapshot kinds %v watch a kind twice", got)
	}
}

func TestReadiness(t *testing.T) {
	r := NewReadiness()
	if got := r.NotReady(); len(got) != 0 {
		t.Fatalf("empty registry: %v", got)
	}
	r.Set("routes", "routes: not yet")
	r.SetProblems("encap", "encap: no ipip")
	r.Check("policy", func() []string { return []string{"policy: not synced"} })
	want := []string{"routes: not yet", "policy: not synced", "bgp: later", "encap: no ipip"}
	if got := r.NotReady("bgp: later", ""); !slices.Equal(got, want) {
		t.Errorf("NotReady = %q, want %q", got, want)
	}
	r.Set("routes")
	r.SetProblems("encap")
	r.Check("policy", func() []string { return nil })
	if got := r.NotReady(); len(got) != 0 {
		t.Errorf("NotReady after every subsystem reported ready = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{NodeName: "n1", Role: RoleNode, StatusSocket: "/run/s.sock", Policy: PolicyConfig{EndpointToHostAction: "ACCEPT"}, ProxyMode: ProxyNFTables}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	ipt := good
	ipt.ProxyMode = ProxyIPTables
	if err := ipt.Validate(); err != nil {
		t.Errorf("--proxy-mode iptables refused: %v", err)
	}
	dns := good
	dns.DNS = DNSConfig{Enabled: true, Zone: "cluster.local", TTL: 5 * time.Second,
		Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("fd00:96::a")}}
	if err := dns.Validate(); err != nil {
		t.Errorf("DNS addresses of both families refused: %v", err)
	}
	for _, bad := range []string{"fe80::a", "::1", "ff02::fb", "::ffff:10.96.0.10", "fd00:96::a%lo"} {
		c := dns
		c.DNS.Addresses = []netip.Addr{netip.MustParseAddr(bad)}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--dns-addresses "+bad+":") {
			t.Errorf("--dns-addresses %s: Validate() = %v, want an error naming it", bad, err)
		}
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.NodeName = "" }, "--node-name"},
		{func(c *Config) { c.Role = "router" }, `--role "router"`},
		{func(c *Config) { c.Policy.EndpointToHostAction = "drop" }, "--default-endpoint-to-host-action"},
		{func(c *Config) { c.Role = RoleRouteReflector }, "a route reflector needs BGP"},
		{func(c *Config) { c.ProxyMode = "ipvs" }, `--proxy-mode "ipvs"`},
		{func(c *Config) { c.Policy.IptablesBackend = "nftables" }, `--iptables-backend "nftables"`},
		{func(c *Config) { c.Policy.ChainInsertMode = "prepend" }, `--chain-insert-mode "prepend"`},
		{func(c *Config) { c.VXLANMTU = 40 }, "--vxlan-mtu 40"},
		{func(c *Config) { c.IPIPMTU = 70000 }, "--ipip-mtu 70000"},
	} {
		c := good
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
		}
	}
}

func TestDNSData(t *testing.T) {
	web := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	web.Namespace, web.Name = "shop", "web"
	web.Spec.ClusterIP, web.Spec.Selector = "10.96.12.7", map[string]string{"app": "web"}
	web.Spec.Ports = []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: api.IntOrString{IntVal: 8080}}}
	db := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	db.Namespace, db.Name = "shop", "db"
	db.Spec.ClusterIP, db.Spec.Selector = api.ClusterIPNone, map[string]string{"app": "db"}
	ext := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	ext.Namespace, ext.Name = "shop", "ext"
	ext.Spec.Type, ext.Spec.ExternalName = api.ServiceTypeExternalName, "example.org"
	w1 := wep("shop", "web-1", "node1", "tabbya", "10.244.0.1/32")
	w1.Labels = map[string]string{"app": "web"}
	d1 := wep("shop", "db-1", "node2", "tabbyb", "10.244.1.1/32")
	d1.Labels = map[string]string{"app": "db"}
	other := wep("else", "db-1", "node2", "tabbyc", "10.244.1.2/32")
	other.Labels = map[string]string{"app": "db"}
	data := dnsData(serviceInputs(mustView(t, nil, web, db, ext, w1, d1, other)))
	if len(data.Services) != 3 {
		t.Fatalf("services = %+v, want 3", data.Services)
	}
	byName := map[string]int{}
	for i, s := range data.Services {
		byName[s.Name] = i
	}
	w, d, e := data.Services[byName["web"]], data.Services[byName["db"]], data.Services[byName["ext"]]
	if len(w.ClusterIPs) != 1 || w.ClusterIPs[0] != netip.MustParseAddr("10.96.12.7") || w.Headless || len(w.Endpoints) != 1 || w.Endpoints[0].Ports["http"] != 8080 {
		t.Errorf("web = %+v", w)
	}
	if !d.Headless || len(d.ClusterIPs) != 0 || len(d.Endpoints) != 1 || d.Endpoints[0].Addrs[0] != netip.MustParseAddr("10.244.1.1") {
		t.Errorf("db = %+v, want headless with shop's one endpoint", d)
	}
	if e.ExternalName != "example.org" || len(e.ClusterIPs) != 0 {
		t.Errorf("ext = %+v", e)
	}
}

func TestServiceInputsFromEndpointSlices(t *testing.T) {
	ext := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	ext.Namespace, ext.Name, ext.Spec.ClusterIP = "shop", "ext", "10.96.0.20"
	ext.Spec.Ports = []api.ServicePort{{Name: "dns", Protocol: "UDP", Port: 53}}
	slice := func(ns, name, service, addr string) *api.EndpointSlice {
		s := &api.EndpointSlice{TypeMeta: api.TypeMeta{Kind: "EndpointSlice", APIVersion: api.VersionDiscovery}, AddressType: api.AddressTypeIPv4}
		s.Namespace, s.Name, s.Labels = ns, name, map[string]string{api.LabelServiceName: service}
		s.Endpoints = []api.EndpointSliceEndpoint{{Addresses: []string{addr}}}
		s.Ports = []api.EndpointSlicePort{{Name: "dns", Protocol: "UDP", Port: 5353}}
		return s
	}
	eps := &api.Endpoints{TypeMeta: api.TypeMeta{Kind: "Endpoints", APIVersion: api.VersionCore}}
	eps.Namespace, eps.Name = "shop", "ext"
	eps.Subsets = []api.EndpointSubset{{Addresses: []api.EndpointAddress{{IP: "192.0.2.99"}}, Ports: []api.EndpointPort{{Name: "dns", Port: 53}}}}
	in := serviceInputs(mustView(t, nil, ext, eps, slice("shop", "ext-a", "ext", "192.0.2.1"), slice("shop", "ext-b", "ext", "192.0.2.2"),
		slice("shop", "web-a", "web", "192.0.2.3"), slice("else", "ext-a", "ext", "192.0.2.4")))
	if len(in) != 1 || len(in[0].Endpoints) != 2 || in[0].Endpoints[0].Addrs[0] != netip.MustParseAddr("192.0.2.1") ||
		in[0].Endpoints[1].Addrs[0] != netip.MustParseAddr("192.0.2.2") || in[0].Endpoints[1].Ports["dns"] != 5353 {
		t.Errorf("inputs = %+v, want the two slices of shop/ext", in)
	}
}

// TestServiceIndexCarriesOver checks that serviceIndex re-derives a Service's endpoints
// exactly when what they come from changed: the same Service and Endpoints objects keep
// their endpoints (the same slice), a new Endpoints object or any change to the
// WorkloadEndpoints (for a selector's Service) derives them afresh.
func TestServiceIndexCarriesOver(t *testing.T) {
	web := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	web.Namespace, web.Name = "shop", "web"
	web.Spec.ClusterIP, web.Spec.Selector = "10.96.12.7", map[string]string{"app": "web"}
	web.Spec.Ports = []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: api.IntOrString{IntVal: 8080}}}
	ext := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	ext.Namespace, ext.Name = "shop", "ext"
	ext.Spec.ClusterIP, ext.Spec.Ports = "10.96.12.8", []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80}}
	endpoints := func(ips ...string) *api.Endpoints {
		e := &api.Endpoints{TypeMeta: api.TypeMeta{Kind: "Endpoints", APIVersion: api.VersionCore}}
		e.Namespace, e.Name = "shop", "ext"
		sub := api.EndpointSubset{Ports: []api.EndpointPort{{Name: "http", Port: 80, Protocol: "TCP"}}}
		for _, ip := range ips {
			sub.Addresses = append(sub.Addresses, api.EndpointAddress{IP: ip})
		}
		e.Subsets = []api.EndpointSubset{sub}
		return e
	}
	labelled := func(w *api.WorkloadEndpoint) *api.WorkloadEndpoint {
		w.Labels = map[string]string{"app": "web"}
		return w
	}
	w1 := labelled(wep("shop", "web-1", "node1", "tabbya", "10.244.0.1/32"))
	w2 := labelled(wep("shop", "web-2", "node2", "tabbyb", "10.244.1.1/32"))
	eps1, eps2 := endpoints("192.0.2.1"), endpoints("192.0.2.1", "192.0.2.2")

	var x serviceIndex
	count := func(in []proxy.ServiceInput) map[string]int {
		out := map[string]int{}
		for _, s := range in {
			out[s.Service.Name] = len(s.Endpoints)
		}
		return out
	}
	first := x.inputs(mustView(t, nil, web, ext, w1, eps1))
	if got := count(first); got["web"] != 1 || got["ext"] != 1 {
		t.Fatalf("first view: endpoints per Service %v, want web 1, ext 1", got)
	}
	// A second workload: web's endpoints grow although web is the same object; ext's
	// are carried over.
	second := x.inputs(mustView(t, nil, web, ext, w1, w2, eps1))
	if got := count(second); got["web"] != 2 || got["ext"] != 1 {
		t.Errorf("a workload added: endpoints per Service %v, want web 2, ext 1", got)
	}
	if &second[0].Endpoints[0] != &first[0].Endpoints[0] || second[0].Service != ext {
		t.Errorf("ext's endpoints were derived again, though its Service and Endpoints are the same objects")
	}
	// A new Endpoints object for ext: derived again.
	third := x.inputs(mustView(t, nil, web, ext, w1, w2, eps2))
	if got := count(third); got["web"] != 2 || got["ext"] != 2 {
		t.Errorf("ext's Endpoints changed: endpoints per Service %v, want web 2, ext 2", got)
	}
	// And it matches a derivation from nothing.
	if fresh := serviceInputs(mustView(t, nil, web, ext, w1, w2, eps2)); !reflect.DeepEqual(fresh, third) {
		t.Errorf("carried over:\n%+v\nfrom nothing:\n%+v", third, fresh)
	}
	// A new selector Service in a namespace whose workloads did not change finds them.
	api2 := &api.Service{TypeMeta: web.TypeMeta, Spec: web.Spec}
	api2.Namespace, api2.Name = "shop", "api"
	fourth := x.inputs(mustView(t, nil, web, api2, ext, w1, w2, eps2))
	if got := count(fourth); got["api"] != 2 || got["web"] != 2 {
		t.Errorf("a Service added: endpoints per Service %v, want api 2, web 2", got)
	}
}

// TestTunnelGuard: the guard covers the tunnels an enabled pool uses (VXLAN over IPv6 for
// an IPv6 pool), with every Node's IPv4 and IPv6 addresses as peers.
func TestTunnelGuard(t *testing.T) {
	node2 := testNode("node2", "172.31.2.12/24")
	node2.Spec.BGP.IPv6Address = "fd00:172:31:2::12/64"
	nodes := []api.Resource{testNode("node1", "172.31.1.11/24"), node2}
	ipip := testPool("ipip", "10.244.0.0/16", api.EncapNever, false)
	ipip.Spec.IPIPMode = api.EncapCrossSubnet
	disabled := testPool("off", "10.245.0.0/16", api.EncapAlways, false)
	disabled.Spec.Disabled = true
	for _, tc := range []struct {
		name                string
		pools               []api.Resource
		ipip, vxlan, vxlan6 bool
	}{
		{"no encapsulation", []api.Resource{testPool("plain", "10.244.0.0/16", api.EncapNever, false)}, false, false, false},
		{"VXLAN", []api.Resource{testPool("vx", "10.244.0.0/16", api.EncapAlways, false)}, false, true, false},
		{"IPIP CrossSubnet", []api.Resource{ipip}, true, false, false},
		{"a disabled VXLAN pool", []api.Resource{disabled}, false, false, false},
		{"IPv6 VXLAN", []api.Resource{testPool("plain", "10.244.0.0/16", api.EncapNever, false), testPool("vx6", "fd00:10:244::/64", api.EncapCrossSubnet, false)}, false, false, true},
	} {
		g := tunnelGuard(mustView(t, nil, append(slices.Clone(nodes), tc.pools...)...))
		want := []netip.Addr{netip.MustParseAddr("172.31.1.11"), netip.MustParseAddr("172.31.2.12"), netip.MustParseAddr("fd00:172:31:2::12")}
		if g.IPIP != tc.ipip || g.VXLAN != tc.vxlan || g.VXLANV6 != tc.vxlan6 || !slices.Equal(g.Peers, want) {
			t.Errorf("%s: %+v, want IPIP %v, VXLAN %v, VXLAN over IPv6 %v, peers %v", tc.name, g, tc.ipip, tc.vxlan, tc.vxlan6, want)
		}
	}
}

// TestNamespaceNames: the cluster zone gets every Namespace of the view, Services or not.
func TestNamespaceNames(t *testing.T) {
	ns := func(name string) *api.Namespace {
		n := &api.Namespace{TypeMeta: api.TypeMeta{Kind: "Namespace", APIVersion: api.VersionCore}}
		n.Name = name
		return n
	}
	if got := namespaceNames(mustView(t, nil, ns("shop"), ns("empty"))); !slices.Equal(got, []string{"empty", "shop"}) {
		t.Errorf("namespaceNames = %v, want [empty shop]", got)
	}
}

package datastore

import (
	"net/netip"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tabby-net/tabby/api"
)

func TestServiceRange(t *testing.T) {
	for _, tc := range []struct {
		cidr  string
		size  uint64
		first string
		last  string
		out   []string // addresses outside the usable range
	}{
		{"10.96.0.0/30", 2, "10.96.0.1", "10.96.0.2", []string{"10.96.0.0", "10.96.0.3", "10.96.0.4", "fd00::1"}},
		{"10.96.0.0/12", 1<<20 - 2, "10.96.0.1", "10.111.255.254", []string{"10.95.255.255", "10.111.255.255"}},
		{"fd00:96::/120", 255, "fd00:96::1", "fd00:96::ff", []string{"fd00:96::", "fd00:96::100"}},
		{"fd00:96::/108", 1<<20 - 1, "fd00:96::1", "fd00:96::f:ffff", nil},
		{"fd00:96::/64", maxRangeSize, "fd00:96::1", "fd00:96:0:0:4000::", []string{"fd00:96:0:0:8000::"}},
		{"10.96.0.0/32", 0, "", "", []string{"10.96.0.0"}},
	} {
		p := netip.MustParsePrefix(tc.cidr)
		if got := rangeSize(p); got != tc.size {
			t.Errorf("%s: size %d, want %d", tc.cidr, got, tc.size)
			continue
		}
		if tc.size == 0 {
			continue
		}
		for off, want := range map[uint64]string{0: tc.first, tc.size - 1: tc.last} {
			a := rangeAddr(p, off)
			if a.String() != want {
				t.Errorf("%s: address %d is %s, want %s", tc.cidr, off, a, want)
			}
			if got, ok := rangeOffset(p, a); !ok || got != off {
				t.Errorf("%s: offset of %s = %d, %v; want %d", tc.cidr, a, got, ok, off)
			}
		}
		for _, s := range tc.out {
			if off, ok := rangeOffset(p, netip.MustParseAddr(s)); ok {
				t.Errorf("%s: %s is usable (offset %d), want outside", tc.cidr, s, off)
			}
		}
	}
}

func TestPickFree(t *testing.T) {
	taken := map[uint64]bool{}
	free := func(o uint64) bool { return !taken[o] }
	first := func(uint64) uint64 { return 0 }
	// The upper band first: offset 256 of a /12's 2^20-2.
	if o, ok := pickFree(1<<20-2, 0, first, free); !ok || o != 256 {
		t.Errorf("first pick in a /12: %d, %v; want 256", o, ok)
	}
	// A range of 40 keeps 16 for the lower band; once the upper is full, the lower is used.
	for o := uint64(16); o < 40; o++ {
		taken[o] = true
	}
	if o, ok := pickFree(40, 24, func(n uint64) uint64 { return n - 1 }, free); !ok || o != 0 {
		t.Errorf("pick with the upper band full: %d, %v; want 0", o, ok)
	}
	for o := range uint64(40) {
		taken[o] = true
	}
	if o, ok := pickFree(40, 40, first, free); ok {
		t.Errorf("pick in a full range gave %d", o)
	}
	// Smaller than a band: the whole range is one.
	if o, ok := pickFree(2, 0, func(uint64) uint64 { return 1 }, func(uint64) bool { return true }); !ok || o != 1 {
		t.Errorf("pick in a range of 2: %d, %v; want 1", o, ok)
	}
}

// allocFor runs the allocator as the hook does for one Service.
func allocFor(t *testing.T, a *serviceAllocator, old, svc *api.Service) error {
	t.Helper()
	owner := svc.Namespace + "/" + svc.Name
	a.release(owner)
	if err := a.normalize(old, svc); err != nil {
		return err
	}
	if err := a.claimExplicit(owner, svc); err != nil {
		return err
	}
	return a.allocate(owner, svc)
}

func newAllocator(cidrs ...string) *serviceAllocator {
	var cfg *api.BGPConfiguration
	if len(cidrs) > 0 {
		cfg = &api.BGPConfiguration{}
		for _, c := range cidrs {
			cfg.Spec.ServiceClusterIPs = append(cfg.Spec.ServiceClusterIPs, api.ServiceIPBlock{CIDR: c})
		}
	}
	return &serviceAllocator{
		ranges: serviceRangesFrom(cfg),
		claims: serviceClaims{ips: map[netip.Addr]string{}, ports: map[nodePort]string{}},
		rnd:    func(uint64) uint64 { return 0 },
	}
}

func svcFrom(t *testing.T, spec string) *api.Service {
	t.Helper()
	rs, err := api.Decode([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: "+spec+"\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	s := rs[0].(*api.Service)
	api.SetDefaults(s)
	return s
}

func addrsOf(s *api.Service) string {
	var ports []string
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			ports = append(ports, (nodePort{p.Protocol, p.NodePort}).String())
		}
	}
	fams := make([]string, len(s.Spec.IPFamilies))
	for i, f := range s.Spec.IPFamilies {
		fams[i] = string(f)
	}
	return strings.Join([]string{s.Spec.ClusterIP, strings.Join(s.Spec.ClusterIPs, ","), strings.Join(fams, ","),
		string(s.Spec.IPFamilyPolicy), strings.Join(ports, ",")}, " ")
}

// checkAllocated checks the outcome of allocFor: an error containing wantErr, or the
// addresses want (addrsOf) on a Service that validates.
func checkAllocated(t *testing.T, s *api.Service, err error, want, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("error %v, want one containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(s); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if err := api.Validate(s); err != nil {
		t.Errorf("the Service does not validate: %v", err)
	}
}

func TestServiceAllocate(t *testing.T) {
	const dual = "10.96.0.0/12,fd00:96::/108"
	for _, tc := range []struct {
		name, cidrs, spec string
		want, err         string
	}{
		{"default range", "", "{ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack ", ""},
		{"explicit", "", "{clusterIP: 10.96.0.10, ports: [{port: 53}]}",
			"10.96.0.10 10.96.0.10 IPv4 SingleStack ", ""},
		{"explicit clusterIPs only", "", "{clusterIPs: [10.96.0.10], ports: [{port: 53}]}",
			"10.96.0.10 10.96.0.10 IPv4 SingleStack ", ""},
		{"outside the range", "", "{clusterIP: 10.1.0.1, ports: [{port: 80}]}",
			"", "spec.clusterIP: 10.1.0.1 is not in the IPv4 service CIDRs (10.96.0.0/12; set in BGPConfiguration default spec.serviceClusterIPs)"},
		{"the network address", "", "{clusterIP: 10.96.0.0, ports: [{port: 80}]}", "", "10.96.0.0 is not in the IPv4 service CIDRs"},
		{"configured range", "10.100.0.0/24", "{ports: [{port: 80}]}",
			"10.100.0.17 10.100.0.17 IPv4 SingleStack ", ""},
		{"IPv6 on a single-stack cluster", "", "{ipFamilies: [IPv6], ports: [{port: 80}]}",
			"", "spec.ipFamilies[0]: IPv6, but the cluster has no IPv6 service CIDR (BGPConfiguration default spec.serviceClusterIPs: 10.96.0.0/12)"},
		{"RequireDualStack on a single-stack cluster", "", "{ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}",
			"", "spec.ipFamilyPolicy: RequireDualStack, but the cluster has IPv4 service CIDRs only"},
		{"PreferDualStack on a single-stack cluster", "", "{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1 IPv4 PreferDualStack ", ""},
		{"PreferDualStack", dual, "{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1,fd00:96::101 IPv4,IPv6 PreferDualStack ", ""},
		{"two families imply RequireDualStack", dual, "{ipFamilies: [IPv6, IPv4], ports: [{port: 80}]}",
			"fd00:96::101 fd00:96::101,10.96.1.1 IPv6,IPv4 RequireDualStack ", ""},
		{"IPv6 only on a dual-stack cluster", dual, "{ipFamilies: [IPv6], ports: [{port: 80}]}",
			"fd00:96::101 fd00:96::101 IPv6 SingleStack ", ""},
		{"IPv6 primary", "fd00:96::/108,10.96.0.0/12", "{ports: [{port: 80}]}",
			"fd00:96::101 fd00:96::101 IPv6 SingleStack ", ""},
		{"one explicit, one allocated", dual, "{clusterIPs: [fd00:96::10], ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}",
			"fd00:96::10 fd00:96::10,10.96.1.1 IPv6,IPv4 RequireDualStack ", ""},
		{"families against addresses", dual, "{clusterIPs: [fd00:96::10], ipFamilies: [IPv4], ports: [{port: 80}]}",
			"", "spec.ipFamilies[0]: IPv4 does not match spec.clusterIP fd00:96::10, which is IPv6"},
		{"SingleStack with two", dual, "{ipFamilyPolicy: SingleStack, ipFamilies: [IPv4, IPv6], ports: [{port: 80}]}",
			"", "spec.ipFamilyPolicy: SingleStack, but two IP families are given"},
		{"headless", "", "{clusterIP: None, selector: {app: web}}",
			"None None IPv4 SingleStack ", ""},
		{"headless without selector", dual, "{clusterIP: None}",
			"None None IPv4,IPv6 RequireDualStack ", ""},
		{"external name", "", "{type: ExternalName, externalName: example.com}", "    ", ""},
		{"external name with families", "", "{type: ExternalName, externalName: example.com, ipFamilies: [IPv4]}",
			"", "spec.ipFamilies: must be empty for type ExternalName"},
		{"node ports", "", "{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 443, nodePort: 30443}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack 30173/TCP,30443/TCP", ""},
		{"one port number, two protocols", "", "{type: LoadBalancer, ports: [{name: a, port: 53}, {name: b, port: 53, protocol: UDP}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack 30173/TCP,30173/UDP", ""},
		{"node port twice", "", "{type: NodePort, ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]}",
			"", "spec.ports[1].nodePort: 30080/TCP is used by another port of this Service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cidrs []string
			if tc.cidrs != "" {
				cidrs = strings.Split(tc.cidrs, ",")
			}
			s := svcFrom(t, tc.spec)
			err := allocFor(t, newAllocator(cidrs...), nil, s)
			checkAllocated(t, s, err, tc.want, tc.err)
		})
	}
}

func TestServiceUpdate(t *testing.T) {
	const dual = "fd00:96::/108"
	for _, tc := range []struct {
		name, cidr, old, new string
		want, err            string
	}{
		{"re-apply keeps", "", "{ports: [{port: 80}]}", "{ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack ", ""},
		{"clusterIP alone keeps clusterIPs", dual, "{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}", "{clusterIP: 10.96.1.1, ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1,fd00:96::101 IPv4,IPv6 PreferDualStack ", ""},
		{"change refused", "", "{ports: [{port: 80}]}", "{clusterIP: 10.96.0.7, ports: [{port: 80}]}",
			"", "spec.clusterIP: may not change once set (stored 10.96.1.1, given 10.96.0.7); delete the Service and create it again to change it"},
		{"headless to virtual refused", "", "{clusterIP: None, selector: {a: b}}", "{clusterIP: 10.96.0.7, ports: [{port: 80}]}",
			"", "may not change once set (stored None, given 10.96.0.7)"},
		{"upgrade to dual-stack", dual, "{ports: [{port: 80}]}", "{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1,fd00:96::101 IPv4,IPv6 PreferDualStack ", ""},
		{"downgrade to single-stack", dual, "{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}", "{ipFamilyPolicy: SingleStack, ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack ", ""},
		{"second address dropped without SingleStack", dual, "{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}", "{clusterIPs: [10.96.1.1], ports: [{port: 80}]}",
			"", "spec.clusterIPs: may drop its second address only with ipFamilyPolicy SingleStack"},
		{"to ExternalName and back", "", "{type: ExternalName, externalName: example.com}", "{ports: [{port: 80}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack ", ""},
		{"node ports kept by name", "", "{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81}]}",
			"{type: NodePort, ports: [{name: b, port: 81}, {name: a, port: 8080}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack 30174/TCP,30173/TCP", ""},
		{"a kept node port named by another port", "", "{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81}]}",
			"{type: NodePort, ports: [{name: a, port: 80}, {name: b, port: 81, nodePort: 30173}]}",
			"10.96.1.1 10.96.1.1 IPv4 SingleStack 30174/TCP,30173/TCP", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cidrs []string
			if tc.cidr != "" {
				cidrs = []string{"10.96.0.0/12", tc.cidr}
			}
			a := newAllocator(cidrs...)
			old := svcFrom(t, tc.old)
			if err := allocFor(t, a, nil, old); err != nil {
				t.Fatal(err)
			}
			s := svcFrom(t, tc.new)
			err := allocFor(t, a, old, s)
			checkAllocated(t, s, err, tc.want, tc.err)
		})
	}
}

func TestPlanServiceAddresses(t *testing.T) {
	kv := func(key, val string, rev int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte(key), Value: []byte(val), ModRevision: rev, CreateRevision: rev}
	}
	read := map[string][]*mvccpb.KeyValue{
		ServiceClusterIPsPrefix: {
			kv(ServiceClusterIPsPrefix+"10.96.0.10", "kube-system/kube-dns", 5),
			kv(ServiceClusterIPsPrefix+"10.96.0.20", "shop/old", 6),
			kv(ServiceClusterIPsPrefix+"junk", "x", 7),
		},
		ServiceNodePortsPrefix: {kv(ServiceNodePortsPrefix+"tcp/30080", "shop/old", 6)},
	}
	first := func(uint64) uint64 { return 0 }
	op := func(action Action, name, spec string) *hookOp {
		o := &hookOp{desc: action.String() + " services/shop/" + name, action: action, namespace: "shop", name: name}
		if spec != "" {
			s := svcFrom(t, spec)
			s.Name = name
			o.new = s
		}
		return o
	}

	_, _, err := planServiceAddresses([]*hookOp{op(OpCreate, "web", "{clusterIP: 10.96.0.10, ports: [{port: 80}]}")}, read, first)
	if want := "create services/shop/web: spec.clusterIP: 10.96.0.10 is already allocated to Service kube-system/kube-dns"; err == nil || err.Error() != want {
		t.Errorf("duplicate: %v\nwant %s", err, want)
	}
	_, _, err = planServiceAddresses([]*hookOp{op(OpCreate, "web", "{type: NodePort, ports: [{port: 80, nodePort: 30080}]}")}, read, first)
	if want := "create services/shop/web: spec.ports[0].nodePort: 30080/TCP is already allocated to Service shop/old"; err == nil || err.Error() != want {
		t.Errorf("duplicate node port: %v\nwant %s", err, want)
	}

	// One transaction deletes shop/old and gives its addresses to shop/web: the claims
	// change hands, compared against the revisions read; the new one is created.
	del := op(OpDelete, "old", "")
	web := op(OpCreate, "web", "{type: NodePort, clusterIP: 10.96.0.20, ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81}]}")
	cmps, writes, err := planServiceAddresses([]*hookOp{del, web}, read, first)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cmps {
		pc := c.GetCompare()
		got = append(got, string(pc.Key)+" "+pc.Target.String()+pc.Result.String())
	}
	for _, w := range writes {
		switch {
		case w.IsPut():
			got = append(got, "put "+string(w.KeyBytes())+"="+string(w.ValueBytes()))
		case w.IsDelete():
			got = append(got, "delete "+string(w.KeyBytes()))
		}
	}
	want := []string{
		ServiceClusterIPsPrefix + "10.96.0.20 MODEQUAL",
		ServiceNodePortsPrefix + "tcp/30080 MODEQUAL",
		ServiceNodePortsPrefix + "tcp/30173 CREATEEQUAL",
		"put " + ServiceClusterIPsPrefix + "10.96.0.20=shop/web",
		"put " + ServiceNodePortsPrefix + "tcp/30080=shop/web",
		"put " + ServiceNodePortsPrefix + "tcp/30173=shop/web",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("claims:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A delete alone releases; nothing else is touched.
	_, writes, err = planServiceAddresses([]*hookOp{op(OpDelete, "old", "")}, read, first)
	if err != nil || len(writes) != 2 || !writes[0].IsDelete() || !writes[1].IsDelete() {
		t.Errorf("delete: %v, writes %v", err, writes)
	}
}

// TestServiceHealthCheckNodePort checks that a LoadBalancer Service with
// externalTrafficPolicy Local gets a healthCheckNodePort from the node port range (TCP,
// unique beside its node ports), keeps it on update, and that no other Service gets one.
func TestServiceHealthCheckNodePort(t *testing.T) {
	a := newAllocator()
	const local = "{type: LoadBalancer, externalTrafficPolicy: Local, ports: [{name: a, port: 80, nodePort: 30173}]}"
	s := svcFrom(t, local)
	if err := allocFor(t, a, nil, s); err != nil {
		t.Fatal(err)
	}
	hc := s.Spec.HealthCheckNodePort
	if hc < api.NodePortMin || hc > api.NodePortMax || hc == 30173 {
		t.Fatalf("healthCheckNodePort %d, want one of the range beside the node port 30173", hc)
	}
	again := svcFrom(t, local)
	if err := allocFor(t, a, s, again); err != nil || again.Spec.HealthCheckNodePort != hc {
		t.Errorf("re-applied: healthCheckNodePort %d, %v; want %d kept", again.Spec.HealthCheckNodePort, err, hc)
	}
	if err := api.Validate(again); err != nil {
		t.Errorf("the Service does not validate: %v", err)
	}
	for _, spec := range []string{"{type: LoadBalancer, ports: [{port: 80}]}", "{type: NodePort, externalTrafficPolicy: Local, ports: [{port: 80}]}"} {
		s := svcFrom(t, spec)
		if err := allocFor(t, newAllocator(), nil, s); err != nil || s.Spec.HealthCheckNodePort != 0 {
			t.Errorf("%s: healthCheckNodePort %d, %v; want none", spec, s.Spec.HealthCheckNodePort, err)
		}
	}
	dup := svcFrom(t, "{type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 30090, ports: [{name: a, port: 80, nodePort: 30090}]}")
	if err := allocFor(t, newAllocator(), nil, dup); err == nil || !strings.Contains(err.Error(), "spec.healthCheckNodePort: 30090/TCP is used by a port of this Service") {
		t.Errorf("healthCheckNodePort equal to a node port: %v", err)
	}
	bad := svcFrom(t, "{type: NodePort, healthCheckNodePort: 30090, ports: [{port: 80}]}")
	if err := api.Validate(bad); err == nil || !strings.Contains(err.Error(), "only valid for type LoadBalancer with externalTrafficPolicy Local") {
		t.Errorf("healthCheckNodePort on a NodePort Service: %v", err)
	}
}

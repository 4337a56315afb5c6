package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"
)

func webPort(backends ...Backend) PortLB {
	return PortLB{Key: PortKey{"shop", "web", "http", "TCP", false}, Protocol: "TCP", Port: 80,
		Frontends: addrs("10.96.0.10"), Backends: backends}
}

func dnsPort(backends ...Backend) PortLB {
	return PortLB{Key: PortKey{"kube", "dns", "dns", "UDP", false}, Protocol: "UDP", Port: 53,
		Frontends: addrs("10.96.0.53"), Backends: backends}
}

// applyFake runs tx on fake, failing the test on an error (the fake checks that every
// chain, set and map a command names exists, as nft does).
func applyFake(t *testing.T, fake *knftables.Fake, tx *knftables.Transaction) {
	t.Helper()
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatalf("transaction failed: %v\n%s", err, tx)
	}
}

// fullDump is the fake's dump after a full plan of st on an empty table.
func fullDump(t *testing.T, st *LBState) string {
	fake := knftables.NewFake(knftables.IPv4Family, TableName)
	tx := fake.NewTransaction()
	Render(st, RenderConfig{}).PlanFull(tx, nil)
	applyFake(t, fake, tx)
	return fake.Dump()
}

func TestRenderRuleset(t *testing.T) {
	st := &LBState{Ports: []PortLB{
		func() PortLB {
			p := webPort(be("10.65.0.2", 8080), be("10.65.0.3", 8080), be("fd00::3", 8080))
			p.Affinity = 30 * time.Second
			p.Frontends = addrs("10.96.0.10", "192.0.2.7", "fd00:96::10")
			return p
		}(),
		dnsPort(),
	}}
	rs := Render(st, RenderConfig{})
	const (
		svc = "service-V6VNXBVG-shop/web/tcp/http"
		ep2 = "endpoint-M3XQRGBU-shop/web/tcp/http__10.65.0.2/8080"
		ep3 = "endpoint-YV6L6TGL-shop/web/tcp/http__10.65.0.3/8080"
	)
	want := map[string][]string{
		svc: {
			"ip saddr @affinity-Y5YXIBG5-shop/web/tcp/http__10.65.0.2/8080 goto " + ep2,
			"ip saddr @affinity-YS4ENNWR-shop/web/tcp/http__10.65.0.3/8080 goto " + ep3,
			"goto pick-2",
		},
		"pick-2": {"ip daddr . meta l4proto . th dport . numgen random mod 2 vmap @service-endpoints"},
		ep2: {
			"update @affinity-Y5YXIBG5-shop/web/tcp/http__10.65.0.2/8080 { ip saddr }",
			"meta l4proto tcp dnat to 10.65.0.2:8080",
		},
	}
	for name, rules := range want {
		if got := strings.Join(rs.Chains[name], "\n"); got != strings.Join(rules, "\n") {
			t.Errorf("chain %s:\n%s\nwant\n%s", name, got, strings.Join(rules, "\n"))
		}
	}
	wantElems := map[ElementKey]string{
		{MapServiceIPs, "10.96.0.10 . tcp . 80"}:           "goto " + svc,
		{MapServiceIPs, "192.0.2.7 . tcp . 80"}:            "goto " + svc,
		{MapServiceEndpoints, "10.96.0.10 . tcp . 80 . 0"}: "goto " + ep2,
		{MapServiceEndpoints, "10.96.0.10 . tcp . 80 . 1"}: "goto " + ep3,
		{MapServiceEndpoints, "192.0.2.7 . tcp . 80 . 0"}:  "goto " + ep2,
		{MapServiceEndpoints, "192.0.2.7 . tcp . 80 . 1"}:  "goto " + ep3,
		{MapNoEndpoints, "10.96.0.53 . udp . 53"}:          "goto " + ChainReject,
		{SetHairpin, "10.65.0.2 . 10.65.0.2"}:              "",
		{SetHairpin, "10.65.0.3 . 10.65.0.3"}:              "",
	}
	if len(rs.Elements) != len(wantElems) {
		t.Errorf("elements %v, want %v", rs.Elements, wantElems)
	}
	for k, v := range wantElems {
		if rs.Elements[k] != v {
			t.Errorf("element %v = %q, want %q", k, rs.Elements[k], v)
		}
	}
	if len(rs.Sets) != 2 || len(rs.Chains) != 5+4 {
		t.Errorf("%d sets and %d chains, want 2 and 9: %v", len(rs.Sets), len(rs.Chains), rs.Chains)
	}
	// The ip6 table holds the IPv6 frontend and its one IPv6 backend, and the DNS
	// Service, which has no IPv6 frontend, not at all.
	rs6 := Render(st, RenderConfig{IPv6: true})
	if len(rs6.Elements) != 3 || !strings.Contains(strings.Join(rs6.Chains[ChainServices], ""), "ip6 daddr") {
		t.Errorf("ip6 table: elements %v, services %v", rs6.Elements, rs6.Chains[ChainServices])
	}
	// A full plan of it runs on the fake, which checks every reference.
	_ = fullDump(t, st)
}

// TestPlanOneService checks the exact transaction for adding, changing and deleting one
// Service beside another, and that each leaves the table as a full plan would.
func TestPlanOneService(t *testing.T) {
	web := webPort(be("10.65.0.2", 8080))
	steps := []struct {
		name  string
		state *LBState
		want  string
	}{{
		name:  "add a Service (web, with one backend, has made dnat-1 already)",
		state: &LBState{Ports: []PortLB{dnsPort(be("10.65.0.53", 53)), web}},
		want: `add element ip tabby hairpin { 10.65.0.53 . 10.65.0.53 }
add element ip tabby service-dnat-udp { 10.96.0.53 . udp . 53 . 0 : 10.65.0.53 . 53 }
add element ip tabby service-ips { 10.96.0.53 . udp . 53 : goto dnat-1 }
`,
	}, {
		name:  "add an endpoint",
		state: &LBState{Ports: []PortLB{dnsPort(be("10.65.0.53", 53), be("10.65.0.54", 53)), web}},
		want: `add chain ip tabby dnat-2
add rule ip tabby dnat-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-tcp
add rule ip tabby dnat-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-udp
add rule ip tabby dnat-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-sctp
delete element ip tabby service-ips { 10.96.0.53 . udp . 53 }
add element ip tabby hairpin { 10.65.0.54 . 10.65.0.54 }
add element ip tabby service-dnat-udp { 10.96.0.53 . udp . 53 . 1 : 10.65.0.54 . 53 }
add element ip tabby service-ips { 10.96.0.53 . udp . 53 : goto dnat-2 }
`,
	}, {
		name:  "lose every endpoint: reject",
		state: &LBState{Ports: []PortLB{dnsPort(), web}},
		want: `delete element ip tabby hairpin { 10.65.0.53 . 10.65.0.53 }
delete element ip tabby hairpin { 10.65.0.54 . 10.65.0.54 }
delete element ip tabby service-dnat-udp { 10.96.0.53 . udp . 53 . 0 }
delete element ip tabby service-dnat-udp { 10.96.0.53 . udp . 53 . 1 }
delete element ip tabby service-ips { 10.96.0.53 . udp . 53 }
add element ip tabby no-endpoint-services { 10.96.0.53 . udp . 53 : goto reject-chain }
flush chain ip tabby dnat-2
delete chain ip tabby dnat-2
`,
	}, {
		name:  "delete the Service",
		state: &LBState{Ports: []PortLB{web}},
		want: `delete element ip tabby no-endpoint-services { 10.96.0.53 . udp . 53 }
`,
	}, {
		name:  "nothing changed",
		state: &LBState{Ports: []PortLB{web}},
		want:  ``,
	}}
	fake := knftables.NewFake(knftables.IPv4Family, TableName)
	last := Render(&LBState{Ports: []PortLB{web}}, RenderConfig{})
	tx := fake.NewTransaction()
	last.Plan(tx, nil)
	applyFake(t, fake, tx)
	for _, s := range steps {
		rs := Render(s.state, RenderConfig{})
		tx := fake.NewTransaction()
		rs.Plan(tx, last)
		if got := tx.String(); got != s.want {
			t.Errorf("%s: transaction\n%s\nwant\n%s", s.name, got, s.want)
		}
		applyFake(t, fake, tx)
		if got, want := fake.Dump(), fullDump(t, s.state); got != want {
			t.Errorf("%s: table after the plan\n%s\ndiffers from a full plan's\n%s", s.name, got, want)
		}
		last = rs
	}
}

// TestPlanFullRemovesLeftovers checks that a full plan deletes chains and sets of the
// table it does not want, and keeps the base chains.
func TestPlanFullRemovesLeftovers(t *testing.T) {
	fake := knftables.NewFake(knftables.IPv4Family, TableName)
	withAffinity := webPort(be("10.65.0.2", 8080))
	withAffinity.Affinity = time.Minute
	tx := fake.NewTransaction()
	Render(&LBState{Ports: []PortLB{withAffinity, dnsPort(be("10.65.0.53", 53))}}, RenderConfig{}).PlanFull(tx, nil)
	applyFake(t, fake, tx)
	tx = fake.NewTransaction()
	tx.Add(&knftables.Chain{Name: "stray"})
	applyFake(t, fake, tx)

	want := &LBState{Ports: []PortLB{webPort(be("10.65.0.3", 8080))}}
	existing, err := fake.ListAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tx = fake.NewTransaction()
	Render(want, RenderConfig{}).PlanFull(tx, existing)
	applyFake(t, fake, tx)
	if got, w := fake.Dump(), fullDump(t, want); got != w {
		t.Errorf("after a full plan:\n%s\nwant\n%s", got, w)
	}
}

// TestPlanChangeMatchesPlan replays random changes of a few Services and checks that
// PlanChange, which renders only the ports that differ, plans exactly what Plan of the
// whole rendered tables plans, and that Apply leaves the Ruleset a full Render gives.
func TestPlanChangeMatchesPlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func() *LBState {
		st := &LBState{}
		for i := range 6 {
			if rng.IntN(4) == 0 {
				continue // this Service does not exist now
			}
			p := PortLB{Key: PortKey{"ns", fmt.Sprintf("s%d", i), "http", "TCP", false}, Protocol: "TCP", Port: 80,
				Frontends: addrs(fmt.Sprintf("10.96.0.%d", i), fmt.Sprintf("fd00:96::%d", i))}
			if rng.IntN(3) == 0 {
				p.Affinity = time.Duration(1+rng.IntN(2)) * time.Minute
			}
			if rng.IntN(2) == 0 {
				p.NodePort, p.NodePortFamilies = uint16(30000+i), [2]bool{true, true}
			}
			p.ExternalLocal = rng.IntN(3) == 0
			if p.ExternalLocal {
				p.Key.External = true
			}
			for j := range 4 {
				if rng.IntN(2) == 0 {
					// Services 0, 2 and 4 share endpoint addresses, as do 1, 3
					// and 5: a hairpin element stays while one of them has it.
					p.Backends = append(p.Backends, be(fmt.Sprintf("10.65.%d.%d", i%2, j), 8080+uint16(i)))
					if p.ExternalLocal && j%2 == 0 {
						p.LocalBackends = append(p.LocalBackends, p.Backends[len(p.Backends)-1])
					}
				}
			}
			st.Ports = append(st.Ports, p)
		}
		return st
	}
	for _, v6 := range []bool{false, true} {
		c := RenderConfig{IPv6: v6, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/16"), netip.MustParsePrefix("fd00:65::/48")}}
		old := random()
		applied := Render(old, c)
		for step := range 200 {
			st := random()
			want := Render(st, c)
			fake := knftables.NewFake(want.Family, TableName)
			wantTx, gotTx := fake.NewTransaction(), fake.NewTransaction()
			want.Plan(wantTx, Render(old, c))
			ch := PlanChange(gotTx, applied, old, st, c)
			if gotTx.String() != wantTx.String() {
				t.Fatalf("v6 %v step %d: PlanChange\n%s\nPlan\n%s", v6, step, gotTx, wantTx)
			}
			ch.Apply(applied)
			if !reflect.DeepEqual(applied, want) {
				t.Fatalf("v6 %v step %d: applied after Apply\n%v\nwant\n%v", v6, step, applied, want)
			}
			old = st
		}
	}
}

// TestPlanNodePort checks the exact transaction that adds a NodePort Service of each
// externalTrafficPolicy, with pod CIDRs configured, and that a full plan of the result
// runs.
func TestPlanNodePort(t *testing.T) {
	c := RenderConfig{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/16"), netip.MustParsePrefix("10.65.1.0/24"), netip.MustParsePrefix("fd00::/64")}}
	const (
		np   = "nodeport-V6VNXBVG-shop/web/tcp/http"
		lext = "external-HQX3TJK2-shop/web/tcp/http/ext"
		lnp  = "nodeport-HQX3TJK2-shop/web/tcp/http/ext"
	)
	cluster := webPort(be("10.65.0.2", 8080))
	cluster.NodePort, cluster.NodePortFamilies = 30080, [2]bool{true, false}
	local := webPort()
	local.Key.External, local.Frontends = true, addrs("192.0.2.7")
	local.Backends = []Backend{be("10.65.0.2", 8080), be("10.65.1.3", 8080)}
	local.LocalBackends = []Backend{be("10.65.0.2", 8080)}
	local.NodePort, local.NodePortFamilies, local.ExternalLocal = 30081, [2]bool{true, false}, true
	noLocal := local
	noLocal.LocalBackends = nil
	steps := []struct {
		name  string
		state *LBState
		want  string
	}{{
		name:  "externalTrafficPolicy Cluster: every source masqueraded",
		state: &LBState{Ports: []PortLB{cluster}},
		want: `add chain ip tabby dnat-1
add chain ip tabby dnat-nodeport-1
add chain ip tabby ` + np + `
add rule ip tabby dnat-1 ip saddr != @pod-cidrs jump mark-for-masquerade
add rule ip tabby dnat-1 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @service-dnat-tcp
add rule ip tabby dnat-1 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @service-dnat-udp
add rule ip tabby dnat-1 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @service-dnat-sctp
add rule ip tabby dnat-nodeport-1 dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-dnat-tcp
add rule ip tabby dnat-nodeport-1 dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-dnat-udp
add rule ip tabby dnat-nodeport-1 dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-dnat-sctp
add rule ip tabby ` + np + ` jump mark-for-masquerade
add rule ip tabby ` + np + ` goto dnat-nodeport-1
add element ip tabby hairpin { 10.65.0.2 . 10.65.0.2 }
add element ip tabby nodeport-dnat-tcp { tcp . 30080 . 0 : 10.65.0.2 . 8080 }
add element ip tabby service-dnat-tcp { 10.96.0.10 . tcp . 80 . 0 : 10.65.0.2 . 8080 }
add element ip tabby service-ips { 10.96.0.10 . tcp . 80 : goto dnat-1 }
add element ip tabby service-nodeports { tcp . 30080 : goto ` + np + ` }
`,
	}, {
		name:  "externalTrafficPolicy Local: pods and the node to every endpoint, the rest to the local one",
		state: &LBState{Ports: []PortLB{cluster, local}},
		want: `add chain ip tabby dnat-2
add chain ip tabby dnat-nodeport-2
add chain ip tabby ` + lext + `
add chain ip tabby ` + lnp + `
add rule ip tabby dnat-2 ip saddr != @pod-cidrs jump mark-for-masquerade
add rule ip tabby dnat-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-tcp
add rule ip tabby dnat-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-udp
add rule ip tabby dnat-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-dnat-sctp
add rule ip tabby dnat-nodeport-2 dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-dnat-tcp
add rule ip tabby dnat-nodeport-2 dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-dnat-udp
add rule ip tabby dnat-nodeport-2 dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-dnat-sctp
add rule ip tabby ` + lext + ` ip saddr @pod-cidrs goto dnat-2
add rule ip tabby ` + lext + ` fib saddr type local jump mark-for-masquerade
add rule ip tabby ` + lext + ` fib saddr type local goto dnat-2
add rule ip tabby ` + lext + ` meta l4proto tcp dnat ip to numgen random mod 1 map { 0 : 10.65.0.2 . 8080 }
add rule ip tabby ` + lnp + ` ip saddr @pod-cidrs goto dnat-nodeport-2
add rule ip tabby ` + lnp + ` fib saddr type local jump mark-for-masquerade
add rule ip tabby ` + lnp + ` fib saddr type local goto dnat-nodeport-2
add rule ip tabby ` + lnp + ` meta l4proto tcp dnat ip to numgen random mod 1 map { 0 : 10.65.0.2 . 8080 }
add element ip tabby hairpin { 10.65.1.3 . 10.65.1.3 }
add element ip tabby nodeport-dnat-tcp { tcp . 30081 . 0 : 10.65.0.2 . 8080 }
add element ip tabby nodeport-dnat-tcp { tcp . 30081 . 1 : 10.65.1.3 . 8080 }
add element ip tabby service-dnat-tcp { 192.0.2.7 . tcp . 80 . 0 : 10.65.0.2 . 8080 }
add element ip tabby service-dnat-tcp { 192.0.2.7 . tcp . 80 . 1 : 10.65.1.3 . 8080 }
add element ip tabby service-ips { 192.0.2.7 . tcp . 80 : goto ` + lext + ` }
add element ip tabby service-nodeports { tcp . 30081 : goto ` + lnp + ` }
`,
	}, {
		name:  "externalTrafficPolicy Local without a local endpoint: dropped",
		state: &LBState{Ports: []PortLB{cluster, noLocal}},
		want: `flush chain ip tabby ` + lext + `
add rule ip tabby ` + lext + ` ip saddr @pod-cidrs goto dnat-2
add rule ip tabby ` + lext + ` fib saddr type local jump mark-for-masquerade
add rule ip tabby ` + lext + ` fib saddr type local goto dnat-2
add rule ip tabby ` + lext + ` drop
flush chain ip tabby ` + lnp + `
add rule ip tabby ` + lnp + ` ip saddr @pod-cidrs goto dnat-nodeport-2
add rule ip tabby ` + lnp + ` fib saddr type local jump mark-for-masquerade
add rule ip tabby ` + lnp + ` fib saddr type local goto dnat-nodeport-2
add rule ip tabby ` + lnp + ` drop
`,
	}}
	fake := knftables.NewFake(knftables.IPv4Family, TableName)
	last := Render(&LBState{}, c)
	tx := fake.NewTransaction()
	last.Plan(tx, nil)
	applyFake(t, fake, tx)
	if got := fake.Dump(); !strings.Contains(got, "add element ip tabby pod-cidrs { 10.65.0.0/16 }") || strings.Contains(got, "10.65.1.0/24") ||
		!strings.Contains(got, "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports") {
		t.Errorf("empty table: want the pod CIDR 10.65.0.0/16 only and the NodePort lookup:\n%s", got)
	}
	for _, s := range steps {
		rs := Render(s.state, c)
		tx := fake.NewTransaction()
		rs.Plan(tx, last)
		if got := tx.String(); got != s.want {
			t.Errorf("%s: transaction\n%s\nwant\n%s", s.name, got, s.want)
		}
		applyFake(t, fake, tx)
		last = rs
	}
}

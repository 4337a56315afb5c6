package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestDefaultPoolsConfig(t *testing.T) {
	v4 := func(cidr string, ipip, vxlan api.EncapMode) string {
		return fmt.Sprintf("%s %s ipip=%s vxlan=%s nat=true block=26", DefaultIPv4PoolName, cidr, ipip, vxlan)
	}
	for _, tc := range []struct {
		name string
		cfg  DefaultPoolsConfig
		want []string // pools, or the error's text
	}{
		{"Calico's defaults", DefaultPoolsConfig{IPv4CIDR: "192.168.0.0/16", IPv4VXLAN: "Never"},
			[]string{v4("192.168.0.0/16", api.EncapAlways, api.EncapNever)}},
		{"vxlan on makes ipip Never", DefaultPoolsConfig{IPv4CIDR: "10.244.0.0/16", IPv4VXLAN: "CrossSubnet"},
			[]string{v4("10.244.0.0/16", api.EncapNever, api.EncapCrossSubnet)}},
		{"modes in any case, off and cross-subnet as Calico", DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/8", IPv4IPIP: "cross-subnet", IPv4VXLAN: "off"},
			[]string{v4("10.0.0.0/8", api.EncapCrossSubnet, api.EncapNever)}},
		{"both Never", DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/8", IPv4IPIP: "NEVER", IPv4VXLAN: "never"},
			[]string{v4("10.0.0.0/8", api.EncapNever, api.EncapNever)}},
		{"IPv6 when given, no NAT as Calico", DefaultPoolsConfig{IPv4CIDR: "192.168.0.0/16", IPv6CIDR: "fd00:1::/48"},
			[]string{v4("192.168.0.0/16", api.EncapAlways, api.EncapNever), DefaultIPv6PoolName + " fd00:1::/48 ipip=Never vxlan=Never nat=false block=122"}},
		{"off", DefaultPoolsConfig{Off: true, IPv4CIDR: "bogus"}, nil},
		{"the zero value: none", DefaultPoolsConfig{}, nil},
		{"IPv6 only", DefaultPoolsConfig{IPv6CIDR: "fd00:1::/48"}, []string{DefaultIPv6PoolName + " fd00:1::/48"}},
		{"IPv6 with VXLAN, as CALICO_IPV6POOL_VXLAN", DefaultPoolsConfig{IPv6CIDR: "fd00:1::/48", IPv6VXLAN: "crosssubnet"},
			[]string{DefaultIPv6PoolName + " fd00:1::/48 ipip=Never vxlan=CrossSubnet nat=false block=122"}},
		{"bad IPv6 mode", DefaultPoolsConfig{IPv6CIDR: "fd00:1::/48", IPv6VXLAN: "sometimes"}, []string{`--default-ipv6-pool-vxlan "sometimes": want Always, CrossSubnet or Never`}},
		{"bad CIDR", DefaultPoolsConfig{IPv4CIDR: "192.168.0.1/16"}, []string{`--default-ipv4-pool-cidr "192.168.0.1/16"`}},
		{"IPv6 CIDR for IPv4", DefaultPoolsConfig{IPv4CIDR: "fd00::/48"}, []string{`--default-ipv4-pool-cidr "fd00::/48": want an IPv4 CIDR`}},
		{"IPv4 CIDR for IPv6", DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/8", IPv6CIDR: "10.1.0.0/16"}, []string{`--default-ipv6-pool-cidr "10.1.0.0/16": want an IPv6 CIDR`}},
		{"too small for a block", DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/28"}, []string{`--default-ipv4-pool-cidr "10.0.0.0/28": spec.`}},
		{"bad mode", DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/8", IPv4IPIP: "sometimes"}, []string{`--default-ipv4-pool-ipip "sometimes": want Always, CrossSubnet or Never`}},
		{"both on", DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/8", IPv4IPIP: "Always", IPv4VXLAN: "Always"}, []string{"--default-ipv4-pool-ipip Always and --default-ipv4-pool-vxlan Always"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pools, err := tc.cfg.Pools()
			var got []string
			if err != nil {
				got = []string{err.Error()}
			}
			for _, p := range pools {
				got = append(got, fmt.Sprintf("%s %s ipip=%s vxlan=%s nat=%t block=%d", p.Name, p.Spec.CIDR, p.Spec.IPIPMode, p.Spec.VXLANMode, p.Spec.NATOutgoing, p.Spec.BlockSize))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("got %q, want %q", got[i], tc.want[i])
				}
			}
		})
	}
}

func mustPools(t testing.TB, cfg DefaultPoolsConfig) []*api.IPPool {
	t.Helper()
	pools, err := cfg.Pools()
	if err != nil {
		t.Fatal(err)
	}
	return pools
}

func poolNames(t testing.TB, ds *datastore.Client) string {
	t.Helper()
	pools, _, err := datastore.ListAs[*api.IPPool](context.Background(), ds, "")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range pools {
		s = append(s, p.Name+"="+p.Spec.CIDR)
	}
	return strings.Join(s, ",")
}

// TestEnsureDefaultPools: a pool is created only while no pool of its IP version exists,
// whatever its name; an IPv6 pool does not stop the IPv4 one; the creation validates as
// any pool write does.
func TestEnsureDefaultPools(t *testing.T) {
	ds := datastoretest.Start(t)
	ctx := context.Background()
	both := mustPools(t, DefaultPoolsConfig{IPv4CIDR: "192.168.0.0/16", IPv4VXLAN: "Never", IPv6CIDR: "fd00:1::/48"})

	mine := testPool("mine-v6", "fd00:2::/48", api.EncapNever, false)
	if _, err := ds.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if err := ensureDefaultPools(ctx, ds, both, quiet); err != nil {
		t.Fatal(err)
	}
	if got, want := poolNames(t, ds), "default-ipv4-ippool=192.168.0.0/16,mine-v6=fd00:2::/48"; got != want {
		t.Errorf("with an IPv6 pool there: pools %s, want %s", got, want)
	}
	// A second agent (another CIDR) finds the IPv4 pool: nothing changes.
	other := mustPools(t, DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/8", IPv4VXLAN: "Never"})
	if err := ensureDefaultPools(ctx, ds, other, quiet); err != nil {
		t.Fatal(err)
	}
	if got, want := poolNames(t, ds), "default-ipv4-ippool=192.168.0.0/16,mine-v6=fd00:2::/48"; got != want {
		t.Errorf("second agent: pools %s, want %s", got, want)
	}
	// An operator's IPv4 pool of another name stops it too.
	if _, err := ds.Delete(ctx, kindIPPools, "", DefaultIPv4PoolName, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Create(ctx, testPool("mine-v4", "10.9.0.0/16", api.EncapNever, false)); err != nil {
		t.Fatal(err)
	}
	if err := ensureDefaultPools(ctx, ds, both, quiet); err != nil {
		t.Fatal(err)
	}
	if got, want := poolNames(t, ds), "mine-v4=10.9.0.0/16,mine-v6=fd00:2::/48"; got != want {
		t.Errorf("with operator pools: %s, want %s", got, want)
	}
	// The datastore's validation applies: a pool it refuses is an error that says so.
	bad := mustPools(t, DefaultPoolsConfig{IPv4CIDR: "10.0.0.0/8", IPv4VXLAN: "Never"})
	bad[0].Spec.NodeSelector = "not a selector ("
	if _, err := ds.Delete(ctx, kindIPPools, "", "mine-v4", ""); err != nil {
		t.Fatal(err)
	}
	err := ensureDefaultPools(ctx, ds, bad, quiet)
	if err == nil || !strings.Contains(err.Error(), "create the default IP pool") || !strings.Contains(err.Error(), "nodeSelector") {
		t.Errorf("invalid pool: %v", err)
	}
}

// TestDefaultPoolRace: agents starting together (each with its own client and its own
// CIDR), at offsets from none to 5 ms apart and overlapping, create exactly one IPv4 pool,
// with one agent's CIDR. With an operator creating a pool of their own at the same
// moment, a default pool exists only if it was created before the operator's: never once
// an IPv4 pool is there.
func TestDefaultPoolRace(t *testing.T) {
	e := datastoretest.StartEmbedded(t)
	const agents = 6
	clients := make([]*datastore.Client, agents+1)
	for i := range clients {
		clients[i] = datastoretest.Connect(t, e)
	}
	ds := clients[agents]
	ctx := context.Background()
	offsets := []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond}
	outcomes := map[string]int{}
	for round := range 4 * len(offsets) {
		step := offsets[round%len(offsets)]
		withOperator := round >= len(offsets)
		var wg sync.WaitGroup
		errs := make([]error, agents+1)
		start := time.Now().Add(10 * time.Millisecond)
		for i := range agents {
			pools := mustPools(t, DefaultPoolsConfig{IPv4CIDR: fmt.Sprintf("10.%d.0.0/16", 100+i), IPv4VXLAN: "Never"})
			at := start.Add(time.Duration(i%3) * step) // three waves: some start at once
			wg.Go(func() {
				time.Sleep(time.Until(at))
				errs[i] = ensureDefaultPools(ctx, clients[i], pools, quiet)
			})
		}
		if withOperator {
			// The operator comes before, among or after the waves.
			at := start.Add(time.Duration(round%3-1) * step)
			wg.Go(func() {
				time.Sleep(time.Until(at))
				_, errs[agents] = clients[agents].Create(ctx, testPool("operator", "172.16.0.0/16", api.EncapNever, false))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d (offset %v): writer %d: %v", round, step, i, err)
			}
		}
		pools, _, err := datastore.ListAs[*api.IPPool](ctx, ds, "")
		if err != nil {
			t.Fatal(err)
		}
		var def, op *api.IPPool
		for _, p := range pools {
			switch {
			case p.Name == DefaultIPv4PoolName && strings.HasPrefix(p.Spec.CIDR, "10.10"):
				def = p
			case p.Name == "operator" && withOperator:
				op = p
			default:
				t.Fatalf("round %d: unexpected pool %s=%s", round, p.Name, p.Spec.CIDR)
			}
		}
		switch {
		case !withOperator && def == nil:
			t.Fatalf("round %d (offset %v): no default pool", round, step)
		case withOperator && op == nil:
			t.Fatalf("round %d: the operator's pool is missing: %s", round, poolNames(t, ds))
		case op != nil && def != nil && rev(t, def) >= rev(t, op):
			t.Fatalf("round %d (offset %v): default pool created at revision %s, after the operator's pool (revision %s)",
				round, step, def.ResourceVersion, op.ResourceVersion)
		}
		outcome := "none"
		if def != nil {
			outcome = "default"
		}
		if op != nil {
			outcome += "+operator"
		}
		outcomes[outcome]++
		for _, p := range pools {
			if _, err := ds.Delete(ctx, kindIPPools, "", p.Name, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("outcomes: %v", outcomes)
}

func rev(t testing.TB, p *api.IPPool) int64 {
	t.Helper()
	r, err := strconv.ParseInt(p.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

package felix

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func wantStats(t *testing.T, what string, got Stats, added, replaced, deleted int, skipped ...string) {
	t.Helper()
	var gotSkipped []string
	for _, s := range got.Skipped {
		gotSkipped = append(gotSkipped, s.String())
	}
	if got.Added != added || got.Replaced != replaced || got.Deleted != deleted || !reflect.DeepEqual(gotSkipped, skipped) {
		t.Errorf("%s: added %d, replaced %d, deleted %d, skipped %q; want %d, %d, %d, %q",
			what, got.Added, got.Replaced, got.Deleted, gotSkipped, added, replaced, deleted, skipped)
	}
}

func wantLines(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

func TestRouteReconcilerKernel(t *testing.T) {
	ns := newTestNS(t)
	a, b := vethName(), vethName()
	ns.veth(t, a)
	ns.veth(t, b)
	// Another protocol's routes: one beside ours, one on a destination felix wants.
	ns.ip(t, "route", "add", "192.0.2.0/24", "dev", a, "proto", "static")
	ns.ip(t, "route", "add", "10.65.0.9/32", "dev", b, "proto", "static")
	static := []string{"10.65.0.9 dev " + b + " scope link", "192.0.2.0/24 dev " + a + " scope link"}

	state := LocalState{
		Workloads: []Workload{
			{Name: "ns/a", Interface: a, Addrs: addrs("10.65.0.5", "fd00::5")},
			{Name: "ns/b", Interface: b, Addrs: addrs("10.65.0.6", "10.65.0.9")},
		},
		Blocks: prefixes("10.65.0.0/26", "fd00::/122"),
	}
	desired, _ := DesiredRoutes(state)
	r := NewRouteReconciler(ns.h, 0, nil)
	st, err := r.Apply(desired)
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "from empty", st, 5, 0, 0, "10.65.0.9/32 dev "+b+": destination held by a route of another protocol")
	ours := []string{
		"10.65.0.5 dev " + a + " scope link",
		"10.65.0.6 dev " + b + " scope link",
		"blackhole 10.65.0.0/26",
		"blackhole fd00::/122 dev lo metric 1024 pref medium",
		"fd00::5 dev " + a + " metric 1024 pref medium",
	}
	wantLines(t, "routes of protocol 116", ns.routes(t, "proto", "116"), ours...)
	wantLines(t, "static routes", ns.routes(t, "proto", "static"), static...)

	st, err = r.Apply(desired)
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "again", st, 0, 0, 0, "10.65.0.9/32 dev "+b+": destination held by a route of another protocol")

	// An agent restart: a new reconciler and netlink handle over the same kernel.
	st, err = NewRouteReconciler(ns.newHandle(t), 0, nil).Apply(desired)
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "after a restart", st, 0, 0, 0, "10.65.0.9/32 dev "+b+": destination held by a route of another protocol")
	wantLines(t, "routes after a restart", ns.routes(t, "proto", "116"), ours...)

	// Workload b goes away, a moves to b's veth, c's veth does not exist yet, and the IPv6
	// block goes.
	state.Workloads = []Workload{
		{Name: "ns/a", Interface: b, Addrs: addrs("10.65.0.5", "fd00::5")},
		{Name: "ns/c", Interface: "tabbynotyet", Addrs: addrs("10.65.0.7")},
	}
	state.Blocks = prefixes("10.65.0.0/26")
	desired, _ = DesiredRoutes(state)
	st, err = r.Apply(desired)
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "changes", st, 0, 2, 2, "10.65.0.7/32 dev tabbynotyet: interface does not exist")
	wantLines(t, "routes after changes", ns.routes(t, "proto", "116"),
		"10.65.0.5 dev "+b+" scope link",
		"blackhole 10.65.0.0/26",
		"fd00::5 dev "+b+" metric 1024 pref medium",
	)
	wantLines(t, "static routes after changes", ns.routes(t, "proto", "static"), static...)

	// A down interface loses its routes in the kernel; felix reports it rather than fail.
	ns.ip(t, "link", "set", b, "down")
	st, err = r.Apply(desired)
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "interface down", st, 0, 0, 0,
		"10.65.0.5/32 dev "+b+": interface is down",
		"10.65.0.7/32 dev tabbynotyet: interface does not exist",
		"fd00::5/128 dev "+b+": interface is down")

	st, err = r.Apply(nil)
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "nothing desired", st, 0, 0, 1)
	wantLines(t, "routes when nothing is desired", ns.routes(t, "proto", "116"))
	// The kernel itself removed the static route through the downed interface.
	wantLines(t, "static routes at the end", ns.routes(t, "proto", "static"), static[1])
}

// A route of felix's protocol that felix would not write (a gateway, another metric) is
// fixed or removed.
func TestRouteReconcilerOddRoutes(t *testing.T) {
	ns := newTestNS(t)
	a := vethName()
	ns.veth(t, a)
	ns.ip(t, "addr", "add", "10.0.0.1/24", "dev", a)
	ns.ip(t, "route", "add", "10.65.0.5/32", "via", "10.0.0.2", "proto", "116")
	ns.ip(t, "route", "add", "10.65.0.6/32", "dev", a, "metric", "5", "proto", "116")
	ns.ip(t, "route", "add", "unreachable", "10.65.1.0/26", "proto", "116")

	st, err := NewRouteReconciler(ns.h, 0, nil).Apply([]Route{dev("10.65.0.5/32", a), dev("10.65.0.6/32", a)})
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "odd routes", st, 1, 1, 2)
	wantLines(t, "routes", ns.routes(t, "proto", "116"),
		"10.65.0.5 dev "+a+" scope link",
		"10.65.0.6 dev "+a+" scope link",
	)
}

// Routes go to the configured table only, and felix leaves other tables alone.
func TestRouteReconcilerTable(t *testing.T) {
	ns := newTestNS(t)
	a := vethName()
	ns.veth(t, a)
	ns.ip(t, "route", "add", "blackhole", "10.65.9.0/26", "proto", "116") // main: not this reconciler's

	r := NewRouteReconciler(ns.h, 1000, nil)
	st, err := r.Apply([]Route{dev("10.65.0.5/32", a)})
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, "table 1000", st, 1, 0, 0)
	// IPv4 only: `ip -6 route show table 1000` fails while the table has no IPv6 route.
	wantLines(t, "table 1000", strings.Fields(ns.ip(t, "-4", "route", "show", "table", "1000", "proto", "116")),
		strings.Fields("10.65.0.5 dev "+a+" scope link")...)
	wantLines(t, "main", ns.routes(t, "proto", "116"), "blackhole 10.65.9.0/26")

	if st, err = r.Apply(nil); err != nil {
		t.Fatal(err)
	}
	wantStats(t, "table 1000 emptied", st, 0, 0, 1)
	wantLines(t, "main after", ns.routes(t, "proto", "116"), "blackhole 10.65.9.0/26")
}

// An IPv6 block routed natively via a node's address turns into one through a tunnel
// device, onlink via the block's own first address (a VTEP, as VXLAN CrossSubnet to
// Always does), and back: IPv6 refuses that replace (EINVAL), so the reconciler deletes
// the old route and adds the new one.
func TestRouteReconcilerOnLinkIPv6Replace(t *testing.T) {
	ns := newTestNS(t)
	eth, tun := vethName(), vethName()
	ns.veth(t, eth)
	ns.veth(t, tun)
	ns.ip(t, "addr", "add", "fd00:172:31:1::10/64", "dev", eth, "nodad")
	native := Route{Dst: netip.MustParsePrefix("fd00:10:244::80/122"), Type: RouteGateway, Gateway: netip.MustParseAddr("fd00:172:31:1::12")}
	tunnelled := Route{Dst: native.Dst, Type: RouteGateway, Interface: tun, Gateway: netip.MustParseAddr("fd00:10:244::80"), OnLink: true}
	r := NewRouteReconciler(ns.h, 0, nil)
	for _, step := range []struct {
		route       Route
		added, repl int
		want        string
	}{
		{native, 1, 0, "fd00:10:244::80/122 via fd00:172:31:1::12 dev " + eth + " metric 1024 pref medium"},
		{tunnelled, 0, 1, "fd00:10:244::80/122 via fd00:10:244::80 dev " + tun + " metric 1024 onlink pref medium"},
		{native, 0, 1, "fd00:10:244::80/122 via fd00:172:31:1::12 dev " + eth + " metric 1024 pref medium"},
	} {
		st, err := r.Apply([]Route{step.route})
		if err != nil {
			t.Fatalf("%s: %v", step.route, err)
		}
		wantStats(t, step.route.String(), st, step.added, step.repl, 0)
		wantLines(t, "routes after "+step.route.String(), ns.routes(t, "proto", "116"), step.want)
	}
}

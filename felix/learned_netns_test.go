package felix

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Learned routes handed over as changes are written one by one, without a full pass (the
// periodic one is an hour away): added, re-pointed, withdrawn and added again; a learned
// route changed or deleted by hand is repaired (the netlink event wakes a full pass); a
// local route wins over a learned one; with HoldLearned a withdrawal waits for the sync.
func TestDataplaneLearnChanges(t *testing.T) {
	ns := newTestNS(t)
	up := vethName()
	ns.veth(t, up)
	ns.ip(t, "addr", "add", "172.31.9.1/24", "dev", up)
	d := startDataplane(t, ns, time.Hour)
	d.Update(LocalState{Blocks: prefixes("10.65.0.0/26")})
	waitRoutes(t, ns, "the block", "blackhole 10.65.0.0/26")
	full := d.Status().Passes

	gw := func(dst, via string) Route {
		return Route{Dst: netip.MustParsePrefix(dst), Type: RouteGateway, Gateway: netip.MustParseAddr(via)}
	}
	line := func(dst, via string) string { return dst + " via " + via + " dev " + up }
	d.Learn([]Route{gw("10.65.1.0/26", "172.31.9.2"), gw("10.65.2.0/26", "172.31.9.3"), gw("10.65.0.0/26", "172.31.9.3")}, nil)
	waitRoutes(t, ns, "learned routes added (the block's blackhole wins over a learned route)",
		line("10.65.1.0/26", "172.31.9.2"), line("10.65.2.0/26", "172.31.9.3"), "blackhole 10.65.0.0/26")

	d.Learn([]Route{gw("10.65.1.0/26", "172.31.9.4")}, prefixes("10.65.2.0/26"))
	waitRoutes(t, ns, "one re-pointed, one withdrawn", line("10.65.1.0/26", "172.31.9.4"), "blackhole 10.65.0.0/26")
	d.Learn([]Route{gw("10.65.2.0/26", "172.31.9.5")}, nil)
	waitRoutes(t, ns, "added again", line("10.65.1.0/26", "172.31.9.4"), line("10.65.2.0/26", "172.31.9.5"), "blackhole 10.65.0.0/26")
	if st := d.Status(); st.Stats.Added != 1 || st.Routes != 3 {
		t.Errorf("status after the last change: %+v, want a pass that added one route, 3 routes", st)
	}
	// By hand: a learned route re-pointed, another deleted. Both come back.
	ns.ip(t, "route", "replace", "10.65.1.0/26", "via", "172.31.9.9", "proto", "116")
	ns.ip(t, "route", "del", "10.65.2.0/26")
	waitRoutes(t, ns, "repaired after changes by hand", line("10.65.1.0/26", "172.31.9.4"), line("10.65.2.0/26", "172.31.9.5"), "blackhole 10.65.0.0/26")

	// Held until BGP syncs: a withdrawal leaves the route; the sync's Update removes it.
	d.Update(LocalState{Blocks: prefixes("10.65.0.0/26"), HoldLearned: true})
	d.Learn(nil, prefixes("10.65.2.0/26"))
	d.Learn([]Route{gw("10.65.3.0/26", "172.31.9.6")}, nil)
	waitRoutes(t, ns, "withdrawal held", line("10.65.1.0/26", "172.31.9.4"), line("10.65.2.0/26", "172.31.9.5"),
		line("10.65.3.0/26", "172.31.9.6"), "blackhole 10.65.0.0/26")
	d.Update(LocalState{Blocks: prefixes("10.65.0.0/26")})
	waitRoutes(t, ns, "withdrawn once synced", line("10.65.1.0/26", "172.31.9.4"), line("10.65.3.0/26", "172.31.9.6"), "blackhole 10.65.0.0/26")
	if d.Status().Passes <= full {
		t.Error("no pass counted")
	}
}

// A learned destination held by another protocol's route is left alone by Learn's
// passes, and taken once that route goes.
func TestDataplaneLearnLeavesOthersRoutes(t *testing.T) {
	ns := newTestNS(t)
	up := vethName()
	ns.veth(t, up)
	ns.ip(t, "addr", "add", "172.31.9.1/24", "dev", up)
	ns.ip(t, "route", "add", "10.65.7.0/26", "via", "172.31.9.7", "proto", "bird")
	d := startDataplane(t, ns, time.Hour)
	d.Update(LocalState{})
	waitPass(t, d, 0)
	r := Route{Dst: netip.MustParsePrefix("10.65.7.0/26"), Type: RouteGateway, Gateway: netip.MustParseAddr("172.31.9.2")}
	for i := range 3 { // added, then re-pointed twice: never a replace of BIRD's route
		r.Gateway = netip.MustParseAddr(fmt.Sprintf("172.31.9.%d", 2+i))
		passes := d.Status().Passes
		d.Learn([]Route{r}, nil)
		waitPass(t, d, passes)
		if got := strings.TrimSpace(ns.ip(t, "route", "show", "10.65.7.0/26")); got != "10.65.7.0/26 via 172.31.9.7 dev "+up+" proto bird" {
			t.Fatalf("after Learn %d: %q, want BIRD's route alone", i, got)
		}
	}
	ns.ip(t, "route", "del", "10.65.7.0/26", "proto", "bird")
	waitRoutes(t, ns, "taken once BIRD's route went", "10.65.7.0/26 via 172.31.9.4 dev "+up)
}

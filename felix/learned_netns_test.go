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

// While learned routes keep coming, the periodic full pass waits for them, but not for
// ever: a stream of Learn calls that never pauses still sees full passes, every streamed
// route is written, and the periodic passes go on once the stream stops. BGP's sync
// during the stream releases a previous run's held route.
func TestDataplaneFullPassWaitsForLearning(t *testing.T) {
	ns := newTestNS(t)
	up := vethName()
	ns.veth(t, up)
	ns.ip(t, "addr", "add", "172.31.9.1/24", "dev", up)
	ns.ip(t, "route", "add", "10.67.0.0/26", "via", "172.31.9.7", "proto", "116") // a previous run's
	const interval = 200 * time.Millisecond
	d := startDataplane(t, ns, interval)
	d.Update(LocalState{Blocks: prefixes("10.65.0.0/26"), HoldLearned: true})
	waitRoutes(t, ns, "the block, the previous run's route held", "10.67.0.0/26 via 172.31.9.7 dev "+up, "blackhole 10.65.0.0/26")

	stop, done := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 66, byte(n >> 8), byte(n)}), 32)
			d.Learn([]Route{{Dst: dst, Type: RouteGateway, Gateway: netip.MustParseAddr("172.31.9.2")}}, nil)
			n++
			time.Sleep(10 * time.Millisecond) // the stream's pace, not a wait
		}
	}()
	start := d.Status().Dumps
	eventually(t, 10*time.Second, "a full pass while learned routes keep coming", func() (bool, string) {
		st := d.Status()
		return st.Dumps > start+1, fmt.Sprintf("%d full passes since the stream started", st.Dumps-start)
	})
	d.Update(LocalState{Blocks: prefixes("10.65.0.0/26")})
	eventually(t, 10*time.Second, "the held route released while learned routes keep coming", func() (bool, string) {
		for _, l := range ns.routes(t, "proto", "116") {
			if strings.HasPrefix(l, "10.67.0.0/26") {
				return false, l
			}
		}
		return true, ""
	})
	close(stop)
	n := <-done
	eventually(t, 10*time.Second, "every streamed route written", func() (bool, string) {
		got := len(ns.routes(t, "proto", "116"))
		return got == n+1, fmt.Sprintf("%d routes of %d", got, n+1)
	})
	after := d.Status().Dumps
	eventually(t, 10*time.Second, "full passes go on after the stream", func() (bool, string) {
		st := d.Status()
		return st.Dumps > after+1, fmt.Sprintf("%d full passes since the stream stopped", st.Dumps-after)
	})
}

// Learned routes go to the kernel routeBatchSize requests to a message, each with its own
// outcome: in a Learn of more than two batches, a destination held by another protocol is
// skipped and the others written (IPv4 and IPv6); one deleted by hand comes back; a
// withdrawal of them all deletes every one and leaves the other protocol's route.
func TestDataplaneLearnBatches(t *testing.T) {
	ns := newTestNS(t)
	up := vethName()
	ns.veth(t, up)
	ns.ip(t, "addr", "add", "172.31.9.1/24", "dev", up)
	ns.ip(t, "-6", "addr", "add", "fd00:9::1/64", "dev", up, "nodad")
	ns.ip(t, "route", "add", "10.66.1.45/32", "via", "172.31.9.7", "proto", "bird")
	d := startDataplane(t, ns, time.Hour)
	d.Update(LocalState{})
	waitPass(t, d, 0)
	const n = 2*routeBatchSize + 100
	var routes []Route
	var dsts []netip.Prefix
	for i := range n {
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 66, byte(i >> 8), byte(i)}), 32)
		gw := netip.MustParseAddr("172.31.9.2")
		if i%10 == 0 {
			dst = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x66, 14: byte(i >> 8), 15: byte(i)}), 128)
			gw = netip.MustParseAddr("fd00:9::2")
		}
		routes = append(routes, Route{Dst: dst, Type: RouteGateway, Gateway: gw})
		dsts = append(dsts, dst)
	}
	passes := d.Status().Passes
	d.Learn(routes, nil)
	waitPass(t, d, passes)
	count := func() int { return len(ns.routes(t, "proto", "116")) }
	if got := count(); got != n-1 {
		t.Fatalf("%d routes of protocol 116 after learning %d, one held by BIRD: want %d", got, n, n-1)
	}
	if got := strings.TrimSpace(ns.ip(t, "route", "show", "10.66.1.45/32")); !strings.Contains(got, "proto bird") {
		t.Errorf("BIRD's route: %q, want it kept", got)
	}
	if st := d.Status(); st.Stats.Added != n-1 || len(st.Stats.Skipped) != 1 || st.Stats.Skipped[0].Reason != heldByOther {
		t.Errorf("status: added %d, skipped %v; want %d added, one held by another protocol", st.Stats.Added, st.Stats.Skipped, n-1)
	}
	ns.ip(t, "route", "del", "10.66.0.5/32", "proto", "116")
	eventually(t, 5*time.Second, "the route deleted by hand is back", func() (bool, string) {
		return count() == n-1, fmt.Sprint(count())
	})
	passes = d.Status().Passes
	d.Learn(nil, dsts)
	waitPass(t, d, passes)
	eventually(t, 5*time.Second, "every learned route withdrawn", func() (bool, string) {
		return count() == 0, fmt.Sprint(count(), " left")
	})
	if got := strings.TrimSpace(ns.ip(t, "route", "show", "10.66.1.45/32")); !strings.Contains(got, "proto bird") {
		t.Errorf("BIRD's route after the withdrawal: %q, want it kept", got)
	}
}

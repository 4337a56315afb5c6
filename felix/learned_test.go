package felix

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func via(dst, gw, iface string, onlink bool) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Type: RouteGateway, Gateway: netip.MustParseAddr(gw), Interface: iface, OnLink: onlink}
}

func TestDesiredRoutesLearned(t *testing.T) {
	s := LocalState{
		Workloads: []Workload{{Name: "a/w", Interface: "tabbya", Addrs: []netip.Addr{netip.MustParseAddr("10.65.0.5")}}},
		Blocks:    []netip.Prefix{netip.MustParsePrefix("10.65.0.0/26")},
		Learned: []Route{
			via("10.65.1.0/26", "172.31.1.11", "", false),
			via("10.65.0.0/26", "172.31.1.12", "", false),                    // our own block: the blackhole wins
			via("10.65.0.5/32", "172.31.1.12", "", false),                    // our own workload wins
			via("10.65.0.9/32", "172.31.1.12", "", false),                    // a borrowed address inside our block
			{Dst: netip.MustParsePrefix("10.65.2.0/26"), Type: RouteGateway}, // no gateway
			via("10.65.1.0/26", "172.31.1.13", "", false),                    // duplicate: the first wins
		},
	}
	got, _ := DesiredRoutes(s)
	want := []Route{
		blackhole("10.65.0.0/26"),
		dev("10.65.0.5/32", "tabbya"),
		via("10.65.0.9/32", "172.31.1.12", "", false),
		via("10.65.1.0/26", "172.31.1.11", "", false),
	}
	if !slices.Equal(got, want) {
		t.Errorf("DesiredRoutes:\n got %v\nwant %v", got, want)
	}
	if s := via("10.65.1.0/26", "10.0.0.1", "eth0", true).String(); s != "10.65.1.0/26 via 10.0.0.1 dev eth0 onlink" {
		t.Errorf("String: %s", s)
	}
}

func TestPlanRoutesGateways(t *testing.T) {
	g1 := via("10.65.1.0/26", "172.31.1.11", "", false)
	kernelG1 := have(via("10.65.1.0/26", "172.31.1.11", "eth0", false)) // the kernel names the interface it chose
	kernelG2 := have(via("10.65.2.0/26", "172.31.1.12", "eth0", false))
	tests := []struct {
		name string
		have []kernelRoute
		want []Route
		hold bool
		ops  []string
	}{
		{name: "kernel's interface choice matches a gateway route without one", have: []kernelRoute{kernelG1}, want: []Route{g1}},
		{name: "next hop changed", have: []kernelRoute{kernelG1}, want: []Route{via("10.65.1.0/26", "172.31.1.13", "", false)},
			ops: []string{"replace 10.65.1.0/26 via 172.31.1.13"}},
		{name: "withdrawn", have: []kernelRoute{kernelG1, kernelG2}, want: []Route{g1}, ops: []string{"delete have[1]"}},
		{name: "held while BGP syncs", have: []kernelRoute{kernelG1, kernelG2}, want: []Route{g1}, hold: true},
		{name: "hold keeps only gateway routes", have: []kernelRoute{have(blackhole("10.65.9.0/26")), kernelG2}, hold: true,
			ops: []string{"delete have[0]"}},
		{name: "explicit interface must match", have: []kernelRoute{kernelG1}, want: []Route{via("10.65.1.0/26", "172.31.1.11", "eth1", true)},
			ops: []string{"replace 10.65.1.0/26 via 172.31.1.11 dev eth1 onlink"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ops []string
			for _, op := range planRoutes(tt.have, tt.want, tt.hold) {
				if op.kind == opDelete {
					ops = append(ops, "delete have["+string(rune('0'+op.have))+"]")
				} else {
					ops = append(ops, op.kind.String()+" "+op.route.String())
				}
			}
			if strings.Join(ops, "; ") != strings.Join(tt.ops, "; ") {
				t.Errorf("ops:\n got %q\nwant %q", ops, tt.ops)
			}
		})
	}
}

// The periodic full pass is due an interval after the last one ended (longer after a long
// pass); while learned routes are being written it waits, learnQuiet at a time, up to
// fullPassShare times as long again.
func TestResyncWaitsForLearning(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const iv = 10 * time.Second
	r := newResync(iv, t0)
	type step struct {
		at       time.Duration // since t0
		learning bool
		run      bool
		again    time.Duration
	}
	check := func(when string, steps []step) {
		t.Helper()
		for _, c := range steps {
			run, again := r.check(t0.Add(c.at), c.learning)
			if run != c.run || again != c.again {
				t.Errorf("%s, at %v learning %v: run %v again %v, want %v %v", when, c.at, c.learning, run, again, c.run, c.again)
			}
		}
	}
	check("first", []step{
		{0, false, false, iv},
		{3 * time.Second, true, false, 7 * time.Second},
		{iv, false, true, 0},
		{iv, true, false, learnQuiet},
		{iv + 5*time.Second, true, false, learnQuiet},
		{iv + 5*iv - 300*time.Millisecond, true, false, 300 * time.Millisecond},
		{iv + 5*iv, true, true, 0},
		{7 * iv, true, true, 0},
	})
	// A short pass: the next is due an interval after its end.
	if wait := r.ran(time.Second, t0.Add(25*time.Second)); wait != iv {
		t.Errorf("after a 1 s pass: next in %v, want %v", wait, iv)
	}
	check("after a short pass", []step{{25 * time.Second, false, false, iv}, {35 * time.Second, false, true, 0}})
	// A pass of 6 s: the next waits 24 s, and while learning up to 5x24 s more.
	if wait := r.ran(6*time.Second, t0.Add(40*time.Second)); wait != 24*time.Second {
		t.Errorf("after a 6 s pass: next in %v, want 24s", wait)
	}
	check("after a long pass", []step{
		{50 * time.Second, false, false, 14 * time.Second},
		{64 * time.Second, true, false, learnQuiet},
		{183 * time.Second, true, false, learnQuiet},
		{184 * time.Second, true, true, 0},
	})
	// BGP synced: the pass that releases held routes is due now, and waits the same way.
	r.dueNow(t0.Add(200 * time.Second))
	check("released", []step{{200 * time.Second, true, false, learnQuiet}, {200 * time.Second, false, true, 0}})
}

// Only a state that differs from the last full pass's in HoldLearned going false waits.
func TestReleaseOnly(t *testing.T) {
	held := &LocalState{Blocks: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/26")}, HoldLearned: true}
	released := *held
	released.HoldLearned = false
	moreBlocks := released
	moreBlocks.Blocks = append(slices.Clone(held.Blocks), netip.MustParsePrefix("10.65.0.64/26"))
	for _, c := range []struct {
		name        string
		applied, s  *LocalState
		releaseOnly bool
	}{
		{"released", held, &released, true},
		{"before the first pass", nil, &released, false},
		{"still held", held, held, false},
		{"not held before", &released, &released, false},
		{"released with a new block", held, &moreBlocks, false},
		{"held again", &released, held, false},
	} {
		if got := releaseOnly(c.applied, c.s); got != c.releaseOnly {
			t.Errorf("%s: releaseOnly %v, want %v", c.name, got, c.releaseOnly)
		}
	}
}

package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// requireIPv6Loopback skips when this host has no ::1 to listen on (IPv6 disabled).
func requireIPv6Loopback(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	l.Close()
}

// Two dual-stack speakers peer over IPv4 (127.0.0.1, 127.0.0.2) and over IPv6 (both
// dial from ::1, which is why one side waits; their IPv6 node addresses, the next hops,
// are fd00::a and fd00::b). Each family goes over its own session: the IPv4 block only
// over the IPv4 one with the IPv4 next hop, the IPv6 block only over the IPv6 one with
// the IPv6 next hop. A withdrawal of the IPv6 block leaves the IPv4 one, and a speaker
// without an IPv6 address advertises no IPv6 prefix.
func TestSpeakerDualStack(t *testing.T) {
	requireIPv6Loopback(t)
	a := startSpeaker(t, "127.0.0.1", 64512, Options{})
	b := startSpeaker(t, "127.0.0.2", 64512, Options{})
	ctx := t.Context()
	// The speakers' identities are fixed at Start: give them IPv6 addresses (and so a
	// listener on ::) by starting them again.
	lo6 := netip.MustParseAddr("::1")
	restart := func(s *testSpeaker, addr6 string) {
		t.Helper()
		s.Stop(ctx)
		o := s.opts
		o.Self.Addr6 = netip.MustParseAddr(addr6)
		sp, err := Start(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sp.Stop(ctx) })
		s.Speaker = sp
	}
	restart(a, "fd00::a")
	restart(b, "fd00::b")
	v6 := func(from, to *testSpeaker, passive bool) Peer {
		p := from.peer(to, PeerMesh)
		p.Addr, p.LocalAddr, p.Passive = lo6, lo6, passive
		return p
	}
	if err := errors.Join(
		a.SetPeers(ctx, []Peer{a.peer(b, PeerMesh), v6(a, b, false)}),
		b.SetPeers(ctx, []Peer{b.peer(a, PeerMesh), v6(b, a, true)}),
		a.SetAdvertisements(ctx, plain("10.65.0.0/26", "fd00:65::/122")),
	); err != nil {
		t.Fatal(err)
	}
	waitLearned(t, b, "10.65.0.0/26 via 127.0.0.1, fd00:65::/122 via fd00::a")

	waitFor(t, "b's status: one prefix received over each session", 10*time.Second, func() (bool, string) {
		st, err := b.Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		got := ""
		for _, p := range st {
			got += fmt.Sprintf("%s %s received %d; ", p.Address, p.State, p.Received)
		}
		return got == "127.0.0.1 Established received 1; ::1 Established received 1; ", got
	})

	if err := a.SetAdvertisements(ctx, plain("10.65.0.0/26")); err != nil {
		t.Fatal(err)
	}
	waitLearned(t, b, "10.65.0.0/26 via 127.0.0.1")

	// No IPv6 address: the IPv6 prefix is not originated at all.
	c := startSpeaker(t, "127.0.0.3", 64512, Options{})
	if err := c.SetAdvertisements(ctx, plain("10.65.2.0/26", "fd00:65::40/122")); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Advertised(), []netip.Prefix{netip.MustParsePrefix("10.65.2.0/26")}; !slices.Equal(got, want) {
		t.Errorf("advertised without an IPv6 address: %v, want %v", got, want)
	}
}

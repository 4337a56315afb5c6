// The speaker's tests listen with plain TCP, as tabby-node does (its main package says
// why: Linux refuses TCP MD5 keys on Go's default MPTCP listeners).
//
//go:debug multipathtcp=0
package bgp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gobgpapi "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// freePort returns a TCP port free on loopback right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

type testSpeaker struct {
	*Speaker
	addr netip.Addr
	port uint16
	asn  uint32
}

func startSpeaker(t *testing.T, addr string, asn uint32, opts Options) *testSpeaker {
	t.Helper()
	a := netip.MustParseAddr(addr)
	opts.Self = Self{Name: addr, Addr: a, ASN: asn}
	opts.ListenPort = freePort(t)
	opts.ConnectRetry, opts.HoldTime, opts.KeepaliveTime = time.Second, 9*time.Second, 3*time.Second
	if testing.Verbose() {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("speaker", addr)
	}
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return &testSpeaker{s, a, opts.ListenPort, asn}
}

// plain is advertisements of prefixes without communities.
func plain(prefixes ...string) []Advertisement {
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	return WithCommunities(ps, nil)
}

func (s *testSpeaker) peer(o *testSpeaker, typ PeerType) Peer {
	return Peer{Addr: o.addr, Port: o.port, ASN: o.asn, Type: typ, Source: o.addr.String(), RestartTime: 5 * time.Second, LocalAddr: s.addr}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last state: %s", what, timeout, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func learnedString(s *testSpeaker) string {
	rs, _ := s.Learned()
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.Dst.String()+" via "+r.NextHop.String())
	}
	return strings.Join(parts, ", ")
}

func waitLearned(t *testing.T, s *testSpeaker, want string) {
	t.Helper()
	waitFor(t, s.addr.String()+" learns "+want, 20*time.Second, func() (bool, string) {
		got := learnedString(s)
		return got == want, got
	})
}

// Three speakers on loopback: a and b are iBGP nodes, x an external (eBGP) router peering
// with b. Advertisements, withdrawals, next hops and the export policy (x's routes reach
// b but are not passed on; a's routes are not passed to x) are checked end to end, and a
// peer with the wrong AS shows why in status without disturbing the others.
func TestSpeakerLoopback(t *testing.T) {
	a := startSpeaker(t, "127.0.0.1", 64512, Options{})
	b := startSpeaker(t, "127.0.0.2", 64512, Options{})
	x := startSpeaker(t, "127.0.0.3", 65001, Options{})
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.SetPeers(ctx, []Peer{a.peer(b, PeerMesh)}))
	must(b.SetPeers(ctx, []Peer{b.peer(a, PeerMesh), b.peer(x, PeerGlobal)}))
	must(x.SetPeers(ctx, []Peer{x.peer(b, PeerGlobal)}))
	must(a.SetAdvertisements(ctx, plain("10.65.0.0/26")))
	must(b.SetAdvertisements(ctx, plain("10.65.1.0/26")))
	must(x.SetAdvertisements(ctx, plain("192.0.2.0/24")))

	waitLearned(t, b, "10.65.0.0/26 via 127.0.0.1, 192.0.2.0/24 via 127.0.0.3")
	waitLearned(t, a, "10.65.1.0/26 via 127.0.0.2")
	waitLearned(t, x, "10.65.1.0/26 via 127.0.0.2")
	waitFor(t, "synced", 10*time.Second, func() (bool, string) {
		_, synced := a.Learned()
		return synced, "not synced"
	})

	st, err := b.Status(ctx)
	must(err)
	if len(st) != 2 || st[0].State != "Established" || st[1].State != "Established" || st[0].Type != PeerMesh ||
		st[0].Received != 1 || st[0].Advertised != 1 || st[1].Advertised != 1 || st[1].Received != 1 {
		t.Errorf("b's status: %+v", st)
	}

	// Withdrawal.
	must(a.SetAdvertisements(ctx, nil))
	waitLearned(t, b, "192.0.2.0/24 via 127.0.0.3")

	// A peer with the wrong AS number: status says why, the other sessions stay up.
	wrong := b.peer(a, PeerNodeSpecific)
	wrong.Addr, wrong.ASN = netip.MustParseAddr("127.0.0.4"), 65099
	y := startSpeaker(t, "127.0.0.4", 65098, Options{})
	wrong.Port = y.port
	must(y.SetPeers(ctx, []Peer{y.peer(b, PeerGlobal)}))
	must(b.SetPeers(ctx, []Peer{b.peer(a, PeerMesh), b.peer(x, PeerGlobal), wrong}))
	waitFor(t, "b reports the AS mismatch", 20*time.Second, func() (bool, string) {
		st, _ := b.Status(ctx)
		for _, p := range st {
			if p.Address == "127.0.0.4" {
				return p.State != "Established" && strings.Contains(p.Info, "as number mismatch"), p.State + ": " + p.Info
			}
		}
		return false, "no row"
	})
	st, _ = b.Status(ctx)
	if st[0].State != "Established" || st[1].State != "Established" {
		t.Errorf("a bad peer disturbed the others: %+v", st)
	}
	waitLearned(t, b, "192.0.2.0/24 via 127.0.0.3")
}

func TestSpeakerPasswordFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bgp-secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bgp-secrets", "tor"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Speaker{opts: Options{PasswordDir: dir}}
	for ref, want := range map[string]string{"": "", "bgp-secrets/tor": "s3cret"} {
		if got, err := s.password(ref); err != nil || got != want {
			t.Errorf("password(%q) = %q, %v", ref, got, err)
		}
	}
	for _, bad := range []string{"bgp-secrets/missing", "../x", "bgp-secrets/../../etc", "nokey"} {
		if _, err := s.password(bad); err == nil {
			t.Errorf("password(%q) succeeded", bad)
		}
	}
	if _, err := (&Speaker{}).password("a/b"); err == nil || !slices.Contains(strings.Fields(err.Error()), "--bgp-password-dir") {
		t.Errorf("no dir: %v", err)
	}
}

func TestPeerSynced(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	const timeout = 30 * time.Second
	gr := 120 * time.Second
	tests := []struct {
		name string
		p    peerSync
		now  time.Duration // since start
		want bool
	}{
		{"End-of-RIB received", peerSync{up: true, upSince: at(time.Second), eor: true, restartTime: gr}, 2 * time.Second, true},
		{"up, no End-of-RIB yet", peerSync{up: true, upSince: at(time.Second), restartTime: gr}, 5 * time.Second, false},
		{"up, a GR peer that sends no End-of-RIB: 10 s grace", peerSync{up: true, upSince: at(time.Second), restartTime: gr}, 11 * time.Second, true},
		{"up, no GR: 1 s grace", peerSync{up: true, upSince: at(time.Second)}, 2 * time.Second, true},
		{"down, GR: waited for past the sync timeout", peerSync{restartTime: gr}, 31 * time.Second, false},
		{"down, GR: given up on after its restart time", peerSync{restartTime: gr}, 120 * time.Second, true},
		{"down, GR with a restart time below the sync timeout", peerSync{restartTime: 5 * time.Second}, 30 * time.Second, true},
		{"down, GR with a restart time below the sync timeout, before it", peerSync{restartTime: 5 * time.Second}, 29 * time.Second, false},
		{"down, no GR: the sync timeout", peerSync{}, 30 * time.Second, true},
		{"down, no GR: before the sync timeout", peerSync{}, 29 * time.Second, false},
		{"down again after End-of-RIB, before its deadline", peerSync{eor: true, restartTime: gr}, 60 * time.Second, false},
	}
	for _, tt := range tests {
		if got := peerSynced(tt.p, at(tt.now), start, timeout); got != tt.want {
			t.Errorf("%s: peerSynced(%+v) at +%s = %v, want %v", tt.name, tt.p, tt.now, got, tt.want)
		}
	}
}

// communitiesAt returns the communities on s's best path to prefix, as
// Communities.String writes them, or "none" when s has no path.
func communitiesAt(t *testing.T, s *testSpeaker, prefix string) string {
	t.Helper()
	got := "none"
	err := s.srv.ListPath(t.Context(), &gobgpapi.ListPathRequest{TableType: gobgpapi.TableType_GLOBAL, Family: familyV4,
		Prefixes: []*gobgpapi.TableLookupPrefix{{Prefix: prefix}}}, func(d *gobgpapi.Destination) {
		for _, p := range d.GetPaths() {
			if !p.GetBest() {
				continue
			}
			attrs, err := apiutil.GetNativePathAttributes(p)
			if err != nil {
				t.Errorf("path attributes: %v", err)
			}
			var c Communities
			for _, a := range attrs {
				switch a := a.(type) {
				case *bgp.PathAttributeCommunities:
					c.Standard = a.Value
				case *bgp.PathAttributeLargeCommunities:
					for _, l := range a.Values {
						c.Large = append(c.Large, LargeCommunity{l.ASN, l.LocalData1, l.LocalData2})
					}
				}
			}
			got = c.String()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// Communities go out on the path, and a change of them reaches the peer as a new path
// for the same prefix: added, changed, and removed, the route staying learned throughout.
func TestSpeakerCommunities(t *testing.T) {
	a := startSpeaker(t, "127.0.0.1", 64512, Options{})
	b := startSpeaker(t, "127.0.0.2", 64512, Options{})
	ctx := t.Context()
	if err := errors.Join(a.SetPeers(ctx, []Peer{a.peer(b, PeerMesh)}), b.SetPeers(ctx, []Peer{b.peer(a, PeerMesh)})); err != nil {
		t.Fatal(err)
	}
	pfx := netip.MustParsePrefix("10.65.0.0/26")
	for _, c := range []Communities{
		{Standard: []uint32{65001<<16 | 100}, Large: []LargeCommunity{{4200000000, 1, 2}}},
		{Standard: []uint32{65001<<16 | 100, 65001<<16 | 200}},
		{},
	} {
		if err := a.SetAdvertisements(ctx, []Advertisement{{Prefix: pfx, Communities: c}}); err != nil {
			t.Fatal(err)
		}
		want := c.String()
		waitFor(t, "b sees "+pfx.String()+" with communities "+want, 20*time.Second, func() (bool, string) {
			got := communitiesAt(t, b, pfx.String())
			return got == want, got
		})
		if got := learnedString(b); got != "10.65.0.0/26 via 127.0.0.1" {
			t.Errorf("b learned %q", got)
		}
	}
}

// Two speakers with the same TCP MD5 key on their session, the one with the higher
// address waiting for the other (as between nodes): the session comes up and routes pass.
func TestSpeakerMD5(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bgp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bgp", "mesh"), []byte("mesh-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startSpeaker(t, "127.0.0.1", 64512, Options{PasswordDir: dir})
	b := startSpeaker(t, "127.0.0.2", 64512, Options{PasswordDir: dir})
	ctx := t.Context()
	pa, pb := a.peer(b, PeerMesh), b.peer(a, PeerMesh)
	pa.Password, pb.Password, pb.Passive = "bgp/mesh", "bgp/mesh", true
	if err := errors.Join(a.SetPeers(ctx, []Peer{pa}), b.SetPeers(ctx, []Peer{pb})); err != nil {
		t.Fatal(err)
	}
	if err := a.SetAdvertisements(ctx, plain("10.65.0.0/26")); err != nil {
		t.Fatal(err)
	}
	waitLearned(t, b, "10.65.0.0/26 via 127.0.0.1")
}

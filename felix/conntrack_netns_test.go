package felix

import (
	"cmp"
	"context"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/internal/testenv"
	"github.com/tabby-net/tabby/proxy"
)

// udpConntrack lists the UDP conntrack entries of ns as "origdst:dport>replysrc:sport".
func udpConntrack(t *testing.T, ns *testNS) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns.name, "conntrack", "-L", "-p", "udp").Output()
	if err != nil {
		t.Fatalf("conntrack -L: %v", err)
	}
	var flows []string
	for line := range strings.Lines(string(out)) {
		var dst, dport, rsrc, rsport string
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch {
			case k == "dst" && dst == "":
				dst = v
			case k == "dport" && dport == "":
				dport = v
			case k == "src" && dst != "":
				rsrc = v
			case k == "sport" && rsrc != "":
				rsport = v
			}
		}
		flows = append(flows, dst+":"+dport+">"+rsrc+":"+rsport)
	}
	slices.Sort(flows)
	return slices.Compact(flows)
}

// udpCleaner is a proxy writer with its two conntrack cleanups.
type udpCleaner interface {
	serviceWriter
	DeleteStaleUDP([]proxy.StaleFlow) (uint, error)
	DeleteUDPNotServing(*proxy.LBState) (uint, error)
}

// TestDeleteStaleUDPNetns: a client's UDP socket keeps its conntrack entry, so it keeps
// reaching a backend the Service no longer has, until the entries of that backend go,
// through the cluster IP and through the node port; those of the backend that stays, and
// of another Service with the same backend, stay. The entries go by DeleteStaleUDP of the
// change (the agent saw it), or by DeleteUDPNotServing of the new state alone (an agent
// that started after the change: nothing it saw says which backend left).
func TestDeleteStaleUDPNetns(t *testing.T) {
	forEachMode(t, func(t *testing.T, m proxyMode) {
		t.Run("change", func(t *testing.T) {
			testDeleteStaleUDPNetns(t, m, func(sp udpCleaner, old, next *proxy.LBState) (uint, error) {
				return sp.DeleteStaleUDP(proxy.StaleUDP(old, next))
			})
		})
		t.Run("full", func(t *testing.T) {
			testDeleteStaleUDPNetns(t, m, func(sp udpCleaner, _, next *proxy.LBState) (uint, error) {
				return sp.DeleteUDPNotServing(next)
			})
		})
	})
}

func testDeleteStaleUDPNetns(t *testing.T, m proxyMode, cleanup func(sp udpCleaner, old, next *proxy.LBState) (uint, error)) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "conntrack", Package: "conntrack"})
	l := newProxyLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sp := m.new(t, ServiceProxyConfig{NetNS: l.client.name}).(udpCleaner)
	t.Cleanup(func() { sp.Remove(context.Background()) })
	withNodePort := func(p proxy.PortLB) proxy.PortLB {
		p.NodePort, p.NodePortFamilies = 30053, [2]bool{true, false}
		return p
	}
	old := &proxy.LBState{Ports: []proxy.PortLB{
		withNodePort(lbPort("shop", "dns", "UDP", "10.96.0.53", 53, 5353, "10.200.0.2", "10.200.0.3")),
		lbPort("shop", "other", "UDP", "10.96.0.54", 53, 5353, "10.200.0.3"),
	}}
	if err := sp.ApplyCached(ctx, old); err != nil {
		t.Fatal(err)
	}
	// Client sockets, each with a source port (an entry) of its own, until both backends
	// answered.
	ask := func(c net.Conn) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("?")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	dial := func(addr string) net.Conn {
		t.Helper()
		var c net.Conn
		if err := inNamedNetNS(l.client.name, func() (err error) { c, err = net.Dial("udp4", addr); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	sockets := map[string]uint{}
	// through dials addr from new sockets until both backends answered, and returns a
	// socket per backend.
	through := func(addr string) map[string]net.Conn {
		byBackend := map[string]net.Conn{}
		for i := 0; len(byBackend) < 2; i++ {
			if i == 100 {
				t.Fatalf("100 sockets to %s reached only %v", addr, byBackend)
			}
			c := dial(addr)
			got := ask(c)
			byBackend[got] = c
			sockets[got]++
		}
		return byBackend
	}
	byBackend := through("10.96.0.53:53")
	// The node port, on the node's own address.
	byBackendNP := through("10.200.0.1:30053")
	other := dial("10.96.0.54:53")
	if got := ask(other); got != "10.200.0.3" {
		t.Fatalf("the other Service answered from %q", got)
	}
	wantBefore := []string{"10.200.0.1:30053>10.200.0.2:5353", "10.200.0.1:30053>10.200.0.3:5353",
		"10.96.0.53:53>10.200.0.2:5353", "10.96.0.53:53>10.200.0.3:5353", "10.96.0.54:53>10.200.0.3:5353"}
	if got := udpConntrack(t, l.client); !slices.Equal(got, wantBefore) {
		t.Fatalf("conntrack before = %v, want %v", got, wantBefore)
	}

	// 10.200.0.3 leaves shop/dns. Its entry outlives the rules: the socket still reaches it.
	next := &proxy.LBState{Ports: []proxy.PortLB{
		withNodePort(lbPort("shop", "dns", "UDP", "10.96.0.53", 53, 5353, "10.200.0.2")),
		old.Ports[1],
	}}
	if err := sp.ApplyCached(ctx, next); err != nil {
		t.Fatal(err)
	}
	stale, staleNP := byBackend["10.200.0.3"], byBackendNP["10.200.0.3"]
	for _, c := range []net.Conn{stale, staleNP} {
		if got := ask(c); got != "10.200.0.3" {
			t.Fatalf("before the cleanup the socket to %s reached %q; the test expects the stale entry to hold", c.RemoteAddr(), got)
		}
	}
	n, err := cleanup(sp, old, next)
	if err != nil || n != sockets["10.200.0.3"] {
		t.Fatalf("cleanup = %d, %v; want %d entries deleted (one per socket)", n, err, sockets["10.200.0.3"])
	}
	wantAfter := []string{"10.200.0.1:30053>10.200.0.2:5353", "10.96.0.53:53>10.200.0.2:5353", "10.96.0.54:53>10.200.0.3:5353"}
	if got := udpConntrack(t, l.client); !slices.Equal(got, wantAfter) {
		t.Errorf("conntrack after = %v, want %v", got, wantAfter)
	}
	for _, c := range []net.Conn{stale, staleNP} {
		if got := ask(c); got != "10.200.0.2" {
			t.Errorf("after the cleanup the socket to %s reached %q, want the remaining 10.200.0.2", c.RemoteAddr(), got)
		}
	}
	if got := ask(other); got != "10.200.0.3" {
		t.Errorf("the other Service's socket reached %q, want 10.200.0.3 still", got)
	}
	if n, err := cleanup(sp, next, next); n != 0 || err != nil {
		t.Errorf("cleanup with nothing stale = %d, %v", n, err)
	}
}

// libraryUDPEntry is a UDP flow as vishvananda/netlink parses it, in the cleanups' terms;
// false for another protocol or a flow without both addresses.
func libraryUDPEntry(fl *netlink.ConntrackFlow) (udpEntry, bool) {
	if fl.Forward.Protocol != unix.IPPROTO_UDP {
		return udpEntry{}, false
	}
	dst, ok := netip.AddrFromSlice(fl.Forward.DstIP)
	back, ok2 := netip.AddrFromSlice(fl.Reverse.SrcIP)
	if !ok || !ok2 {
		return udpEntry{}, false
	}
	return udpEntry{dst: netip.AddrPortFrom(dst.Unmap(), fl.Forward.DstPort), replySrc: netip.AddrPortFrom(back.Unmap(), fl.Reverse.SrcPort)}, true
}

// matchOne records every entry it is asked about and matches one.
type matchOne struct {
	want udpEntry
	seen []udpEntry
}

func (m *matchOne) match(e udpEntry) bool {
	m.seen = append(m.seen, e)
	return e == m.want
}

// TestUDPConntrackDumpNetns: the cleanups' dump asks the kernel for UDP entries only (it
// sends no TCP entry), reads each as vishvananda/netlink's parser does, in both
// families, and deletes exactly the entry matched.
func TestUDPConntrackDumpNetns(t *testing.T) {
	ns := newTestNS(t)
	h := ns.newHandle(t)
	flow := func(proto uint8, src, dst string, sport, dport uint16, replySrc string, rsport uint16) *netlink.ConntrackFlow {
		s, d, r := net.ParseIP(src), net.ParseIP(dst), net.ParseIP(replySrc)
		fam := uint8(unix.AF_INET6)
		if s.To4() != nil {
			fam, s, d, r = unix.AF_INET, s.To4(), d.To4(), r.To4()
		}
		f := &netlink.ConntrackFlow{FamilyType: fam, TimeOut: 600,
			Forward: netlink.IPTuple{Protocol: proto, SrcIP: s, DstIP: d, SrcPort: sport, DstPort: dport},
			Reverse: netlink.IPTuple{Protocol: proto, SrcIP: r, DstIP: s, SrcPort: rsport, DstPort: sport}}
		if proto == unix.IPPROTO_TCP {
			f.ProtoInfo = &netlink.ProtoInfoTCP{State: 3} // ESTABLISHED
		}
		return f
	}
	flows := []*netlink.ConntrackFlow{
		flow(unix.IPPROTO_TCP, "10.1.0.1", "10.2.0.1", 40000, 80, "10.2.0.1", 80),
		flow(unix.IPPROTO_TCP, "10.1.0.2", "10.96.0.80", 40000, 80, "10.200.0.2", 8080),
		flow(unix.IPPROTO_TCP, "fd00::1", "fd00::2", 40000, 80, "fd00::2", 80),
		flow(unix.IPPROTO_UDP, "10.1.0.1", "10.96.0.10", 40001, 53, "10.200.0.2", 5353),
		flow(unix.IPPROTO_UDP, "10.1.0.1", "10.96.0.10", 40002, 53, "10.200.0.3", 5353),
		flow(unix.IPPROTO_UDP, "10.1.0.1", "10.2.0.1", 40003, 123, "10.2.0.1", 123),
		flow(unix.IPPROTO_UDP, "fd00::1", "fd00:96::10", 40001, 53, "fd00:200::2", 5353),
	}
	for _, f := range flows {
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(f.FamilyType), f); err != nil {
			t.Fatalf("create %s: %v", f, err)
		}
	}
	libraryUDP := func(fam netlink.InetFamily) []udpEntry {
		t.Helper()
		list, err := h.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		var out []udpEntry
		for _, fl := range list {
			if e, ok := libraryUDPEntry(fl); ok {
				out = append(out, e)
			}
		}
		return out
	}
	byDst := func(a, b udpEntry) int { return cmp.Or(a.dst.Compare(b.dst), a.replySrc.Compare(b.replySrc)) }
	for _, tc := range []struct {
		fam  netlink.InetFamily
		udp  int
		want udpEntry
	}{
		{unix.AF_INET, 3, udpEntry{dst: netip.MustParseAddrPort("10.96.0.10:53"), replySrc: netip.MustParseAddrPort("10.200.0.3:5353")}},
		{unix.AF_INET6, 1, udpEntry{dst: netip.MustParseAddrPort("[fd00:96::10]:53"), replySrc: netip.MustParseAddrPort("[fd00:200::2]:5353")}},
	} {
		before := libraryUDP(tc.fam)
		if len(before) != tc.udp {
			t.Fatalf("family %d: the library lists %d UDP entries, want %d", tc.fam, len(before), tc.udp)
		}
		var msgs int
		m := &matchOne{want: tc.want}
		var n uint
		if err := inNamedNetNS(ns.name, func() (err error) {
			if err := dumpUDPConntrack(tc.fam, func([]byte) { msgs++ }); err != nil {
				return err
			}
			n, err = deleteUDPConntrack(tc.fam, m)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if msgs != tc.udp {
			t.Errorf("family %d: the dump sent %d entries, want its %d UDP entries only (the kernel's filter)", tc.fam, msgs, tc.udp)
		}
		slices.SortFunc(m.seen, byDst)
		slices.SortFunc(before, byDst)
		if !slices.Equal(m.seen, before) {
			t.Errorf("family %d: read %v, the library parses %v", tc.fam, m.seen, before)
		}
		after := libraryUDP(tc.fam)
		if want := slices.DeleteFunc(slices.Clone(before), func(e udpEntry) bool { return e == tc.want }); n != 1 || !slices.Equal(slices.SortedFunc(slices.Values(after), byDst), want) {
			t.Errorf("family %d: deleted %d, left %v; want 1 deleted, %v left", tc.fam, n, after, want)
		}
	}
	if list, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET); err != nil || len(list) != 4 {
		t.Errorf("IPv4 entries left: %d, %v; want the 2 TCP and 2 UDP", len(list), err)
	}
}

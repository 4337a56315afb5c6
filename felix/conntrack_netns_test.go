package felix

import (
	"context"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

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

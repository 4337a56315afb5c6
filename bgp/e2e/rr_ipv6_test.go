package e2e

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestRouteReflectorDualStack: a lab up with --ipv6, the mesh off, and a route reflector
// host (tabby-node --role route-reflector with --ip6) that the nodes select by a BGPPeer:
// each node has an IPv4 and an IPv6 session with the reflector and none with the other
// node; the reflector passes each node's IPv4 and IPv6 blocks to the other with the
// owner's address of that family as next hop, and the workloads reach each other over
// both families.
func TestRouteReflectorDualStack(t *testing.T) {
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--ipv6", "--agent-binary", bgpAgent(t))
	l.Apply(reflectorMesh)
	// The first host on subnet 1 gets .200 (fd00:172:31:1::200).
	rr := l.startHostAgent("rr1", "--role", "route-reflector", "--ip6", "fd00:172:31:1::200/64")
	rr6 := "fd00:172:31:1::200"
	ips := l.dualStackWorkloads()
	st := l.State()
	node := func(name string) (v4, v6 string) {
		n := st.Node(name)
		return n.Address.Addr().String(), n.Address6.Addr().String()
	}
	labtest.Poll(t, "each node has an IPv4 and an IPv6 session with the reflector, and no other", 40*time.Second, func() string {
		for _, n := range []string{"node1", "node2"} {
			up, s := l.established(n, l.NodeDataDir(n))
			want := map[string]bool{rr.addr: true, rr6: true}
			if !maps.Equal(up, want) || s == nil || len(s.Peers) != 2 {
				return fmt.Sprintf("%s: established %v, want %v", n, up, want)
			}
		}
		return ""
	})
	labtest.Poll(t, "each node learns the other's blocks of both families through the reflector", 40*time.Second, func() string {
		for _, c := range [][2]string{{"node1", "node2"}, {"node2", "node1"}} {
			routes := l.GatewayRoutes(c[0])
			maps.Copy(routes, l.GatewayRoutes6(c[0]))
			v4, v6 := node(c[1])
			b4, b6 := labtest.BlockOf(ips[c[1]][0]), labtest.BlockOf6(ips[c[1]][1])
			if routes[b4] != v4 || routes[b6] != v6 {
				return fmt.Sprintf("%s: routes %v, want %s via %s and %s via %s", c[0], routes, b4, v4, b6, v6)
			}
		}
		return ""
	})
	_, s := l.established("rr1", rr.dataDir)
	var clients []string
	for _, p := range s.Peers {
		clients = append(clients, p.Address+" "+p.Type+" "+p.State)
	}
	n1v4, n1v6 := node("node1")
	n2v4, n2v6 := node("node2")
	want := []string{n1v4 + " route reflector Established", n2v4 + " route reflector Established", n1v6 + " route reflector Established", n2v6 + " route reflector Established"}
	if !slices.Equal(clients, want) {
		t.Errorf("reflector's peers %q, want %q", clients, want)
	}
	for _, a := range ips["node2"] {
		l.Ping("default/w1", a.String())
	}
	for _, a := range ips["node1"] {
		l.Ping("default/w2", a.String())
	}
}

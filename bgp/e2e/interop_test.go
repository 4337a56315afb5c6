package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// twoNodeLab brings up two nodes on one subnet with a workload each, plus a host for a
// router, and applies the lab pool and extra resources (with the router's address
// substituted for ROUTER). It returns the lab, the router host's namespace and address, and
// the two workloads' blocks, sorted.
func twoNodeLab(t *testing.T, router, extra string) (*lab, string, string, []string) {
	t.Helper()
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", bgpAgent(t))
	l.OK("host", "add", router, "--subnet", "1")
	ns, addr := l.hostAddr(router)
	l.Apply(labtest.Pool + "---\n" + strings.ReplaceAll(extra, "ROUTER", addr))
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	blocks := []string{labtest.BlockOf(l.WorkloadIP("default", "w1")), labtest.BlockOf(l.WorkloadIP("default", "w2"))}
	slices.Sort(blocks)
	return l, ns, addr, blocks
}

// routeIn polls until every node has prefix in its kernel via gw.
func (l *lab) routeIn(prefix, gw string, nodes ...string) time.Duration {
	l.t.Helper()
	return labtest.Poll(l.t, prefix+" in every node's kernel", 20*time.Second, func() string {
		for _, n := range nodes {
			if got := l.GatewayRoutes(n)[prefix]; got != gw {
				return fmt.Sprintf("%s: %s via %q, want via %s", n, prefix, got, gw)
			}
		}
		return ""
	})
}

// daemon starts argv in a lab namespace, killed (with its whole session) at cleanup; its
// log is shown when the test failed.
func daemon(t testing.TB, netns, name string, argv []string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), name+".log")
	p := startIn(t, netns, argv, log)
	t.Cleanup(func() {
		// The daemon runs in a session of its own (Setsid): kill every process of it.
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		_ = p.Signal(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("%s log:\n%s", name, b)
		}
	})
}

// TestFRRToR: FRR 8's bgpd (no zebra) as an eBGP ToR (AS 65002) peering with both nodes
// through a global BGPPeer: it learns exactly the two blocks, each from its owner only, and
// its own prefix reaches both nodes' kernels via the ToR.
func TestFRRToR(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/lib/frr/bgpd", Package: "frr"})
	l, ns, tor, blocks := twoNodeLab(t, "tor", `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ROUTER, asNumber: 65002}
`)
	dir := t.TempDir()
	conf := filepath.Join(dir, "bgpd.conf")
	var nb strings.Builder
	for _, n := range []string{"172.31.1.10", "172.31.1.11"} {
		fmt.Fprintf(&nb, " neighbor %s remote-as 64512\n neighbor %s timers 3 9\n neighbor %s timers connect 1\n", n, n, n)
	}
	err := os.WriteFile(conf, []byte(`hostname tor
log stdout informational
router bgp 65002
 bgp router-id `+tor+`
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp graceful-restart
`+nb.String()+` address-family ipv4 unicast
  network 198.51.100.0/24
 exit-address-family
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	daemon(t, ns, "bgpd", []string{"/usr/lib/frr/bgpd", "-Z", "-S", "-n", "-f", conf, "-i", filepath.Join(dir, "bgpd.pid"),
		"--vty_socket", dir, "-A", "127.0.0.1", "-P", "0", "--log", "stdout"})

	// FRR's RIB: prefix -> the peers it has a path from.
	rib := func() (map[string][]string, string) {
		out, stderr, code := l.Run("", "exec", "tor", "--", "vtysh", "--vty_socket", dir, "-c", "show bgp ipv4 unicast json")
		if code != 0 {
			return nil, stderr + out
		}
		var r struct {
			Routes map[string][]struct {
				PeerID string `json:"peerId"`
			} `json:"routes"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return nil, err.Error() + ": " + out
		}
		m := map[string][]string{}
		for p, paths := range r.Routes {
			for _, x := range paths {
				m[p] = append(m[p], x.PeerID)
			}
		}
		return m, out
	}
	owner := map[string]string{labtest.BlockOf(l.WorkloadIP("default", "w1")): "172.31.1.10", labtest.BlockOf(l.WorkloadIP("default", "w2")): "172.31.1.11"}
	took := labtest.Poll(t, "FRR learns every block, each from its owner, and nothing else", 40*time.Second, func() string {
		m, out := rib()
		if m == nil {
			return out
		}
		var got []string
		for p := range m {
			if p != "198.51.100.0/24" {
				got = append(got, p)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, blocks) {
			return fmt.Sprintf("FRR has %v, want %v", got, blocks)
		}
		for p, from := range m {
			if p != "198.51.100.0/24" && !slices.Equal(from, []string{owner[p]}) {
				return fmt.Sprintf("FRR has %s from %v, want only from %s", p, from, owner[p])
			}
		}
		return ""
	})
	t.Logf("FRR learned both blocks %s after the workloads", took)
	l.routeIn("198.51.100.0/24", tor, "node1", "node2")
	up, s := l.established("node1", l.NodeDataDir("node1"))
	if !up[tor] {
		t.Errorf("node1's session to FRR is not up: %+v", s)
	}
}

// TestGoBGPPeer: gobgpd (the standalone GoBGP daemon) as an iBGP peer (AS 64512) of both
// nodes: it learns both blocks with the owners as next hops, and a prefix added with the
// gobgp CLI reaches both nodes' kernels via gobgpd.
func TestGoBGPPeer(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/bin/gobgpd", Package: "gobgpd"})
	l, ns, rtr, blocks := twoNodeLab(t, "gobgp", `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: gobgpd}
spec: {peerIP: ROUTER, asNumber: 64512}
`)
	dir := t.TempDir()
	conf := filepath.Join(dir, "gobgpd.toml")
	var nb strings.Builder
	for _, n := range []string{"172.31.1.10", "172.31.1.11"} {
		fmt.Fprintf(&nb, `[[neighbors]]
  [neighbors.config]
    neighbor-address = "%s"
    peer-as = 64512
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
`, n)
	}
	err := os.WriteFile(conf, []byte(`[global.config]
  as = 64512
  router-id = "`+rtr+`"
  local-address-list = ["`+rtr+`"]
`+nb.String()), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const api = "127.0.0.1:50061"
	daemon(t, ns, "gobgpd", []string{"/usr/bin/gobgpd", "-f", conf, "-p", "-l", "info", "--api-hosts", api, "--pprof-disable"})
	gobgp := func(args ...string) (string, string, int) {
		return l.Run("", append([]string{"exec", "gobgp", "--", "/usr/bin/gobgp", "-u", "127.0.0.1", "-p", "50061"}, args...)...)
	}
	took := labtest.Poll(t, "gobgpd learns both blocks from their owners", 40*time.Second, func() string {
		out, stderr, code := gobgp("global", "rib", "-j")
		if code != 0 {
			return stderr
		}
		var rib map[string][]struct {
			Attrs []struct {
				Type    int    `json:"type"`
				Nexthop string `json:"nexthop"`
			} `json:"attrs"`
		}
		if err := json.Unmarshal([]byte(out), &rib); err != nil {
			return err.Error() + ": " + out
		}
		got := map[string]string{}
		for p, paths := range rib {
			for _, x := range paths {
				for _, a := range x.Attrs {
					if a.Type == 3 { // NEXT_HOP
						got[p] = a.Nexthop
					}
				}
			}
		}
		want := map[string]string{labtest.BlockOf(l.WorkloadIP("default", "w1")): "172.31.1.10", labtest.BlockOf(l.WorkloadIP("default", "w2")): "172.31.1.11"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Sprintf("gobgpd has %v, want %v (blocks %v)", got, want, blocks)
		}
		return ""
	})
	t.Logf("gobgpd learned both blocks %s after the workloads", took)
	if out, stderr, code := gobgp("global", "rib", "add", "203.0.113.0/24", "-a", "ipv4", "nexthop", rtr); code != 0 {
		t.Fatalf("gobgp rib add: %s%s", out, stderr)
	}
	l.routeIn("203.0.113.0/24", rtr, "node1", "node2")
	_, s := l.established("node2", l.NodeDataDir("node2"))
	for _, p := range s.Peers {
		if p.Address == rtr && (p.State != "Established" || p.Type != "global" || p.Received != 1) {
			t.Errorf("node2's gobgpd row: %+v", p)
		}
	}
}

// TestBIRDRouteReflector: BIRD 2 as the route reflector (AS 64512, cluster 1.0.0.1) of
// three tabby nodes with the node-to-node mesh off: each node has the one session to BIRD,
// learns the others' blocks reflected with their owners as next hops, and workloads ping
// each other.
func TestBIRDRouteReflector(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	l := newLab(t)
	l.OK("up", "--nodes", "3", "--subnets", "1", "--agent-binary", bgpAgent(t))
	l.OK("host", "add", "rr", "--subnet", "1")
	ns, rr := l.hostAddr("rr")
	l.Apply(labtest.Pool + `---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: bird-rr}
spec: {peerIP: ` + rr + `, asNumber: 64512}
`)
	conf := `router id ` + rr + `;
protocol device {}
template bgp tabby {
  local ` + rr + ` as 64512;
  rr client; rr cluster id 1.0.0.1;
  hold time 9; keepalive time 3; connect retry time 1;
  graceful restart;
  direct;
  ipv4 { import all; export all; gateway direct; };
}
`
	for i := 1; i <= 3; i++ {
		conf += fmt.Sprintf("protocol bgp node%d from tabby { neighbor 172.31.1.%d as 64512; }\n", i, 9+i)
	}
	sock := startBIRD(t, ns, conf)
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := l.Run("", "exec", "rr", "--", "birdc", "-s", sock, "show", "route", "all")
			t.Logf("BIRD's routes:\n%s", out)
			out, _, _ = l.Tabbyctl("node1", "node", "status", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock"))
			t.Logf("node status on node1:\n%s", out)
		}
	})
	ips := map[int]netip.Addr{}
	for i := 1; i <= 3; i++ {
		l.OK("workload", "add", fmt.Sprintf("node%d", i), fmt.Sprintf("default/w%d", i))
		ips[i] = l.WorkloadIP("default", fmt.Sprintf("w%d", i))
	}
	took := labtest.Poll(t, "every node learns the others' blocks through BIRD", 40*time.Second, func() string {
		for i := 1; i <= 3; i++ {
			routes := l.GatewayRoutes(fmt.Sprintf("node%d", i))
			for j := 1; j <= 3; j++ {
				if want := fmt.Sprintf("172.31.1.%d", 9+j); j != i && routes[labtest.BlockOf(ips[j])] != want {
					return fmt.Sprintf("node%d: %s via %q, want %s", i, labtest.BlockOf(ips[j]), routes[labtest.BlockOf(ips[j])], want)
				}
			}
		}
		return ""
	})
	t.Logf("BIRD as route reflector: all blocks in every node's kernel %s after the last workload", took)
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("node%d", i)
		_, s := l.established(node, l.NodeDataDir(node))
		if rows := peerRows(s); len(rows) != 1 || rows[rr] != "global/Established" {
			t.Errorf("%s: peers %v, want only BIRD %s", node, rows, rr)
		}
		for j := 1; j <= 3; j++ {
			if i != j {
				l.Ping(fmt.Sprintf("default/w%d", i), ips[j].String())
			}
		}
	}
}

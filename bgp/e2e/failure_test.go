package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// hostAddr returns a lab host's namespace and address.
func (l *lab) hostAddr(name string) (netns, addr string) {
	l.t.Helper()
	for _, h := range l.State().Hosts {
		if h.Name == name {
			return h.Netns, h.Address.Addr().String()
		}
	}
	l.t.Fatalf("no host %s", name)
	return "", ""
}

// torBIRD is the configuration of a BIRD at tor, AS 65001, as eBGP ToR of the lab's nodes
// at the addresses nodes (AS 64512): it imports their routes and exports none; extra is
// added to it.
func torBIRD(tor string, nodes []string, extra string) string {
	conf := `router id ` + tor + `;
protocol device {}
template bgp tabby {
  local ` + tor + ` as 65001;
  hold time 9; keepalive time 3; connect retry time 1;
  graceful restart;
  ipv4 { import all; export none; };
}
` + extra
	for i, n := range nodes {
		conf += fmt.Sprintf("protocol bgp node%d from tabby { neighbor %s as 64512; }\n", i+1, n)
	}
	return conf
}

// startBIRD runs BIRD in a lab host namespace with conf (written to a temp dir); it is
// killed at cleanup and its log shown if the test failed. It returns the control socket.
func startBIRD(t testing.TB, netns, conf string) string {
	t.Helper()
	dir := t.TempDir()
	path, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startIn(t, netns, []string{"/usr/sbin/bird", "-f", "-c", path, "-s", sock, "-P", filepath.Join(dir, "bird.pid")}, filepath.Join(dir, "bird.log"))
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "bird.log"))
			t.Logf("bird log (%s):\n%s", netns, b)
		}
	})
	return sock
}

// TestFailures: three nodes with graceful restart off (--bgp-no-graceful-restart on every
// agent; they still sync at once, without End-of-RIB, which GoBGP sends only with GR).
//
//   - kill -9 of node3's agent: the kernel closes its connections, and the other nodes
//     withdraw its block at once (no graceful restart keeps it);
//   - node2's agent frozen (SIGSTOP: no FIN, no keepalives): node1 withdraws node2's block
//     when the hold time (9 s) runs out, and learns it again after SIGCONT;
//   - three misconfigured BGPPeers on node1 — a BIRD with another AS than the BGPPeer says,
//     a BIRD whose TCP MD5 password differs from the one in node1's password file, and an
//     address where nothing answers — are listed by tabbyctl node status, not Established,
//     each with its reason; node1's session to node2 stays Established and is not reset, and
//     a third BIRD with the right password (TCP MD5 works here) is Established.
func TestFailures(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	pwDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(pwDir, "bgp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pwDir, "bgp", "md5"), []byte("not-the-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pwDir, "bgp", "good"), []byte("the-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := newLab(t)
	l.OK("up", "--nodes", "3", "--subnets", "1", "--agent-binary", bgpAgent(t, "--bgp-no-graceful-restart", "--bgp-password-dir", pwDir))
	l.Apply(labtest.Pool)
	ips := map[int]netip.Addr{}
	for i := 1; i <= 3; i++ {
		l.OK("workload", "add", fmt.Sprintf("node%d", i), fmt.Sprintf("default/w%d", i))
		ips[i] = l.WorkloadIP("default", fmt.Sprintf("w%d", i))
	}
	nodeAddr := func(i int) string { return fmt.Sprintf("172.31.1.%d", 9+i) }
	routeOn := func(on, of int) string { return l.GatewayRoutes(fmt.Sprintf("node%d", on))[labtest.BlockOf(ips[of])] }
	labtest.Poll(t, "mesh converges", 40*time.Second, func() string {
		for i := 1; i <= 3; i++ {
			for j := 1; j <= 3; j++ {
				if i != j && routeOn(i, j) != nodeAddr(j) {
					return fmt.Sprintf("node%d: %s via %q", i, labtest.BlockOf(ips[j]), routeOn(i, j))
				}
			}
		}
		return ""
	})

	labtest.Poll(t, "every agent synced (End-of-RIB from every peer)", 20*time.Second, func() string {
		for i := 1; i <= 3; i++ {
			node := fmt.Sprintf("node%d", i)
			if _, s := l.established(node, l.NodeDataDir(node)); s == nil || !s.Synced {
				return node + " not synced"
			}
		}
		return ""
	})

	// kill -9 without graceful restart: node3's block goes at once.
	st := l.State()
	if err := syscall.Kill(st.Nodes[2].Agent.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := labtest.Poll(t, "node3's block withdrawn after kill -9", 9*time.Second, func() string {
		for _, i := range []int{1, 2} {
			if gw := routeOn(i, 3); gw != "" {
				return fmt.Sprintf("node%d still routes %s via %s", i, labtest.BlockOf(ips[3]), gw)
			}
		}
		return ""
	})
	t.Logf("kill -9 of node3's agent, no graceful restart: its block gone from node1 and node2 in %s", took.Round(time.Millisecond))

	// A frozen agent: withdrawn when the hold time runs out.
	pid2 := st.Nodes[1].Agent.PID
	if err := syscall.Kill(pid2, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid2, syscall.SIGCONT) })
	took = labtest.Poll(t, "node2's block withdrawn on node1 within the hold time", 9*time.Second+4*time.Second, func() string {
		if gw := routeOn(1, 2); gw != "" {
			return "node1 still routes node2's block via " + gw
		}
		return ""
	})
	t.Logf("node2's agent frozen: node1 withdrew its block after %s (hold time 9 s)", took.Round(time.Millisecond))
	if err := syscall.Kill(pid2, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	labtest.Poll(t, "node2's block back on node1 after SIGCONT", 30*time.Second, func() string {
		if gw := routeOn(1, 2); gw != nodeAddr(2) {
			return fmt.Sprintf("node1 routes node2's block via %q", gw)
		}
		return ""
	})
	l.Ping("default/w1", ips[2].String())

	// The misconfigured peers: two BIRDs (AS 65001), one with a TCP MD5 password. (Each its
	// own host: BIRD keys its one listening socket, which would then refuse unsigned SYNs.)
	l.OK("host", "add", "bad", "--subnet", "1")
	l.OK("host", "add", "md5", "--subnet", "1")
	l.OK("host", "add", "md5ok", "--subnet", "1")
	badNS, bad := l.hostAddr("bad")
	md5NS, bad2 := l.hostAddr("md5")
	goodNS, good := l.hostAddr("md5ok")
	for _, b := range []struct{ ns, addr, extra string }{{badNS, bad, ""}, {md5NS, bad2, `password "the-secret";`}, {goodNS, good, `password "the-secret";`}} {
		startBIRD(t, b.ns, `router id `+b.addr+`;
protocol device {}
protocol bgp node1 {
  local `+b.addr+` as 65001; neighbor 172.31.1.10 as 64512; `+b.extra+`
  hold time 9; keepalive time 3; connect retry time 1;
  ipv4 { import all; export none; };
}
`)
	}
	_, before := l.established("node1", l.NodeDataDir("node1"))
	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: wrong-as}
spec: {node: node1, peerIP: ` + bad + `, asNumber: 65002}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: wrong-password}
spec: {node: node1, peerIP: ` + bad2 + `, asNumber: 65001, password: {secretKeyRef: {name: bgp, key: md5}}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: nobody}
spec: {node: node1, peerIP: 172.31.1.249, asNumber: 65003}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: right-password}
spec: {node: node1, peerIP: ` + good + `, asNumber: 65001, password: {secretKeyRef: {name: bgp, key: good}}}
`)
	want := map[string]string{
		bad:            "as number mismatch",
		bad2:           "md5",
		"172.31.1.249": "failed to connect",
	}
	var rows string
	labtest.Poll(t, "node status gives each misconfigured peer's reason", 30*time.Second, func() string {
		s, err := l.status("node1", l.NodeDataDir("node1"))
		if err != nil {
			return err.Error()
		}
		rows = fmt.Sprintf("%+v", s.Peers)
		seen := 0
		for _, p := range s.Peers {
			w, ok := want[p.Address]
			if !ok {
				// The mesh peers and the BIRD with the right password are up (node3 is dead).
				if p.State != "Established" && p.Address != nodeAddr(3) {
					return fmt.Sprintf("mesh peer %s is %s", p.Address, p.State)
				}
				continue
			}
			seen++
			if p.State == "Established" || p.Info == "" || p.Info == "no session yet" || !strings.Contains(strings.ToLower(p.Info), w) {
				return fmt.Sprintf("peer %s: state %s, info %q, want a reason containing %q", p.Address, p.State, p.Info, w)
			}
		}
		if r := peerRows(s)[good]; r != "node specific/Established" {
			return fmt.Sprintf("the peer with the right password: %q", r)
		}
		if seen != len(want) {
			return fmt.Sprintf("%d of the misconfigured peers listed: %s", seen, rows)
		}
		return ""
	})
	t.Logf("node1's peers with three misconfigured ones: %s", rows)
	t.Logf("tabbyctl node status on node1:\n%s", l.OK("exec", "node1", "--", labtest.Bin(t, "tabbyctl"), "node", "status",
		"--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock")))
	_, after := l.established("node1", l.NodeDataDir("node1"))
	for _, p := range before.Peers {
		if p.State != "Established" {
			continue
		}
		for _, q := range after.Peers {
			if p.Address == q.Address && (q.State != "Established" || !q.Since.Equal(p.Since)) {
				t.Errorf("node1's session to %s was disturbed by the misconfigured peers: %+v, then %+v", p.Address, p, q)
			}
		}
	}
	l.Ping("default/w1", ips[2].String())

}

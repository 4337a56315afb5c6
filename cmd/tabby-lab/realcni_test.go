package main

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labstate"
)

// These tests run labs the way a user does: real agents (tabby-node) and the real
// tabby-cni, both built into binDir by TestMain.

const labPool = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-v4}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
`

// felixRoutes lists a lab node's routes of felix's protocol (116) to single addresses:
// destination → device.
func felixRoutes(t *testing.T, l *lab, node string) map[string]string {
	t.Helper()
	var routes []struct{ Dst, Dev string }
	if err := json.Unmarshal([]byte(l.ok("exec", node, "--", "ip", "-j", "route", "show", "proto", "116")), &routes); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range routes {
		if r.Dev != "" {
			out[r.Dst] = r.Dev
		}
	}
	return out
}

// waitRoute polls a node's felix routes until the route to addr is there through dev
// (dev "" means: until it is gone), and fails the test if that takes longer than within.
func waitRoute(t *testing.T, l *lab, node string, addr netip.Addr, dev string, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		routes := felixRoutes(t, l, node)
		if routes[addr.String()] == dev {
			t.Logf("%s: route to %s through %q after %s", node, addr, dev, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s: route to %s through %q not within %s; felix's routes: %v", node, addr, dev, within, routes)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// workload returns a lab workload's address and host veth (from its endpoint).
func workload(t testing.TB, l *lab, namespace, name string) (netip.Addr, string) {
	t.Helper()
	var s labstate.Status
	if err := json.Unmarshal([]byte(l.ok("status", "-o", "json")), &s); err != nil {
		t.Fatal(err)
	}
	var w struct {
		Spec struct{ InterfaceName string } `json:"spec"`
	}
	if err := json.Unmarshal([]byte(l.ok("ctl", "get", "workloadendpoints", "-n", namespace, name, "-o", "json")), &w); err != nil {
		t.Fatal(err)
	}
	for _, ws := range s.Workloads {
		if ws.Namespace == namespace && ws.Pod == name && len(ws.IPs) == 1 {
			return ws.IPs[0].Addr(), w.Spec.InterfaceName
		}
	}
	t.Fatalf("lab has no workload %s/%s with one address: %+v", namespace, name, s.Workloads)
	return netip.Addr{}, ""
}

// TestWorkloadsOnANode: two workloads on one node, attached by the real plugin, reach
// each other and the node; the agent's routes appear within a second of ADD and go on
// DEL; a route deleted by hand comes back, and so does one deleted while the agent was
// stopped, once it runs again (the routes it had were left in place meanwhile); down
// leaves the machine as it was.
func TestWorkloadsOnANode(t *testing.T) {
	needLab(t)
	before := takeSnapshot(t)
	l := newLab(t)
	l.ok("up", "--nodes", "2")
	if _, stderr, code := l.run(labPool, "ctl", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply pool: %s", stderr)
	}

	l.ok("workload", "add", "node1", "default/web1", "--labels", "app=web")
	ip1, veth1 := workload(t, l, "default", "web1")
	waitRoute(t, l, "node1", ip1, veth1, time.Second)
	l.ok("workload", "add", "node1", "default/web2")
	ip2, veth2 := workload(t, l, "default", "web2")
	waitRoute(t, l, "node1", ip2, veth2, time.Second)
	if veth1 == veth2 || ip1 == ip2 {
		t.Fatalf("workloads share %s/%s", ip1, veth1)
	}
	l.ping("default/web1", ip2.String())
	l.ping("default/web2", ip1.String())
	l.ping("default/web1", "172.31.1.10") // its node
	l.ping("node1", ip2.String())
	assertContains(t, "endpoints", l.ok("ctl", "get", "workloadendpoints", "-A", "-o", "wide"), "web1", "web2", veth1, "app=web")

	// A route deleted by hand: the agent puts it back.
	l.ok("exec", "node1", "--", "ip", "route", "del", ip1.String()+"/32")
	waitRoute(t, l, "node1", ip1, veth1, time.Second)
	l.ping("default/web2", ip1.String())

	// The agent restarted: nothing it programmed goes while it is away, and a route
	// deleted meanwhile is back once it has synced.
	st, err := labstate.Load(l.stateDir())
	if err != nil {
		t.Fatal(err)
	}
	n := st.Node("node1")
	signalAll([]int{n.Agent.PID}, syscall.SIGTERM)
	if left := waitGone([]int{n.Agent.PID}, 30*time.Second); len(left) > 0 {
		t.Fatalf("node1's agent (pid %d) did not stop", n.Agent.PID)
	}
	if routes := felixRoutes(t, l, "node1"); routes[ip1.String()] != veth1 || routes[ip2.String()] != veth2 {
		t.Errorf("routes after the agent stopped: %v", routes)
	}
	l.ping("default/web1", ip2.String())
	l.ok("exec", "node1", "--", "ip", "route", "del", ip2.String()+"/32")
	p, err := startDetached(n.Netns, agentArgv(st, n), filepath.Join(st.StateDir, n.Name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	n.Agent = p.Process
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, l, "node1", ip2, veth2, 30*time.Second)
	l.ping("default/web1", ip2.String())

	// DEL: the route goes with the workload.
	l.ok("workload", "del", "default/web1")
	waitRoute(t, l, "node1", ip1, "", time.Second)
	l.noPing("default/web2", ip1.String())
	l.ping("default/web2", "172.31.1.10")

	l.ok("down")
	assertGone(t, before, l)
}

package main

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labstate"
	"github.com/tabby-net/tabby/internal/labtest"
)

// These tests run labs the way a user does: real agents (tabby-node) and the real
// tabby-cni, both built by internal/labtest.

// waitRoute polls a node's felix routes until the route to addr is there through dev
// (dev "" means: until it is gone), and fails the test if that takes longer than within.
func waitRoute(t *testing.T, l *labtest.Lab, node string, addr netip.Addr, dev string, within time.Duration) {
	t.Helper()
	took := labtest.Poll(t, fmt.Sprintf("%s: route to %s through %q", node, addr, dev), within, func() string {
		if routes := l.DeviceRoutes(node); routes[addr.String()] != dev {
			return fmt.Sprintf("felix's routes: %v", routes)
		}
		return ""
	})
	t.Logf("%s: route to %s through %q after %s", node, addr, dev, took.Round(time.Millisecond))
}

// workload returns a lab workload's address and host veth (from its endpoint).
func workload(t testing.TB, l *labtest.Lab, namespace, name string) (netip.Addr, string) {
	t.Helper()
	return l.WorkloadIP(namespace, name), l.WorkloadVeth(namespace, name)
}

// TestWorkloadsOnANode: two workloads on one node, attached by the real plugin, reach
// each other and the node; the agent's routes appear within a second of ADD and go on
// DEL; a route deleted by hand comes back, and so does one deleted while the agent was
// stopped, once it runs again (the routes it had were left in place meanwhile); down
// leaves the machine as it was.
func TestWorkloadsOnANode(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "2")
	if _, stderr, code := l.Run(labtest.Pool, "ctl", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply pool: %s", stderr)
	}

	l.OK("workload", "add", "node1", "default/web1", "--labels", "app=web")
	ip1, veth1 := workload(t, l, "default", "web1")
	waitRoute(t, l, "node1", ip1, veth1, time.Second)
	l.OK("workload", "add", "node1", "default/web2")
	ip2, veth2 := workload(t, l, "default", "web2")
	waitRoute(t, l, "node1", ip2, veth2, time.Second)
	if veth1 == veth2 || ip1 == ip2 {
		t.Fatalf("workloads share %s/%s", ip1, veth1)
	}
	l.Ping("default/web1", ip2.String())
	l.Ping("default/web2", ip1.String())
	l.Ping("default/web1", "172.31.1.10") // its node
	l.Ping("node1", ip2.String())
	assertContains(t, "endpoints", l.OK("ctl", "get", "workloadendpoints", "-A", "-o", "wide"), "web1", "web2", veth1, "app=web")

	// A route deleted by hand: the agent puts it back.
	l.OK("exec", "node1", "--", "ip", "route", "del", ip1.String()+"/32")
	waitRoute(t, l, "node1", ip1, veth1, time.Second)
	l.Ping("default/web2", ip1.String())

	// The agent restarted: nothing it programmed goes while it is away, and a route
	// deleted meanwhile is back once it has synced.
	st, err := labstate.Load(l.StateDir())
	if err != nil {
		t.Fatal(err)
	}
	n := st.Node("node1")
	signalAll([]int{n.Agent.PID}, syscall.SIGTERM)
	if left := waitGone([]int{n.Agent.PID}, 30*time.Second); len(left) > 0 {
		t.Fatalf("node1's agent (pid %d) did not stop", n.Agent.PID)
	}
	if routes := l.DeviceRoutes("node1"); routes[ip1.String()] != veth1 || routes[ip2.String()] != veth2 {
		t.Errorf("routes after the agent stopped: %v", routes)
	}
	l.Ping("default/web1", ip2.String())
	l.OK("exec", "node1", "--", "ip", "route", "del", ip2.String()+"/32")
	p, err := startDetached(n.Netns, agentArgv(st, n), filepath.Join(st.StateDir, n.Name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	n.Agent = p.Process
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, l, "node1", ip2, veth2, 30*time.Second)
	l.Ping("default/web1", ip2.String())

	// DEL: the route goes with the workload.
	l.OK("workload", "del", "default/web1")
	waitRoute(t, l, "node1", ip1, "", time.Second)
	l.NoPing("default/web2", ip1.String())
	l.Ping("default/web2", "172.31.1.10")

	l.OK("down")
	assertGone(t, before, l)
}

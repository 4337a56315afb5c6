package ops

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/labtest"
)

// staggeredAgent is an agent program for tabby-lab up: node2's agent starts delay after
// the others, and asks for the IPv4 pool 10.245.0.0/16 instead of the lab's 10.244.0.0/16
// (a later flag wins), so the test can tell which agent created the pool.
func staggeredAgent(t *testing.T, delay time.Duration) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent")
	script := fmt.Sprintf(`#!/bin/sh
case " $* " in
*" --node-name node2 "*) sleep %.1f; exec %s "$@" --default-ipv4-pool-cidr 10.245.0.0/16 ;;
esac
exec %[2]s "$@"
`, delay.Seconds(), labtest.Bin(t, "tabby-node"))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// pools lists the lab's IP pools.
func pools(t *testing.T, l *labtest.Lab) []api.IPPool {
	t.Helper()
	var list struct{ Items []api.IPPool }
	if err := json.Unmarshal([]byte(l.OK("ctl", "get", "ippools", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// TestFirstBootPool: agents starting on an empty datastore, node2's 0, 1, 2 or 5 s after
// node1's and with another CIDR, create exactly one IPv4 pool, default-ipv4-ippool
// (Calico's fields: natOutgoing on, the lab's ipipMode Never): one agent logs that it
// created it, the other that a pool was there. Without any manifest, workloads on both
// nodes get addresses from it and reach each other.
func TestFirstBootPool(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Second, 2 * time.Second, 5 * time.Second} {
		t.Run(fmt.Sprintf("node2+%v", delay), func(t *testing.T) {
			l := labtest.New(t)
			l.OK("up", "--nodes", "2", "--agent-binary", staggeredAgent(t, delay))
			var got []api.IPPool
			labtest.Poll(t, "a default pool", 30*time.Second, func() string {
				if got = pools(t, l); len(got) == 0 {
					return "no pool"
				}
				return ""
			})
			// Both agents are past their first-boot step once each has logged it.
			logs := map[string]string{}
			labtest.Poll(t, "both agents past first boot", 30*time.Second, func() string {
				for _, n := range []string{"node1", "node2"} {
					b, _ := os.ReadFile(filepath.Join(l.StateDir(), n+".log"))
					logs[n] = string(b)
					if !strings.Contains(logs[n], "created the default one") && !strings.Contains(logs[n], "not creating a default IP pool") {
						return n + " has not logged its first-boot step"
					}
				}
				return ""
			})
			if got = pools(t, l); len(got) != 1 {
				t.Fatalf("%d pools, want 1: %+v", len(got), got)
			}
			p := got[0]
			s := p.Spec
			if p.Name != "default-ipv4-ippool" || (s.CIDR != "10.244.0.0/16" && s.CIDR != "10.245.0.0/16") ||
				!s.NATOutgoing || s.IPIPMode != api.EncapNever || s.VXLANMode != api.EncapNever || s.BlockSize != 26 {
				t.Fatalf("pool: %s %+v", p.Name, s)
			}
			creators := 0
			for n, log := range logs {
				if strings.Contains(log, "created the default one") {
					creators++
					t.Logf("%s created %s (%s)", n, p.Name, s.CIDR)
				}
			}
			if creators != 1 {
				t.Fatalf("%d agents logged creating the pool, want 1", creators)
			}
			if delay != time.Second {
				return
			}
			// No manifest: workloads get addresses from the pool and reach each other.
			l.OK("workload", "add", "node1", "default/a")
			l.OK("workload", "add", "node2", "default/b")
			a, b := l.WorkloadIP("default", "a"), l.WorkloadIP("default", "b")
			for _, ip := range []string{a.String(), b.String()} {
				if !strings.HasPrefix(ip, strings.TrimSuffix(s.CIDR, "0.0/16")) {
					t.Errorf("workload address %s is not in %s", ip, s.CIDR)
				}
			}
			labtest.Poll(t, "a reaches b across nodes", 30*time.Second, func() string {
				if out, stderr, code := l.Run("", "exec", "default/a", "--", "ping", "-c", "1", "-W", "1", b.String()); code != 0 {
					return out + stderr
				}
				return ""
			})
			l.Ping("default/b", a.String())
		})
	}
}

// TestNoDefaultPools: a lab up with --no-default-pools (its agents with
// --no-default-pools) has no pool once its agents are ready, and a workload add fails
// for want of one.
func TestNoDefaultPools(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "1", "--no-default-pools")
	sock := filepath.Join(l.NodeDataDir("node1"), "status.sock")
	labtest.Poll(t, "node1 ready", 60*time.Second, func() string {
		out, stderr, code := l.Tabbyctl("node1", "node", "readiness", "--socket", sock)
		if code != 0 {
			return out + stderr
		}
		return ""
	})
	if got := pools(t, l); len(got) != 0 {
		t.Fatalf("pools with --no-default-pools: %+v", got)
	}
	if stderr := l.Fails("workload", "add", "node1", "default/a"); !strings.Contains(stderr, "IPPool") {
		t.Errorf("workload add without a pool: %s", stderr)
	}
}

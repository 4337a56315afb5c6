package dist

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/nodestatus"
	"github.com/tabby-net/tabby/internal/testenv"
)

// capBits are the Linux capability numbers of the names a unit may give.
var capBits = map[string]uint{"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}

// unitCaps returns the CapabilityBoundingSet of a unit of dist/systemd.
func unitCaps(t *testing.T, unit string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no CapabilityBoundingSet", unit)
	}
	return strings.Fields(string(m[1]))
}

// TestUnitCapabilities: tabby-node, run as the unit runs it (root, with only the unit's
// CapabilityBoundingSet and no new privileges, through setpriv), does its whole job in a
// lab: both agents become ready (routes, iptables and ipsets, nftables, DNS on port 53),
// their BGP session (port 179) is Established, workloads on the two nodes reach each
// other, and a Service's name resolves. Each agent's effective capabilities are exactly
// the unit's.
func TestUnitCapabilities(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "setpriv", Package: "util-linux"}, testenv.Tool{Cmd: "dig", Package: "dnsutils"})
	caps := unitCaps(t, "tabby-node.service")
	if other := unitCaps(t, "tabby-node@.service"); strings.Join(other, " ") != strings.Join(caps, " ") {
		t.Errorf("tabby-node@.service has the capabilities %v, tabby-node.service %v", other, caps)
	}
	var want uint64
	var setpriv []string
	for _, c := range caps {
		bit, ok := capBits[c]
		if !ok {
			t.Fatalf("tabby-node.service: capability %s unknown to this test", c)
		}
		want |= 1 << bit
		setpriv = append(setpriv, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	l := labtest.New(t)
	agent := filepath.Join(t.TempDir(), "agent")
	script := fmt.Sprintf("#!/bin/sh\nexec setpriv --no-new-privs --bounding-set=-all,%s --inh-caps=-all -- %s \"$@\"\n",
		strings.Join(setpriv, ","), labtest.Bin(t, "tabby-node"))
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	l.OK("up", "--nodes", "2", "--agent-binary", agent)

	for _, n := range l.State().Nodes {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.Agent.PID))
		m := regexp.MustCompile(`(?m)^CapEff:\s*([0-9a-f]+)$`).FindSubmatch(status)
		if m == nil {
			t.Fatalf("%s's agent (pid %d): no CapEff in /proc/PID/status:\n%s", n.Name, n.Agent.PID, status)
		}
		if eff, _ := strconv.ParseUint(string(m[1]), 16, 64); eff != want {
			t.Errorf("%s's agent runs with capabilities %#x, want %#x (%v)", n.Name, eff, want, caps)
		}
		sock := filepath.Join(l.NodeDataDir(n.Name), "status.sock")
		took := labtest.Poll(t, n.Name+" ready, BGP Established", 60*time.Second, func() string {
			out, stderr, code := l.Tabbyctl(n.Name, "node", "status", "--socket", sock, "-o", "json")
			if code != 0 {
				return stderr
			}
			var s nodestatus.Status
			if err := json.Unmarshal([]byte(out), &s); err != nil {
				return err.Error()
			}
			if !s.Ready || len(s.Peers) != 1 || s.Peers[0].State != "Established" {
				return out
			}
			return ""
		})
		t.Logf("%s: ready with BGP Established after %v, capabilities %v", n.Name, took.Round(time.Millisecond), caps)
	}

	l.OK("workload", "add", "node1", "default/web", "--labels", "app=web")
	l.OK("workload", "add", "node2", "default/client")
	web := l.WorkloadIP("default", "web")
	labtest.Poll(t, "client reaches web across nodes", 30*time.Second, func() string {
		if out, stderr, code := l.Run("", "exec", "default/client", "--", "ping", "-c", "1", "-W", "1", web.String()); code != 0 {
			return out + stderr
		}
		return ""
	})
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{port: 80}]}
`)
	labtest.Poll(t, "web.default.svc.cluster.local resolves on node2's DNS server", 30*time.Second, func() string {
		out, stderr, _ := l.Run("", "exec", "default/client", "--", "dig", "+short", "+time=1", "+tries=1", "@169.254.20.10", "web.default.svc.cluster.local")
		if strings.TrimSpace(out) == "" {
			return out + stderr
		}
		return ""
	})
}

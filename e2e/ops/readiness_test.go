package ops

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

func ipipPool(mode string) string {
	return `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-ipip}
spec: {cidr: 10.245.0.0/16, blockSize: 26, ipipMode: ` + mode + `}
`
}

// TestReadinessWithoutBGP runs one agent with BGP off on this kernel (no ipip): its status
// socket is served all the same; `tabbyctl node readiness` says ready once every subsystem
// has synced; an ipipMode Always pool makes it not ready with a reason naming the pool (and
// `node status` shows the problem, BGP off); the pool back to Never makes it ready; the
// pool set to Always again is checked again (not ready); the pool deleted, ready again.
func TestReadinessWithoutBGP(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "1", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, "--bgp=false", "--route-refresh-interval", "2s"))
	if out, _, code := l.Run("", "exec", "node1", "--", "ip", "link", "add", "name", "tbyprobe", "type", "ipip"); code == 0 {
		t.Skipf("this kernel has ipip (%s): nothing to prove here", out)
	}
	sock := filepath.Join(l.NodeDataDir("node1"), "status.sock")
	ctl := func(args ...string) (string, int) {
		out, stderr, code := l.Tabbyctl("node1", append([]string{"node"}, args...)...)
		return out + stderr, code
	}
	readiness := func() (string, int) { return ctl("readiness", "--socket", sock) }
	waitReady := func(what string) {
		t.Helper()
		took := labtest.Poll(t, what, 30*time.Second, func() string {
			if out, code := readiness(); code != 0 || !strings.Contains(out, "is ready") {
				return out
			}
			return ""
		})
		t.Logf("%s after %v", what, took.Round(time.Millisecond))
	}
	const reason = "encapsulation: IPIP pools lab-ipip need the kernel's ipip support"
	waitNotReady := func(what string) {
		t.Helper()
		var last string
		took := labtest.Poll(t, what, 30*time.Second, func() string {
			out, code := readiness()
			last = out
			if code == 0 || !strings.Contains(out, reason) {
				return out
			}
			return ""
		})
		t.Logf("%s after %v:\n%s", what, took.Round(time.Millisecond), last)
	}

	waitReady("ready without BGP, with the lab's default pool (no encapsulation)")
	l.Apply(ipipPool("Always"))
	waitNotReady("not ready with an IPIP pool")
	out, code := ctl("status", "--socket", sock)
	if code != 0 || !strings.Contains(out, "BGP off") || !strings.Contains(out, "Problem: "+reason) || !strings.Contains(out, "Readiness: not ready") {
		t.Fatalf("node status without BGP (exit %d):\n%s", code, out)
	}
	t.Logf("node status:\n%s", out)

	l.Apply(ipipPool("Never"))
	waitReady("ready with the pool at ipipMode Never")
	l.Apply(ipipPool("Always"))
	waitNotReady("not ready again with the pool back at Always")

	// Remove the pool: at ipipMode Never no pool needs node1's tunnel address, so the agent
	// releases it and clears it from the Node; then the pool guard lets the pool go.
	labtest.Poll(t, "node1's IPIP tunnel address allocated", 30*time.Second, func() string {
		if y := l.OK("ctl", "get", "node", "node1", "-o", "yaml"); !strings.Contains(y, "ipv4IPIPTunnelAddr") {
			return y
		}
		return ""
	})
	l.Apply(ipipPool("Never"))
	waitReady("ready with the pool at Never again")
	labtest.Poll(t, "node1's IPIP tunnel address released", 30*time.Second, func() string {
		if y := l.OK("ctl", "get", "node", "node1", "-o", "yaml"); strings.Contains(y, "ipv4IPIPTunnelAddr") {
			return y
		}
		return ""
	})
	l.OK("ctl", "delete", "ippool", "lab-ipip")
	waitReady("ready with the pool deleted")
}

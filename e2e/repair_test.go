package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestRepairWorkloadVeth: a workload's host veth set down by hand (the kernel drops its
// route; the workload is cut off) is set up again by its node's agent, as it restores a
// deleted route, and traffic from a workload on another node reaches it again. Three
// rounds, the veth set down again at once after the first repair and after a pause.
func TestRepairWorkloadVeth(t *testing.T) {
	labtest.Need(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "shop/web")
	l.OK("workload", "add", "node2", "shop/client")
	web := l.WorkloadIP("shop", "web").String()
	veth := l.WorkloadVeth("shop", "web")
	labtest.Poll(t, "client reaches web", 30*time.Second, func() string {
		if out, _, code := l.Run("", "exec", "shop/client", "--", "ping", "-c1", "-W1", web); code != 0 {
			return out
		}
		return ""
	})
	for round, pause := range []time.Duration{0, 0, 2 * time.Second} {
		time.Sleep(pause) // the gap swept between repairs, not a wait for a result
		l.OK("exec", "node1", "--", "ip", "link", "set", veth, "down")
		took := labtest.Poll(t, fmt.Sprintf("round %d: %s up again", round, veth), 20*time.Second, func() string {
			out := l.OK("exec", "node1", "--", "ip", "-o", "link", "show", veth)
			if !strings.Contains(out, ",UP") {
				return out
			}
			return ""
		})
		labtest.Poll(t, fmt.Sprintf("round %d: client reaches web again", round), 20*time.Second, func() string {
			if out, _, code := l.Run("", "exec", "shop/client", "--", "ping", "-c1", "-W1", web); code != 0 {
				return out
			}
			return ""
		})
		t.Logf("round %d: %s up again after %v", round, veth, took)
	}
}

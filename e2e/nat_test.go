package e2e

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestNATOutgoing: a workload of a pool with natOutgoing pings an "internet" host on a
// subnet of its own behind the lab's router (which knows no pod routes): a capture on the
// router's port to that host shows the echo request with node1's address as its source,
// and the reply comes back. With natOutgoing off, the request arrives with the workload's
// own address and the reply cannot come back (the router has no route to the pool).
func TestNATOutgoing(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "1", "--subnets", "1")
	l.Apply(labtest.VXLANPool("Never", "true"))
	l.OK("host", "add", "inet", "--subnet", "9")
	l.OK("workload", "add", "node1", "default/w1")
	w1 := l.WorkloadIP("default", "w1")
	inet := netip.MustParseAddr("172.31.9.200")
	node1 := l.State().Nodes[0].Address.Addr()
	pingInet := func() (string, bool) {
		out, stderr, code := l.Run("", "exec", "default/w1", "--", "ping", "-c", "1", "-W", "1", inet.String())
		return out + stderr, code == 0
	}
	took := labtest.Poll(t, "w1 reaches the internet host through natOutgoing", 30*time.Second, func() string {
		if out, ok := pingInet(); !ok {
			return out
		}
		return ""
	})
	t.Logf("natOutgoing in effect %v after the workload was added", took.Round(time.Millisecond))
	request := func(src netip.Addr) string {
		return `IP ` + regexp.QuoteMeta(src.String()) + ` > ` + regexp.QuoteMeta(inet.String()) + `: ICMP echo request`
	}
	c := l.StartCapture("h-inet")
	if out, ok := pingInet(); !ok {
		t.Fatalf("ping with natOutgoing: %s", out)
	}
	lines := c.Stop(t, request(node1))
	if n := labtest.Count(lines, request(w1)); n != 0 {
		t.Errorf("natOutgoing: %d requests arrived with the workload's address; capture:\n%s", n, strings.Join(lines, "\n"))
	}

	l.Apply(labtest.VXLANPool("Never", "false"))
	labtest.Poll(t, "natOutgoing state gone from node1", 30*time.Second, func() string {
		out, _, _ := l.Run("", "exec", "node1", "--", "ipset", "list", "-n")
		if strings.Contains(out, "tby-masq-pools") {
			return "ipset tby-masq-pools still there"
		}
		return ""
	})
	c = l.StartCapture("h-inet")
	if out, ok := pingInet(); ok {
		t.Errorf("without natOutgoing the reply came back across a router without pod routes: %s", out)
	}
	lines = c.Stop(t, request(w1))
	if n := labtest.Count(lines, request(node1)); n != 0 {
		t.Errorf("without natOutgoing: %d requests still masqueraded; capture:\n%s", n, strings.Join(lines, "\n"))
	}
}

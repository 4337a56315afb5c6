package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestIPIPWithoutKernelSupport runs on a kernel without ipip (this build machine's): an
// IPIP pool with ipipMode Always gets the node an IPIP tunnel address from IPAM, recorded
// on its Node; `tabbyctl node status` names the pool in an encapsulation problem; and
// VXLAN traffic between workloads on two nodes keeps flowing. On a kernel with ipip it
// skips (internal/vmtest's TestIPIPTunnelVM covers tunl0 there).
func TestIPIPWithoutKernelSupport(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	if out, _, code := l.Run("", "exec", "node1", "--", "ip", "link", "add", "name", "tbyprobe", "type", "ipip"); code == 0 {
		t.Skipf("this kernel has ipip (%s): nothing to prove here", out)
	}
	l.Apply(labtest.VXLANPool("Always", "false"))
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	w2 := l.WorkloadIP("default", "w2")
	labtest.Poll(t, "w1 reaches w2 over VXLAN", 30*time.Second, func() string {
		if out, stderr, code := l.Run("", "exec", "default/w1", "--", "ping", "-c", "1", "-W", "1", w2.String()); code != 0 {
			return out + stderr
		}
		return ""
	})
	l.Apply(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-ipip}
spec: {cidr: 10.245.0.0/16, blockSize: 26, ipipMode: Always}
`)
	var status string
	took := labtest.Poll(t, "node status names the IPIP pool", 30*time.Second, func() string {
		out, stderr, code := l.Tabbyctl("node1", "node", "status",
			"--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock"))
		status = out
		if code != 0 {
			return stderr
		}
		if !strings.Contains(out, "Problem: encapsulation: IPIP pools lab-ipip need the kernel's ipip support") {
			return "no encapsulation problem line:\n" + out
		}
		return ""
	})
	t.Logf("status names the pool %v after it was applied:\n%s", took.Round(time.Millisecond), status)
	labtest.Poll(t, "IPIP tunnel address on node1's Node", 30*time.Second, func() string {
		out, stderr, _ := l.Run("", "ctl", "get", "node", "node1", "-o", "yaml")
		if !strings.Contains(out, "ipv4IPIPTunnelAddr: 10.245.") {
			return out + stderr
		}
		return ""
	})
	l.Ping("default/w1", w2.String())
	l.Ping("default/w2", l.WorkloadIP("default", "w1").String())
}

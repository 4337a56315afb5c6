package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIPIPWithoutKernelSupport runs on a kernel without ipip (this build machine's): an
// IPIP pool with ipipMode Always gets the node an IPIP tunnel address from IPAM, recorded
// on its Node; `tabbyctl node status` names the pool in an encapsulation problem; and
// VXLAN traffic between workloads on two nodes keeps flowing. On a kernel with ipip it
// skips (internal/vmtest's TestIPIPTunnelVM covers tunl0 there).
func TestIPIPWithoutKernelSupport(t *testing.T) {
	needRoot(t)
	l := newLab(t)
	l.ok("up", "--nodes", "2", "--subnets", "1", "--agent-binary", filepath.Join(binDir, "tabby-node-bgp"))
	if out, _, code := l.run("", "exec", "node1", "--", "ip", "link", "add", "name", "tbyprobe", "type", "ipip"); code == 0 {
		t.Skipf("this kernel has ipip (%s): nothing to prove here", out)
	}
	l.apply(vxlanPool("Always", "false"))
	l.ok("workload", "add", "node1", "default/w1")
	l.ok("workload", "add", "node2", "default/w2")
	w2 := l.workloadIP("default", "w2")
	poll(t, "w1 reaches w2 over VXLAN", 30*time.Second, func() string {
		if out, stderr, code := l.run("", "exec", "default/w1", "--", "ping", "-c", "1", "-W", "1", w2.String()); code != 0 {
			return out + stderr
		}
		return ""
	})
	l.apply(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-ipip}
spec: {cidr: 10.245.0.0/16, blockSize: 26, ipipMode: Always}
`)
	var status string
	took := poll(t, "node status names the IPIP pool", 30*time.Second, func() string {
		out, stderr, code := l.run("", "exec", "node1", "--", filepath.Join(binDir, "tabbyctl"), "node", "status",
			"--socket", filepath.Join(l.nodeDataDir("node1"), "status.sock"))
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
	poll(t, "IPIP tunnel address on node1's Node", 30*time.Second, func() string {
		out, stderr, _ := l.run("", "ctl", "get", "node", "node1", "-o", "yaml")
		if !strings.Contains(out, "ipv4IPIPTunnelAddr: 10.245.") {
			return out + stderr
		}
		return ""
	})
	l.ping("default/w1", w2)
	l.ping("default/w2", l.workloadIP("default", "w1"))
}

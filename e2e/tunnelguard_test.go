package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/labtest"
)

// vxlanInject sends count VXLAN packets (tabby's VNI, to port 4789) to node from the lab
// namespace it runs in, each carrying an ICMP echo from src to dst in an Ethernet frame
// to mac (the node's VXLAN device): what anyone on the underlay can send. With IPv6
// addresses, it is VXLAN over IPv6 carrying ICMPv6 echoes.
const vxlanInject = `
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
src, dst, mac, node, count = sys.argv[1:6]
v6 = ":" in src
icmp = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0x7ab, 1) + b"tabby tunnel guard"
if v6:
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    icmp = icmp[:2] + struct.pack("!H", csum(s6 + d6 + struct.pack("!I3xB", len(icmp), 58) + icmp)) + icmp[4:]
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, s6, d6)
else:
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex(mac.replace(":", "")) + bytes.fromhex("02aabbccddee") + (b"\x86\xdd" if v6 else b"\x08\x00")
vxlan = struct.pack("!II", 0x08000000, 4096 << 8)
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(count)):
    s.sendto(vxlan + eth + ip + icmp, (node, 4789))
`

// TestTunnelGuard: with a VXLAN pool, a namespace on the underlay that is not a node sends
// node1 VXLAN packets carrying ICMP echoes to node1's workload, as if from node2's
// workload. node1 drops them (its workload's ICMP counters do not move), while the two
// workloads still ping each other through the tunnel.
func TestTunnelGuard(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.VXLANPool("Always", "false"))
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	l.OK("host", "add", "outside")
	w1, w2 := l.WorkloadIP("default", "w1").String(), l.WorkloadIP("default", "w2").String()
	node1 := l.State().Nodes[0].Address.Addr().String()
	ping := func() string {
		out, _, code := l.Run("", "exec", "default/w2", "--", "ping", "-c", "1", "-W", "1", w1)
		if code != 0 {
			return out
		}
		return ""
	}
	labtest.Poll(t, "w2 pings w1 through the tunnel", 60*time.Second, ping)
	mac, _, code := l.Run("", "exec", "node1", "--", "cat", "/sys/class/net/vxlan.tabby/address")
	if code != 0 {
		t.Fatalf("node1's vxlan.tabby: %s", mac)
	}
	injectRounds(t, l, []string{w2, w1, strings.TrimSpace(mac), node1}, ping, func() int { return inEchos(t, l, "default/w1", false) })
}

// injectRounds sends, three times, 5 crafted packets from the lab host "outside"
// (vxlanInject with args and the count) and then one real ping (ping returns what went wrong),
// and checks that echoes (the target's echo requests received) moved by 1 each time: the
// real one only.
func injectRounds(t *testing.T, l *labtest.Lab, args []string, ping func() string, echoes func() int) {
	t.Helper()
	for round := range 3 {
		before := echoes()
		if out, stderr, code := l.Run("", append([]string{"exec", "outside", "--", "python3", "-c", vxlanInject}, append(args, "5")...)...); code != 0 {
			t.Fatalf("sending the crafted packets: %s%s", out, stderr)
		}
		// One real echo through the tunnel after the crafted ones: once it is answered,
		// the crafted ones, sent first on the same path, were handled too.
		if out := ping(); out != "" {
			t.Fatalf("round %d: the workloads no longer ping each other: %s", round, out)
		}
		if got := echoes() - before; got != 1 {
			t.Errorf("round %d: the target received %d echo requests, want 1 (the real one; the 5 crafted ones dropped)", round, got)
		}
	}
}

// inEchos is how many ICMP (v6: ICMPv6) echo requests a lab workload's kernel has received.
func inEchos(t *testing.T, l *labtest.Lab, workload string, v6 bool) int {
	t.Helper()
	if v6 {
		out, _, _ := l.Run("", "exec", workload, "--", "cat", "/proc/net/snmp6")
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Icmp6InEchos" {
				v, _ := strconv.Atoi(f[1])
				return v
			}
		}
		t.Fatalf("no Icmp6InEchos in %s's /proc/net/snmp6:\n%s", workload, out)
	}
	out, _, _ := l.Run("", "exec", workload, "--", "cat", "/proc/net/snmp")
	var names []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Icmp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "InEchos" && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	t.Fatalf("no Icmp InEchos in %s's /proc/net/snmp:\n%s", workload, out)
	return 0
}

// TestTunnelGuardIPv6: TestTunnelGuard over the IPv6 underlay: with an IPv6 pool at
// vxlanMode Always in a lab up with --ipv6, a namespace on the underlay that is not a node
// sends node1 VXLAN packets over IPv6 carrying ICMPv6 echoes to node1's workload as if
// from node2's. node1 drops them, while the workloads still ping each other over IPv6
// through vxlan-v6.tabby.
func TestTunnelGuardIPv6(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--ipv6", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(vxlanPool6("Always"))
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	l.OK("host", "add", "outside")
	_, w1 := l.WorkloadIPs("default", "w1")
	_, w2 := l.WorkloadIPs("default", "w2")
	node1 := l.State().Nodes[0].Address6.Addr().String()
	ping := func() string {
		out, _, code := l.Run("", "exec", "default/w2", "--", "ping", "-c", "1", "-W", "1", w1.String())
		if code != 0 {
			return out
		}
		return ""
	}
	labtest.Poll(t, "w2 pings w1 over IPv6 through the tunnel", 60*time.Second, func() string {
		if r, _, _ := l.Run("", "exec", "node2", "--", "ip", "-6", "route", "show", labtest.BlockOf6(w1)); !strings.Contains(r, felix.VXLANDeviceV6) {
			return "node2's route to w1's block is not through the tunnel: " + r
		}
		return ping()
	})
	mac, _, code := l.Run("", "exec", "node1", "--", "cat", "/sys/class/net/"+felix.VXLANDeviceV6+"/address")
	if code != 0 {
		t.Fatalf("node1's %s: %s", felix.VXLANDeviceV6, mac)
	}
	injectRounds(t, l, []string{w2.String(), w1.String(), strings.TrimSpace(mac), node1}, ping,
		func() int { return inEchos(t, l, "default/w1", true) })
}

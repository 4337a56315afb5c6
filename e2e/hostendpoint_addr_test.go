package e2e

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// TestHostEndpointByAddressIPv6 runs a dual-stack two-node lab with servers on node1 and
// an outside host, and a host endpoint of node1 without interfaceName:
//
//   - while no interface of node1 holds its expectedIPs it governs nothing (a policy
//     denying 8080 on it closes nothing);
//   - once its address is added to node1's eth0, it governs eth0, for both families:
//     8080 closes over IPv4 and IPv6, 8081 stays open;
//   - a doNotTrack policy allowing 8081 both ways leaves no IPv6 conntrack entry on node1,
//     where a tracked IPv6 connection left some (ip6tables' raw table);
//   - a preDNAT policy denying 8081 from the outside host's IPv6 address closes IPv6
//     alone (ip6tables' mangle table);
//   - once the address leaves eth0, the endpoint governs nothing again.
func TestHostEndpointByAddressIPv6(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "conntrack", Package: "conntrack"}, testenv.Tool{Cmd: "ip6tables-nft-restore", Package: "iptables"})
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--ipv6")
	l.OK("host", "add", "outside")
	st := l.State()
	node1, node16 := st.Node("node1").Address.Addr().String(), st.Node("node1").Address6.Addr().String()
	outside6 := st.Host("outside").Address6.Addr().String()
	l.StartExec(t, "node1", probe, "serve", "node1", "8080", "8081")

	type flow struct {
		addr string
		port int
	}
	f := func(addr string, port int) flow { return flow{addr, port} }
	v4, v6 := f(node1, 8080), f(node16, 8080)
	v4b, v6b := f(node1, 8081), f(node16, 8081)
	all := []flow{v4, v6, v4b, v6b}
	reaches := func(fl flow) bool {
		c := probeCounts(t, l, probe, "outside", "tcp", 1, net.JoinHostPort(fl.addr, strconv.Itoa(fl.port)))
		return c["timeout"]+c["refused"]+c["error"] == 0
	}
	expect := func(step string, denied ...flow) {
		t.Helper()
		took := labtest.Poll(t, step, 60*time.Second, func() string {
			var wrong []string
			for _, fl := range all {
				if got, want := reaches(fl), !slices.Contains(denied, fl); got != want {
					wrong = append(wrong, fmt.Sprintf("outside to %s:%d reached %v, want %v", fl.addr, fl.port, got, want))
				}
			}
			return strings.Join(wrong, "; ")
		})
		t.Logf("%s: as expected after %v", step, took.Round(time.Millisecond))
	}
	conntrack6 := func(port int) int {
		out, stderr, code := l.Run("", "exec", "node1", "--", "conntrack", "-L", "-f", "ipv6", "-p", "tcp", "--orig-port-dst", strconv.Itoa(port))
		if code != 0 {
			t.Fatalf("conntrack -L: %s", stderr)
		}
		return strings.Count(out, "\n")
	}

	l.Apply(`apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-by-addr, labels: {by-addr: "yes"}}
spec: {node: node1, expectedIPs: [10.99.0.1]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: no-8080}
spec:
  selector: has(by-addr)
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [8080]}}, {action: Allow}]
  egress: [{action: Allow}]
`)
	expect("no interface holds the endpoint's address")
	labtest.Steady(t, "8080 stays open while no interface holds the address", 3*time.Second, time.Second, func() string {
		if !reaches(v4) {
			return "outside to node1:8080 closed"
		}
		return ""
	})

	l.OK("exec", "node1", "--", "ip", "addr", "add", "10.99.0.1/32", "dev", "eth0")
	expect("the address on eth0: the endpoint governs it, both families", v4, v6)
	if n := conntrack6(8081); n == 0 {
		t.Errorf("no IPv6 conntrack entry on node1 for port 8081 after a tracked connection")
	}

	l.Apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked-8081}
spec:
  selector: has(by-addr)
  doNotTrack: true
  applyOnForward: true
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8081]}}]
  egress: [{action: Allow, protocol: TCP, source: {ports: [8081]}}]
`)
	labtest.Poll(t, "node1's ip6tables raw table holds the untracked policy", 30*time.Second, func() string {
		if out := l.OK("exec", "node1", "--", "ip6tables-nft-save", "-t", "raw"); !strings.Contains(out, "tby-pi-untracked-8081") {
			return out
		}
		return ""
	})
	l.Run("", "exec", "node1", "--", "conntrack", "-D", "-f", "ipv6", "-p", "tcp", "--orig-port-dst", "8081")
	expect("doNotTrack 8081 both ways", v4, v6)
	if n := conntrack6(8081); n != 0 {
		t.Errorf("%d IPv6 conntrack entries on node1 for port 8081 under the doNotTrack policy, want 0", n)
	}

	l.OK("ctl", "delete", "globalnetworkpolicy", "untracked-8081")
	l.Apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: prednat-8081}
spec:
  selector: has(by-addr)
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, protocol: TCP, source: {nets: ["` + outside6 + `/128"]}, destination: {ports: [8081]}}]
`)
	expect("preDNAT deny of 8081 from outside's IPv6 address", v4, v6, v6b)

	l.OK("exec", "node1", "--", "ip", "addr", "del", "10.99.0.1/32", "dev", "eth0")
	expect("the address gone: the endpoint governs nothing")
}

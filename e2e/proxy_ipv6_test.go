package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// serviceRanges6 are service ranges of both families: IPv6 cluster IPs must lie in one,
// and the default one is IPv4 only.
const serviceRanges6 = `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: 10.96.0.0/12}, {cidr: "fd00:96::/108"}]
`

// TestServiceProxyDualStack sends IPv6 through Services in a dual-stack lab, in each proxy
// mode: a RequireDualStack Service's IPv6 cluster IP spreads TCP and UDP over the IPv6
// addresses of endpoints on both nodes, its IPv4 cluster IP over their IPv4 addresses, a
// NodePort answers on a node's IPv6 address, and a Service without endpoints refuses
// over IPv6 at once rather than dropping.
func TestServiceProxyDualStack(t *testing.T) { forEachProxyMode(t, testServiceProxyDualStack) }

func testServiceProxyDualStack(t *testing.T, mode, agent string) {
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--ipv6", "--agent-binary", agent)
	l.Apply(serviceRanges6)
	for _, w := range []struct{ name, node string }{{"web1", "node1"}, {"web2", "node2"}} {
		l.OK("workload", "add", w.node, "shop/"+w.name, "--labels", "app=web")
		l.StartExec(t, "shop/"+w.name, probe, "serve", w.name, "8080")
	}
	l.OK("workload", "add", "node2", "shop/client")
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  clusterIPs: ["fd00:96::20", 10.96.30.1]
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30680}
  - {name: echo, protocol: UDP, port: 81, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  clusterIPs: ["fd00:96::21"]
  selector: {app: nothing}
  ports: [{name: http, protocol: TCP, port: 80}]
`)
	node1v6 := l.State().Node("node1").Address6.Addr()
	for _, c := range []struct{ what, proto, target string }{
		{"TCP to the IPv6 cluster IP", "tcp", "[fd00:96::20]:80"},
		{"UDP to the IPv6 cluster IP", "udp", "[fd00:96::20]:81"},
		{"TCP to the IPv4 cluster IP", "tcp", "10.96.30.1:80"},
		{"TCP to node1's IPv6 address on the NodePort", "tcp", netip.AddrPortFrom(node1v6, 30680).String()},
	} {
		var n map[string]int
		took := labtest.Poll(t, c.what+" reaches both endpoints and nothing else", 60*time.Second, func() string {
			n = probeCounts(t, l, probe, "shop/client", c.proto, 30, c.target)
			if n["web1"] == 0 || n["web2"] == 0 || n["web1"]+n["web2"] != 30 {
				return fmt.Sprint(n)
			}
			return ""
		})
		t.Logf("%s (%s): %v (polled %s)", c.what, c.target, n, took)
	}
	// No endpoints: refused at once (a reset), never a silent timeout.
	labtest.Poll(t, "the IPv6 Service without endpoints refuses", 30*time.Second, func() string {
		if n := probeCounts(t, l, probe, "shop/client", "tcp", 5, "[fd00:96::21]:80"); n["refused"] != 5 {
			return fmt.Sprint(n)
		}
		return ""
	})
	checkProxyIPv6(t, l, "node1", mode)
}

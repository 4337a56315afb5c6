package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// Service CIDRs of TestServiceAdvertisement, and the addresses of its Services.
const (
	svcClusterCIDR  = "10.96.0.0/12"
	svcExternalCIDR = "198.51.100.0/24"
	svcLBCIDR       = "203.0.113.0/24"
)

// TestServiceAdvertisement: Calico's Service IP advertisement, seen by BIRD as an eBGP ToR
// peering with both nodes. The BGPConfiguration's serviceClusterIPs, serviceExternalIPs and
// serviceLoadBalancerIPs come from both nodes. A LoadBalancer Service with
// externalTrafficPolicy Local has its cluster IP, external IP and load-balancer IP that
// fall inside those CIDRs advertised as /32 only from the node of its one endpoint (and
// installed in the other node's kernel via it); its addresses outside the CIDRs nowhere,
// and a Service with policy Cluster gets no /32. The endpoint deleted, the /32s are
// withdrawn; a new endpoint on node1 brings them back from node1 only. Throughout, the
// ToR (BIRD exporting to its kernel) reaches the external and load-balancer IPs on the
// endpoint's node, which sees the ToR's own address. A selector-less
// Local Service whose EndpointSlice puts a ready endpoint on node2 is advertised from
// node2, and withdrawn when the endpoint turns not ready.
func TestServiceAdvertisement(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	l, torNS, tor, _ := twoNodeLab(t, "tor", `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ROUTER, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: `+svcClusterCIDR+`}]
  serviceExternalIPs: [{cidr: `+svcExternalCIDR+`}]
  serviceLoadBalancerIPs: [{cidr: `+svcLBCIDR+`}]
`)
	block1, block2 := labtest.BlockOf(l.WorkloadIP("default", "w1")), labtest.BlockOf(l.WorkloadIP("default", "w2"))
	st := l.State()
	node1, node2 := st.Nodes[0].Address.Addr().String(), st.Nodes[1].Address.Addr().String()
	sock := startBIRD(t, torNS, torBIRD(tor, []string{node1, node2}, "protocol kernel { ipv4 { import none; export all; }; }\n"))
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := l.Run("", "exec", "tor", "--", "birdc", "-s", sock, "show", "route", "all")
			t.Logf("BIRD's routes:\n%s", out)
			for _, n := range []string{"node1", "node2"} {
				out, _, _ = l.Tabbyctl(n, "node", "status", "--socket", filepath.Join(l.NodeDataDir(n), "status.sock"), "-o", "json")
				routes, _, _ := l.Run("", "exec", n, "--", "ip", "route")
				t.Logf("%s: node status:\n%s\nroutes:\n%s", n, out, routes)
			}
		}
	})
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 10.96.100.10
  externalIPs: [198.51.100.10, 192.0.2.10]
  selector: {app: web}
  ports: [{port: 80}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.10}, {ip: 192.0.2.11}]
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Cluster
  clusterIP: 10.96.100.20
  externalIPs: [198.51.100.20]
  selector: {app: web}
  ports: [{port: 80}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.20}]
`)
	probe := labtest.Build(t, "github.com/tabby-net/tabby/e2e/testdata/svcprobe", "svcprobe")
	// addWeb adds an endpoint of web on node, serving its name and the client's address.
	addWeb := func(node, name string) {
		t.Helper()
		l.OK("workload", "add", node, "shop/"+name, "--labels", "app=web")
		srv := l.Command("exec", "shop/"+name, "--", probe, "serve-peer", name, "80")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	}
	// reaches polls until a connection from the ToR to addr:80 (routed by what BIRD
	// learned) is answered by want with the ToR's own address: the node that advertised
	// the /32 has the endpoint, and Local kept the client's address.
	reaches := func(addr, want string) {
		t.Helper()
		labtest.Poll(t, "the ToR reaches "+addr+" on "+want, 20*time.Second, func() string {
			out, stderr, _ := l.Run("", "exec", "tor", "--", probe, "tcp", "1", "1s", addr+":80")
			if got := strings.Fields(out); len(got) != 2 || got[0] != want+"@"+tor {
				return fmt.Sprintf("%q %s, want %s@%s", out, stderr, want, tor)
			}
			return ""
		})
	}
	addWeb("node2", "web2")

	// fromNode is what BIRD holds from each node, sorted.
	fromNode := func() map[string][]string {
		out := map[string][]string{}
		for _, n := range []string{"node1", "node2"} {
			routes, stderr, code := l.Run("", "exec", "tor", "--", "birdc", "-s", sock, "show", "route", "protocol", n)
			if code != 0 {
				out[n] = []string{"birdc: " + stderr}
				continue
			}
			for _, m := range birdPrefix.FindAllStringSubmatch(routes, -1) {
				out[n] = append(out[n], m[1])
			}
			slices.Sort(out[n])
		}
		return out
	}
	cidrs := []string{svcClusterCIDR, svcExternalCIDR, svcLBCIDR}
	webHosts := []string{"10.96.100.10/32", "198.51.100.10/32", "203.0.113.10/32"}
	want := func(block string, prefixes ...[]string) []string {
		out := []string{block}
		for _, p := range prefixes {
			out = append(out, p...)
		}
		slices.Sort(out)
		return out
	}
	// expect polls until BIRD holds exactly want1 from node1 and want2 from node2, and the
	// host routes of one node are in the other's kernel via it.
	expect := func(what string, within time.Duration, want1, want2 []string) time.Duration {
		t.Helper()
		return labtest.Poll(t, what, within, func() string {
			got := fromNode()
			if !slices.Equal(got["node1"], want1) || !slices.Equal(got["node2"], want2) {
				return fmt.Sprintf("BIRD has from node1 %v, from node2 %v; want %v and %v", got["node1"], got["node2"], want1, want2)
			}
			for _, c := range []struct {
				from, in, via string
				routes        []string
			}{{"node1", "node2", node1, want1}, {"node2", "node1", node2, want2}} {
				kernel := l.GatewayRoutes(c.in)
				for _, h := range webHosts {
					dst := strings.TrimSuffix(h, "/32") // as ip -j route names a host route
					if has := slices.Contains(c.routes, h); has != (kernel[dst] == c.via) {
						return fmt.Sprintf("%s's kernel: %s via %q; advertised by %s: %v", c.in, h, kernel[dst], c.from, has)
					}
				}
			}
			return ""
		})
	}
	took := expect("the CIDRs from both nodes, web's /32s from node2 only", 40*time.Second,
		want(block1, cidrs), want(block2, cidrs, webHosts))
	t.Logf("BIRD learned the CIDRs and node2's /32s %s after the endpoint was added", took)
	if s, err := l.status("node2", l.NodeDataDir("node2")); err != nil || !slices.Contains(s.Advertised, "203.0.113.10/32") {
		t.Errorf("tabbyctl node status on node2: %+v (%v), want 203.0.113.10/32 advertised", s, err)
	}
	reaches("203.0.113.10", "web2")
	reaches("198.51.100.10", "web2")

	l.OK("workload", "del", "shop/web2")
	took = expect("web's /32s withdrawn once its endpoint is gone", 20*time.Second,
		want(block1, cidrs), want(block2, cidrs))
	t.Logf("/32s withdrawn %s after the endpoint was deleted", took)

	addWeb("node1", "web1")
	took = expect("web's /32s from node1 only, where its endpoint now is", 20*time.Second,
		want(block1, cidrs, webHosts), want(block2, cidrs))
	t.Logf("/32s advertised from node1 %s after the new endpoint was added", took)
	reaches("203.0.113.10", "web1")

	// Readiness: a selector-less Local Service on an EndpointSlice's endpoint on node2.
	slice := func(ready bool) string {
		return `apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 10.96.100.30
  ports: [{port: 80}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.30}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [` + l.WorkloadIP("default", "w2").String() + `]
  nodeName: node2
  conditions: {ready: ` + fmt.Sprint(ready) + `}
`
	}
	extHosts := []string{"10.96.100.30/32", "203.0.113.30/32"}
	l.Apply(slice(true))
	expect("ext's /32s from node2, where its ready endpoint is", 20*time.Second,
		want(block1, cidrs, webHosts), want(block2, cidrs, extHosts))
	l.Apply(slice(false))
	took = expect("ext's /32s withdrawn once its endpoint is not ready", 20*time.Second,
		want(block1, cidrs, webHosts), want(block2, cidrs))
	t.Logf("/32s withdrawn %s after the endpoint turned not ready", took)
}

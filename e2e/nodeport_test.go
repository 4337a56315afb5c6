package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestServiceProxyNodePort reaches NodePorts from a host outside the cluster (172.31.1.200
// on the underlay) in a two-node lab whose one endpoint, web1, runs on node1 and answers
// with the address it saw. externalTrafficPolicy Cluster answers on both nodes,
// masqueraded (web1 sees a node's address); Local answers on node1 with the client's own
// address and is dropped on node2, which has no local endpoint, while a workload of
// node2 still reaches it through node2's address. It runs in each proxy mode.
func TestServiceProxyNodePort(t *testing.T) { forEachProxyMode(t, testServiceProxyNodePort) }

func testServiceProxyNodePort(t *testing.T, mode, agent string) {
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", agent)
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "shop/web1", "--labels", "app=web")
	l.StartExec(t, "shop/web1", probe, "serve-peer", "web1", "8080")
	l.OK("workload", "add", "node2", "shop/client")
	l.OK("host", "add", "outside")
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: cluster, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 30090
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081}]
`)
	st := l.State()
	node1, node2 := st.Nodes[0].Address.Addr().String(), st.Nodes[1].Address.Addr().String()
	const client = "172.31.1.200"
	// answer probes once from the outside host and returns the one answer.
	answer := func(from, target string) string {
		c := probeCounts(t, l, probe, from, "tcp", 1, target)
		for k := range c {
			return k
		}
		return ""
	}
	labtest.Poll(t, "both nodes' Cluster NodePort answers from outside (node2 once BGP gave it node1's block)", 60*time.Second, func() string {
		for _, node := range []string{node1, node2} {
			if got := answer("outside", node+":30080"); !strings.HasPrefix(got, "web1@") {
				return node + ": " + got
			}
		}
		return ""
	})
	for _, node := range []string{"node1", "node2"} {
		checkProxyMode(t, l, node, mode)
	}
	for _, node := range []string{node1, node2} {
		got := answer("outside", node+":30080")
		if !strings.HasPrefix(got, "web1@") || got == "web1@"+client {
			t.Errorf("Cluster NodePort on %s from outside: %q, want web1 seeing a node's address (masqueraded), not %s", node, got, client)
		}
		t.Logf("Cluster NodePort on %s: %s", node, got)
	}
	labtest.Poll(t, "node1's Local NodePort keeps the client's address", 30*time.Second, func() string {
		if got := answer("outside", node1+":30081"); got != "web1@"+client {
			return fmt.Sprintf("%q, want web1@%s", got, client)
		}
		return ""
	})
	if c := probeCounts(t, l, probe, "outside", "tcp", 3, node2+":30081"); c["timeout"] != 3 {
		t.Errorf("Local NodePort on node2 (no local endpoint) from outside: %v, want 3 timeouts (dropped)", c)
	}
	if got := answer("shop/client", node2+":30081"); !strings.HasPrefix(got, "web1@") {
		t.Errorf("Local NodePort on node2 from node2's workload: %q, want web1 (pods go to every endpoint)", got)
	}

	// The healthCheckNodePort: 200 on node1, which has the endpoint, 503 on node2.
	for _, c := range []struct {
		node, want string
	}{{node1, `{"service":{"namespace":"shop","name":"local"},"localEndpoints":1}` + "\n200"}, {node2, `{"service":{"namespace":"shop","name":"local"},"localEndpoints":0}` + "\n503"}} {
		labtest.Poll(t, "healthCheckNodePort on "+c.node, 30*time.Second, func() string {
			out, errout, _ := l.Run("", "exec", "outside", "--", "curl", "-s", "-m", "2", "-w", "%{http_code}", "http://"+c.node+":30090/healthz")
			if out != c.want {
				return fmt.Sprintf("%q %s, want %q", out, errout, c.want)
			}
			return ""
		})
	}
}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestMeshPassword: BGPConfiguration nodeMeshPassword puts TCP MD5 on the node-to-node
// mesh. Two nodes mesh without it (their BGP connection has no MD5 key); once it is set
// the sessions come back with the key from the password file on both ends (ss shows it on
// the connection) and the nodes route each other's blocks again.
func TestMeshPassword(t *testing.T) {
	pwDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(pwDir, "bgp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pwDir, "bgp", "mesh"), []byte("mesh-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", bgpAgent(t, "--bgp-password-dir", pwDir))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	block1, block2 := labtest.BlockOf(l.WorkloadIP("default", "w1")), labtest.BlockOf(l.WorkloadIP("default", "w2"))
	st := l.State()
	node1, node2 := st.Nodes[0].Address.Addr().String(), st.Nodes[1].Address.Addr().String()
	// session returns node1's established BGP connection with node2 as ss prints it.
	session := func() string {
		out, stderr, code := l.Run("", "exec", "node1", "--", "ss", "-tnie", "state", "established", "dst", node2)
		if code != 0 {
			return "ss: " + stderr
		}
		for _, c := range strings.Split(out, "\n"+" ") {
			if strings.Contains(c, ":179 ") {
				return c
			}
		}
		return ""
	}
	// meshUp polls until both nodes route each other's block and the connection's MD5
	// key is as keyed says.
	meshUp := func(what string, keyed bool) {
		t.Helper()
		took := labtest.Poll(t, what, 40*time.Second, func() string {
			if gw := l.GatewayRoutes("node1")[block2]; gw != node2 {
				return fmt.Sprintf("node1: %s via %q", block2, gw)
			}
			if gw := l.GatewayRoutes("node2")[block1]; gw != node1 {
				return fmt.Sprintf("node2: %s via %q", block1, gw)
			}
			s := session()
			if s == "" || strings.Contains(s, "md5keys:") != keyed {
				return fmt.Sprintf("node1's BGP connection to node2, want MD5 key %v: %q", keyed, s)
			}
			return ""
		})
		t.Logf("%s after %s", what, took)
	}
	meshUp("the mesh up without a password", false)

	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeMeshPassword: {secretKeyRef: {name: bgp, key: mesh}}}
`)
	meshUp("the mesh back with TCP MD5", true)
	up, s := l.established("node1", l.NodeDataDir("node1"))
	if !up[node2] {
		t.Errorf("node1's session to node2 is not up: %+v", s)
	}
}

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestWireGuardWithoutKernel runs two agents with --wireguard on this kernel, which has no
// wireguard (TestWireGuardVM in felix runs the encryption itself in a VM): each agent
// makes its private key (mode 0600), says in its readiness and
// node status that the kernel lacks wireguard, publishes no public key on its Node (so
// no node encrypts to it), and workloads on the two nodes still reach each other.
func TestWireGuardWithoutKernel(t *testing.T) {
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, append([]string{"--wireguard"}, labtest.FastBGP...)...))
	if out, _, code := l.Run("", "exec", "node1", "--", "ip", "link", "add", "name", "tbyprobe", "type", "wireguard"); code == 0 {
		t.Skipf("this kernel has wireguard (%s): felix's TestWireGuardVM covers it", out)
	}
	l.OK("workload", "add", "node1", "default/a")
	l.OK("workload", "add", "node2", "default/b")
	const reason = "wireguard: --wireguard needs the kernel's wireguard support, which this kernel lacks"
	for _, node := range []string{"node1", "node2"} {
		sock := filepath.Join(l.NodeDataDir(node), "status.sock")
		labtest.Poll(t, node+" not ready for want of wireguard", 30*time.Second, func() string {
			out, stderr, code := l.Tabbyctl(node, "node", "readiness", "--socket", sock)
			if code == 0 || !strings.Contains(out+stderr, reason) {
				return out + stderr
			}
			return ""
		})
		if out, _, _ := l.Tabbyctl(node, "node", "status", "--socket", sock); !strings.Contains(out, "Problem: "+reason) {
			t.Errorf("%s: node status does not show the problem:\n%s", node, out)
		}
		key := filepath.Join(l.NodeDataDir(node), "wireguard.key")
		fi, err := os.Stat(key)
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %s has mode %v, want 0600", node, key, fi.Mode().Perm())
		}
	}
	if y := l.OK("ctl", "get", "nodes", "-o", "yaml"); strings.Contains(y, "wireguardPublicKey") {
		t.Errorf("a node without wireguard published a key:\n%s", y)
	}
	for _, c := range [][2]string{{"default/a", "b"}, {"default/b", "a"}} {
		to := l.WorkloadIP("default", c[1]).String()
		labtest.Poll(t, c[0]+" reaches "+to+" in the clear", 60*time.Second, func() string {
			if out, _, code := l.Run("", "exec", c[0], "--", "ping", "-c1", "-W1", to); code != 0 {
				return out
			}
			return ""
		})
	}

}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// birdPrefix matches the first column of `birdc show route` lines.
var birdPrefix = regexp.MustCompile(`(?m)^(\d+\.\d+\.\d+\.\d+/\d+)\s`)

// birdLearned returns the prefixes the BIRD at host tor (control socket sock) learned,
// those of its protocol "own" left out, sorted, and birdc's output.
func (l *lab) birdLearned(sock string) ([]string, string, error) {
	out, stderr, code := l.Run("", "exec", "tor", "--", "birdc", "-s", sock, "show", "route", "where", "proto", "!=", `"own"`)
	if code != 0 {
		return nil, out, fmt.Errorf("birdc show route: exit %d: %s", code, stderr)
	}
	var got []string
	for _, m := range birdPrefix.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1])
	}
	slices.Sort(got)
	return slices.Compact(got), out, nil
}

// TestBIRDToR: BIRD 2 as an eBGP top-of-rack router (AS 65001) peering with every node
// through a global BGPPeer. BIRD learns exactly the nodes' blocks (each from its owner,
// nothing another node learned, nothing of its own sent back), and its own prefix reaches
// every node's kernel through tabby's route protocol, via BIRD.
func TestBIRDToR(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", bgpAgent(t))
	l.OK("host", "add", "tor", "--subnet", "1")
	var torNS, tor string
	for _, h := range l.State().Hosts {
		if h.Name == "tor" {
			torNS, tor = h.Netns, h.Address.Addr().String()
		}
	}
	l.Apply(labtest.Pool)
	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ` + tor + `, asNumber: 65001}
`)
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	blocks := []string{labtest.BlockOf(l.WorkloadIP("default", "w1")), labtest.BlockOf(l.WorkloadIP("default", "w2"))}
	slices.Sort(blocks)

	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	sock := filepath.Join(dir, "bird.ctl")
	err := os.WriteFile(conf, []byte(`router id `+tor+`;
protocol device {}
protocol static own { ipv4; route 192.0.2.0/24 blackhole; }
template bgp tabby {
  local `+tor+` as 65001;
  hold time 9; keepalive time 3; connect retry time 1;
  graceful restart;
  ipv4 { import all; export where proto = "own"; };
}
protocol bgp node1 from tabby { neighbor 172.31.1.10 as 64512; }
protocol bgp node2 from tabby { neighbor 172.31.1.11 as 64512; }
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := startIn(t, torNS, []string{"/usr/sbin/bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid")}, filepath.Join(dir, "bird.log"))
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "bird.log"))
			t.Logf("bird log:\n%s", b)
		}
	})

	took := labtest.Poll(t, "BIRD learns every block and nothing else", 40*time.Second, func() string {
		got, out, err := l.birdLearned(sock)
		if err != nil {
			return err.Error()
		}
		if !slices.Equal(got, blocks) {
			return fmt.Sprintf("BIRD has %v, want %v:\n%s", got, blocks, out)
		}
		return ""
	})
	t.Logf("BIRD learned both blocks %s after the workloads", took)
	labtest.Poll(t, "BIRD's prefix in every node's kernel", 20*time.Second, func() string {
		for _, n := range []string{"node1", "node2"} {
			if gw := l.GatewayRoutes(n)["192.0.2.0/24"]; gw != tor {
				return fmt.Sprintf("%s: 192.0.2.0/24 via %q", n, gw)
			}
		}
		return ""
	})
	// Each block came from its owner only: node1 did not pass node2's block to BIRD.
	out := l.OK("exec", "tor", "--", "birdc", "-s", sock, "show", "route", "all", "protocol", "node1")
	if strings.Contains(out, blocks[0]) == strings.Contains(out, blocks[1]) {
		t.Errorf("BIRD's routes from node1 should hold exactly one block:\n%s", out)
	}
	// node status names the ToR as a global peer, Established.
	up, s := l.established("node1", l.NodeDataDir("node1"))
	if !up[tor] {
		t.Errorf("node1's session to BIRD is not up: %+v", s)
	}
	for _, p := range s.Peers {
		if p.Address == tor && (p.Type != "global" || p.Received != 1 || p.Advertised != 1) {
			t.Errorf("ToR row: %+v", p)
		}
	}
}

package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// TestBGPFilterWithBIRD: BIRD as eBGP ToR of two nodes through a global BGPPeer with
// filters. An export rule (Reject, Equal node2's block) hides that block from BIRD while
// node1's reaches it; an import rule (Reject, In 198.51.100.0/24) keeps one of BIRD's two
// prefixes out of the nodes' kernels. Taking the filters off the BGPPeer brings both back
// on the running sessions (soft reset), and an unknown filter name is refused nowhere but
// reported as a problem.
func TestBGPFilterWithBIRD(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	l := newLab(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", bgpAgent(t))
	l.OK("host", "add", "tor", "--subnet", "1")
	torNS, tor := l.hostAddr("tor")
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	b1, b2 := labtest.BlockOf(l.WorkloadIP("default", "w1")), labtest.BlockOf(l.WorkloadIP("default", "w2"))
	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: tor-out}
spec:
  exportV4:
    - {action: Reject, matchOperator: Equal, cidr: ` + b2 + `}
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: tor-in}
spec:
  importV4:
    - {action: Reject, matchOperator: In, cidr: 198.51.100.0/24}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ` + tor + `, asNumber: 65001, filters: [tor-out, tor-in]}
`)
	sock := startBIRD(t, torNS, `router id `+tor+`;
protocol device {}
protocol static own { ipv4; route 192.0.2.0/24 blackhole; route 198.51.100.0/25 blackhole; }
template bgp tabby {
  local `+tor+` as 65001;
  hold time 9; keepalive time 3; connect retry time 1;
  graceful restart;
  ipv4 { import all; export where proto = "own"; };
}
protocol bgp node1 from tabby { neighbor 172.31.1.10 as 64512; }
protocol bgp node2 from tabby { neighbor 172.31.1.11 as 64512; }
`)
	// birdHas says how BIRD's learned prefixes differ from want ("" when equal); birdc
	// fails until BIRD has opened its control socket.
	birdHas := func(want ...string) string {
		got, _, err := l.birdLearned(sock)
		switch {
		case err != nil:
			return err.Error()
		case !slices.Equal(got, want):
			return fmt.Sprintf("BIRD has %v, want %v", got, want)
		}
		return ""
	}
	kernels := func(want map[string]bool) string {
		for _, n := range []string{"node1", "node2"} {
			routes := l.GatewayRoutes(n)
			for p, has := range want {
				if gw, ok := routes[p]; ok != has || (has && gw != tor) {
					return fmt.Sprintf("%s: %s via %q, want present=%v", n, p, gw, has)
				}
			}
		}
		return ""
	}

	labtest.Poll(t, "BIRD learns node1's block and not node2's", 40*time.Second, func() string { return birdHas(b1) })
	labtest.Poll(t, "192.0.2.0/24 in every node's kernel, 198.51.100.0/25 in none", 20*time.Second, func() string {
		return kernels(map[string]bool{"192.0.2.0/24": true, "198.51.100.0/25": false})
	})
	// node2's block stays hidden while BIRD's other routes settle.
	if diff := birdHas(b1); diff != "" {
		t.Error(diff)
	}

	// A missing filter is a problem in node status; the sessions and other rules stay.
	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ` + tor + `, asNumber: 65001, filters: [tor-out, tor-in, nowhere]}
`)
	labtest.Poll(t, "node status names the missing filter", 20*time.Second, func() string {
		s, err := l.status("node1", l.NodeDataDir("node1"))
		if err != nil {
			return err.Error()
		}
		if !slices.Contains(s.Problems, `BGPPeer tor: filter "nowhere": no such BGPFilter`) {
			return fmt.Sprintf("problems %q", s.Problems)
		}
		return ""
	})

	// Filters off: both directions change on the running sessions.
	l.Apply(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ` + tor + `, asNumber: 65001}
`)
	want := []string{b1, b2}
	slices.Sort(want)
	labtest.Poll(t, "BIRD learns both blocks once the filters are off", 40*time.Second, func() string { return birdHas(want...) })
	labtest.Poll(t, "198.51.100.0/25 in every node's kernel once the filters are off", 20*time.Second, func() string {
		return kernels(map[string]bool{"192.0.2.0/24": true, "198.51.100.0/25": true})
	})
}

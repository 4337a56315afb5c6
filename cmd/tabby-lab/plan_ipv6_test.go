package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/internal/labstate"
)

// up --ipv6: every subnet a ULA /64 with the router at ::1, each node and host the IPv6
// address with its IPv4 address's digits, agents started with --ip6 (and the default IPv6
// pool), and the CNI configuration assigning both families.
func TestPlanDualStack(t *testing.T) {
	st, err := plan("lab", 3, 2, "/run/tabby-lab/lab", "/var/lib/tabby-lab/lab")
	if err != nil {
		t.Fatal(err)
	}
	dualStack(st)
	if s := st.Subnets[1]; s.CIDR6 != netip.MustParsePrefix("fd00:172:31:2::/64") || s.Gateway6 != netip.MustParseAddr("fd00:172:31:2::1") {
		t.Errorf("subnet 2: %+v", s)
	}
	n3 := st.Nodes[2] // 172.31.1.12 on subnet 1
	if n3.Address6 != netip.MustParsePrefix("fd00:172:31:1::12/64") || n3.Gateway6 != netip.MustParseAddr("fd00:172:31:1::1") {
		t.Errorf("node3: %+v", n3.Attachment)
	}
	if a := subnetAddr6(12, 254); a != netip.MustParseAddr("fd00:172:31:12::254") {
		t.Errorf("subnetAddr6(12, 254) = %v", a)
	}
	argv := strings.Join(agentArgv(st, &st.Nodes[1]), " ")
	if !strings.Contains(argv, "--ip6 fd00:172:31:2::11/64") || !strings.Contains(argv, "--default-ipv6-pool-cidr "+labstate.DefaultPool6CIDR) {
		t.Errorf("agent argv: %s", argv)
	}
	h, err := planHost(st, "bird", 2)
	if err != nil || h.Address6 != netip.MustParsePrefix("fd00:172:31:2::200/64") {
		t.Errorf("host: %+v, %v", h, err)
	}
	data, err := cniConfList(st, "node1", nil, nil)
	if err != nil || !strings.Contains(string(data), `"ipam":{"assign_ipv4":"true","assign_ipv6":"true"}`) {
		t.Errorf("conflist = %s, %v", data, err)
	}

	// Without --ipv6 none of it.
	st, _ = plan("lab", 1, 1, "/run/tabby-lab/lab", "/var/lib/tabby-lab/lab")
	data, _ = cniConfList(st, "node1", nil, nil)
	if argv := agentArgv(st, &st.Nodes[0]); slices.Contains(argv, "--ip6") || st.Nodes[0].Address6.IsValid() || strings.Contains(string(data), "ipam") {
		t.Errorf("IPv4-only lab: argv %v, node %+v, conflist %s", argv, st.Nodes[0], data)
	}
}

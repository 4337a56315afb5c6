package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	gobgpapi "github.com/osrg/gobgp/v3/api"

	"github.com/tabby-net/tabby/api"
)

func filterOf(name string, spec api.BGPFilterSpec) *api.BGPFilter {
	f := &api.BGPFilter{Spec: spec}
	f.Name = name
	return f
}

func bgpPeerOf(name string, filters ...string) *api.BGPPeer {
	p := &api.BGPPeer{Spec: api.BGPPeerSpec{Filters: filters}}
	p.Name = name
	return p
}

// Each peer gets its BGPPeer's filters' rules in the order the BGPPeer names them; a
// missing filter is a problem, mesh peers and BGPPeers without filters get none.
func TestDesiredFilters(t *testing.T) {
	tor, rr, mesh := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	peers := []Peer{{Addr: tor, Source: "BGPPeer tor"}, {Addr: rr, Source: "BGPPeer rr"}, {Addr: mesh, Source: "node3"}}
	out := filterOf("out", api.BGPFilterSpec{ExportV4: []api.BGPFilterRule{{CIDR: "10.244.7.0/26", MatchOperator: api.MatchOperatorEqual, Action: api.FilterActionReject}}})
	in := filterOf("in", api.BGPFilterSpec{
		ImportV4: []api.BGPFilterRule{{Action: api.FilterActionReject}},
		ImportV6: []api.BGPFilterRule{{CIDR: "fd00::/8", MatchOperator: api.MatchOperatorIn, Action: api.FilterActionAccept}},
		ExportV4: []api.BGPFilterRule{{CIDR: "10.96.0.0/12", MatchOperator: api.MatchOperatorNotIn, Action: api.FilterActionAccept, Source: api.FilterSourceRemotePeers}},
	})
	got, problems := DesiredFilters(peers, []*api.BGPPeer{bgpPeerOf("tor", "in", "gone", "out"), bgpPeerOf("rr")}, []*api.BGPFilter{out, in})
	if want := []string{`BGPPeer tor: filter "gone": no such BGPFilter`}; !slices.Equal(problems, want) {
		t.Errorf("problems %q, want %q", problems, want)
	}
	want := map[netip.Addr]PeerFilters{tor: {
		Import: []FilterRule{{}, {Prefix: netip.MustParsePrefix("fd00::/8"), Op: api.MatchOperatorIn, V6: true, Accept: true}},
		Export: []FilterRule{
			{Prefix: netip.MustParsePrefix("10.96.0.0/12"), Op: api.MatchOperatorNotIn, Accept: true, RemoteOnly: true},
			{Prefix: netip.MustParsePrefix("10.244.7.0/26"), Op: api.MatchOperatorEqual},
		},
	}}
	if !equalFilters(got, want) {
		t.Errorf("filters:\n got %+v\nwant %+v", got, want)
	}
}

// The policies: one statement per rule (two for RemotePeers), each bound to the peer's
// own neighbor set, its family, and a prefix set whose mask range and match type carry the
// operator.
func TestFilterPolicies(t *testing.T) {
	tor := netip.MustParseAddr("10.0.0.1")
	imp, exp := filterPolicies(map[netip.Addr]PeerFilters{tor: {Export: []FilterRule{
		{Prefix: netip.MustParsePrefix("10.244.7.0/26"), Op: api.MatchOperatorEqual},
		{Prefix: netip.MustParsePrefix("10.96.0.0/12"), Op: api.MatchOperatorNotIn, Accept: true, RemoteOnly: true},
		{V6: true, Accept: true},
	}}}, 3)
	if imp != nil {
		t.Errorf("import policy %v, want none: no import rules", imp.policy)
	}
	var sets, stmts []string
	for _, s := range exp.sets {
		line := s.Name + " " + strings.Join(s.List, ",")
		for _, p := range s.Prefixes {
			line += fmt.Sprintf("%s %d..%d", p.IpPrefix, p.MaskLengthMin, p.MaskLengthMax)
		}
		sets = append(sets, line)
	}
	for _, st := range exp.policy.Statements {
		c := st.Conditions
		line := fmt.Sprintf("%s: %s %s %s type=%s", st.Name, c.NeighborSet.Name, c.AfiSafiIn[0].Afi, st.Actions.RouteAction, c.RouteType)
		if c.PrefixSet != nil {
			line += fmt.Sprintf(" %s %s", c.PrefixSet.Type, c.PrefixSet.Name)
		}
		stmts = append(stmts, line)
	}
	wantSets := []string{
		"tabby-f3-e-10.0.0.1 10.0.0.1/32",
		"tabby-f3-e-10.0.0.1-0 10.244.7.0/26 26..26",
		"tabby-f3-e-10.0.0.1-1 10.96.0.0/12 12..32",
	}
	wantStmts := []string{
		"tabby-f3-e-10.0.0.1-0-0: tabby-f3-e-10.0.0.1 AFI_IP REJECT type=ROUTE_TYPE_NONE ANY tabby-f3-e-10.0.0.1-0",
		"tabby-f3-e-10.0.0.1-1-0: tabby-f3-e-10.0.0.1 AFI_IP ACCEPT type=ROUTE_TYPE_INTERNAL INVERT tabby-f3-e-10.0.0.1-1",
		"tabby-f3-e-10.0.0.1-1-1: tabby-f3-e-10.0.0.1 AFI_IP ACCEPT type=ROUTE_TYPE_EXTERNAL INVERT tabby-f3-e-10.0.0.1-1",
		"tabby-f3-e-10.0.0.1-2-0: tabby-f3-e-10.0.0.1 AFI_IP6 ACCEPT type=ROUTE_TYPE_NONE",
	}
	if !slices.Equal(sets, wantSets) {
		t.Errorf("sets:\n%s\nwant:\n%s", strings.Join(sets, "\n"), strings.Join(wantSets, "\n"))
	}
	if !slices.Equal(stmts, wantStmts) {
		t.Errorf("statements:\n%s\nwant:\n%s", strings.Join(stmts, "\n"), strings.Join(wantStmts, "\n"))
	}
	if exp.policy.Name != filterExportPolicy+"-3" || exp.policy.Statements[0].Conditions.NeighborSet.Type != gobgpapi.MatchSet_ANY {
		t.Errorf("policy %s", exp.policy.Name)
	}
}

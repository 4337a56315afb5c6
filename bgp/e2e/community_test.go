package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

var (
	// birdCommunityLine matches the community attributes of `birdc show route all`.
	birdCommunityLine = regexp.MustCompile(`(?m)^\s+BGP\.(?:large_)?community:(.*)$`)
	birdCommunity     = regexp.MustCompile(`\([^)]*\)`)
)

// birdCommunities parses `birdc show route all` into each prefix's communities, standard
// and large, as "(aa,nn)" and "(aa,nn,mm)" sorted and space separated ("" for none).
func birdCommunities(out string) map[string]string {
	got := map[string]string{}
	var prefix string
	var cs []string
	flush := func() {
		if prefix != "" {
			slices.Sort(cs)
			got[prefix] = strings.Join(cs, " ")
		}
		cs = nil
	}
	for _, line := range strings.Split(out, "\n") {
		if m := birdPrefix.FindStringSubmatch(line + "\n"); m != nil {
			flush()
			prefix = m[1]
			continue
		}
		if m := birdCommunityLine.FindStringSubmatch(line); m != nil {
			for _, c := range birdCommunity.FindAllString(m[1], -1) {
				cs = append(cs, strings.ReplaceAll(c, " ", ""))
			}
		}
	}
	flush()
	return got
}

// TestBIRDCommunities: BGPConfiguration communities and prefixAdvertisements, checked
// from BIRD as eBGP ToR. The default object names a standard and a large community and
// attaches a name and a literal value to the pool's CIDR; node2's override replaces that
// entry with the large one. BIRD sees each node's block with its node's communities; a
// change of the default object reaches BIRD on node1's block (re-advertised, node2's
// untouched), and once no entry covers node1's block it goes out without communities.
func TestBIRDCommunities(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "/usr/sbin/bird", Package: "bird2"})
	defaultConfig := func(spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n" + spec
	}
	l, torNS, tor, blocks := twoNodeLab(t, "tor", `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: ROUTER, asNumber: 65001}
---
`+defaultConfig(`  communities: [{name: rack, value: "65001:100"}, {name: big, value: "4200000000:1:2"}]
  prefixAdvertisements: [{cidr: 10.244.0.0/16, communities: [rack, "65001:300"]}]
`)+`---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: node.node2}
spec:
  prefixAdvertisements: [{cidr: 10.244.0.0/16, communities: [big]}]
`)
	block1, block2 := labtest.BlockOf(l.WorkloadIP("default", "w1")), labtest.BlockOf(l.WorkloadIP("default", "w2"))
	st := l.State()
	node1, node2 := st.Nodes[0].Address.Addr().String(), st.Nodes[1].Address.Addr().String()
	sock := startBIRD(t, torNS, torBIRD(tor, []string{node1, node2}, ""))
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("BIRD's routes:\n%s", last)
			for _, n := range []string{"node1", "node2"} {
				out, _, _ := l.Tabbyctl(n, "node", "status", "--socket", filepath.Join(l.NodeDataDir(n), "status.sock"), "-o", "json")
				t.Logf("%s: node status:\n%s", n, out)
			}
		}
	})
	// sees polls until BIRD has exactly the two blocks, with these communities.
	sees := func(what string, want map[string]string) {
		t.Helper()
		took := labtest.Poll(t, "BIRD sees "+what, 30*time.Second, func() string {
			out, stderr, code := l.Run("", "exec", "tor", "--", "birdc", "-s", sock, "show", "route", "all")
			if code != 0 {
				return stderr
			}
			last = out
			got := birdCommunities(out)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Sprintf("BIRD has %v, want %v", got, want)
			}
			return ""
		})
		t.Logf("BIRD saw %s after %s", what, took)
	}
	if !slices.Contains(blocks, block1) || !slices.Contains(blocks, block2) || block1 == block2 {
		t.Fatalf("blocks %v: want one per node", blocks)
	}
	sees("node1's block with the default communities, node2's with its override's",
		map[string]string{block1: "(65001,100) (65001,300)", block2: "(4200000000,1,2)"})

	l.Apply(defaultConfig(`  communities: [{name: rack, value: "65001:100"}, {name: big, value: "4200000000:1:2"}]
  prefixAdvertisements: [{cidr: 10.244.0.0/16, communities: ["65001:200", big]}]
`))
	sees("node1's block re-advertised with the changed communities",
		map[string]string{block1: "(4200000000,1,2) (65001,200)", block2: "(4200000000,1,2)"})

	// The names stay defined for node2's override; the default's entry now covers another
	// CIDR only.
	l.Apply(defaultConfig(`  communities: [{name: rack, value: "65001:100"}, {name: big, value: "4200000000:1:2"}]
  prefixAdvertisements: [{cidr: 10.245.0.0/16, communities: [rack]}]
`))
	sees("node1's block without communities once no entry of the default object covers it",
		map[string]string{block1: "", block2: "(4200000000,1,2)"})
}

package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestConcurrentAddDel: 20 rounds of ADD, DEL, ADD and DEL of one container started
// together (the k-th call k×stagger after the first, stagger swept over 0, 1, 2, 5 and
// 20 ms), as a runtime retrying and tearing down may overlap them. Every call succeeds,
// and after each round the node is what the last call to finish left, consistently:
// either an endpoint whose address IPAM holds for it and the container has, or nothing;
// ipam check is clean. Without the per-container lock the calls release each other's
// addresses by the handle they share.
func TestConcurrentAddDel(t *testing.T) {
	l := newLab(t, 1)
	before := l.state()
	conf := l.pluginConf("1.1.0", nil)
	c := l.container("race")
	staggers := []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
	commands := []string{"ADD", "DEL", "ADD", "DEL"}
	for round := range 20 {
		stagger := staggers[round%len(staggers)]
		what := fmt.Sprintf("round %d (stagger %s)", round, stagger)
		r := l.helper("node1", helperRequest{Op: "race", Commands: commands, Stagger: stagger, Env: execEnv(t, "", c), Stdin: conf})
		for k, a := range r.Race {
			if a.Exit != 0 {
				t.Errorf("%s: %s (call %d): exit %d: %s", what, commands[k], k, a.Exit, a.Stdout)
			}
		}
		s := l.state()
		if s.Problems != "" {
			t.Errorf("%s: ipam check:\n%s", what, s.Problems)
		}
		w := l.endpoint("cni", "race")
		out, err := nsExec(t, c, "ip", "-o", "-4", "addr", "show")
		if err != nil {
			t.Fatalf("%s: %v: %s", what, err, out)
		}
		if w == nil {
			if s.InUse != 0 || s.Handles != 0 || len(s.Links) != 0 || strings.Contains(out, "eth0") {
				t.Errorf("%s: no endpoint, but %d addresses in use, %d handles, links %v; the container has %s", what, s.InUse, s.Handles, s.Links, out)
			}
			continue
		}
		if len(w.Spec.IPNetworks) != 1 || w.Spec.ContainerID != c.ID {
			t.Fatalf("%s: endpoint %+v", what, w.Spec)
		}
		addr := netip.MustParsePrefix(w.Spec.IPNetworks[0]).Addr()
		if s.InUse != 1 || s.Handles != 1 || len(s.Links) != 1 || !strings.Contains(out, " "+addr.String()+"/32 ") {
			t.Errorf("%s: endpoint with %s, but %d addresses in use, %d handles, links %v; the container has %s", what, addr, s.InUse, s.Handles, s.Links, out)
		}
		var added []netip.Addr
		for k, a := range r.Race {
			if commands[k] == "ADD" && a.Exit == 0 {
				added = append(added, resultAddrsOf(t, json.RawMessage(a.Stdout))...)
			}
		}
		if !slices.Contains(added, addr) {
			t.Errorf("%s: the endpoint's address %s is not one the round's ADDs returned (%v)", what, addr, added)
		}
	}
	l.mustCNI("DEL", l.confList("1.1.0", nil), c)
	l.settle("after the last DEL", before)
}

package felix

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/proxy"
)

// changeSequence is a fixed pseudo-random walk of LBStates over a few Services: ports
// come and go, gain and lose backends (to none), affinity, NodePorts and
// externalTrafficPolicy Local.
func changeSequence() []*proxy.LBState {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []*proxy.LBState
	for range 40 {
		st := &proxy.LBState{}
		for i := range 8 {
			if rng.IntN(4) == 0 {
				continue
			}
			p := proxy.PortLB{Key: proxy.PortKey{Namespace: "ns", Name: fmt.Sprintf("svc%d", i), Port: "p", Protocol: "TCP"},
				Protocol: "TCP", Port: 80, Frontends: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, byte(i)})}}
			if i%3 == 0 {
				p.Key.Protocol, p.Protocol = "UDP", "UDP"
			}
			for j := range rng.IntN(4) {
				p.Backends = append(p.Backends, proxy.Backend{Addr: netip.AddrFrom4([4]byte{10, 244, byte(i), byte(j + rng.IntN(2))}), Port: 8080})
			}
			if len(p.Backends) > 1 && p.Backends[0] == p.Backends[1] {
				p.Backends = p.Backends[1:]
			}
			if rng.IntN(3) == 0 {
				p.Affinity = time.Duration(10+rng.IntN(2)) * time.Second
			}
			if rng.IntN(2) == 0 {
				p.NodePort, p.NodePortFamilies = uint16(30000+i), [2]bool{true, false}
			}
			if rng.IntN(3) == 0 {
				p.Key.External, p.ExternalLocal = true, true
				if len(p.Backends) > 0 && rng.IntN(2) == 0 {
					p.LocalBackends = p.Backends[:1]
				}
			}
			st.Ports = append(st.Ports, p)
		}
		out = append(out, st.Clone())
	}
	return out
}

// TestPlanIPTablesChange: folding each change into the applied tables gives exactly the
// full render of the new state (lists in the same order), and the restore text of a
// change names only what the changed Service needs.
func TestPlanIPTablesChange(t *testing.T) {
	cfg := proxy.RenderConfig{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	seq := changeSequence()
	applied := proxy.RenderIPTables(seq[0], cfg)
	for i := 1; i < len(seq); i++ {
		PlanIPTablesChange(applied, proxy.IPTablesChangeOf(seq[i-1], seq[i], cfg))
		if want := proxy.RenderIPTables(seq[i], cfg); !reflect.DeepEqual(applied.Tables(), want.Tables()) {
			t.Fatalf("step %d: the folded tables differ from a full render:\n%v\nwant\n%v", i, applied.Tables(), want.Tables())
		}
	}

	// One backend of one Service moves: its endpoint chains change, its Service chain is
	// rewritten, and no list line is touched.
	web := func(backends ...string) *proxy.LBState {
		st := &proxy.LBState{}
		for i, name := range []string{"a", "web", "z"} {
			p := proxy.PortLB{Key: proxy.PortKey{Namespace: "ns", Name: name, Port: "p", Protocol: "TCP"}, Protocol: "TCP", Port: 80,
				Frontends: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, byte(i)})}}
			if name == "web" {
				for _, b := range backends {
					p.Backends = append(p.Backends, proxy.Backend{Addr: netip.MustParseAddr(b), Port: 8080})
				}
			}
			st.Ports = append(st.Ports, p)
		}
		return st
	}
	old, next := web("10.244.0.2", "10.244.0.3"), web("10.244.0.2", "10.244.0.4")
	applied = proxy.RenderIPTables(old, proxy.RenderConfig{})
	text := string(PlanIPTablesChange(applied, proxy.IPTablesChangeOf(old, next, proxy.RenderConfig{})))
	if strings.Contains(text, "*filter") || strings.Contains(text, "-D ") || strings.Contains(text, "-I ") {
		t.Errorf("moving a backend touched the filter table or a list:\n%s", text)
	}
	for _, frag := range []string{":tby-k-svc-", ":tby-k-sep-", "--to-destination 10.244.0.4:8080", "-X tby-k-sep-"} {
		if !strings.Contains(text, frag) {
			t.Errorf("moving a backend: no %q in\n%s", frag, text)
		}
	}
	// The last backend goes: the Service's line leaves nat tby-k-services, and a REJECT
	// line goes into filter tby-k-services, after the head and the REJECT of "a"
	// (position 3), before that of "z".
	text = string(PlanIPTablesChange(applied, proxy.IPTablesChangeOf(next, web(), proxy.RenderConfig{})))
	for _, frag := range []string{
		"-D tby-k-services -m comment --comment tby:",
		"-I tby-k-services 3 -m comment --comment tby:",
		"-d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
	} {
		if !strings.Contains(text, frag) {
			t.Errorf("the last backend gone: no %q in\n%s", frag, text)
		}
	}
	if PlanIPTablesChange(applied, proxy.IPTablesChangeOf(web(), web(), proxy.RenderConfig{})) != nil {
		t.Error("no change planned a restore")
	}
}

// TestIPTablesWarnsOnNFT: the iptables mode warns once, on the nft backend only, when it
// holds more than LargeIPTablesNFT Services (counted by Service, not by port).
func TestIPTablesWarnsOnNFT(t *testing.T) {
	twoPorts := func(n int) *proxy.LBState {
		st := benchLBState(n, -1, 0)
		for _, p := range slices.Clone(st.Ports) {
			p.Key.Port, p.Port = "https", 443
			st.Ports = append(st.Ports, p)
		}
		return st.Clone()
	}
	for _, c := range []struct {
		backend  Backend
		services int
		warns    int
	}{{BackendNFT, LargeIPTablesNFT, 0}, {BackendNFT, LargeIPTablesNFT + 1, 1}, {BackendLegacy, 5000, 0}} {
		var log bytes.Buffer
		p := NewServiceProxyIPTables(ServiceProxyConfig{Log: slog.New(slog.NewTextHandler(&log, nil))}, c.backend, Runner{})
		p.warnLarge(twoPorts(c.services))
		p.warnLarge(twoPorts(c.services))
		if got := strings.Count(log.String(), "level=WARN"); got != c.warns {
			t.Errorf("%s backend, %d Services of 2 ports: %d warnings, want %d:\n%s", c.backend.Name, c.services, got, c.warns, log.String())
		}
	}
}

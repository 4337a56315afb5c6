package felix

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
)

// TestHostInterfaceAddrsNetns lists a namespace's interfaces with their global addresses
// of both families, leaving out lo and workloads' interfaces.
func TestHostInterfaceAddrsNetns(t *testing.T) {
	ns := newTestNS(t)
	ns.ip(t, "link", "add", "eth9", "type", "veth", "peer", "name", "tabbyx1")
	ns.ip(t, "addr", "add", "10.5.0.1/24", "dev", "eth9")
	ns.ip(t, "addr", "add", "fd00::5/64", "dev", "eth9", "nodad")
	ns.ip(t, "addr", "add", "10.6.0.1/24", "dev", "tabbyx1")
	ns.ip(t, "link", "set", "eth9", "up")
	got, err := HostInterfaceAddrs(ns.h, "tabby")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]netip.Addr{"eth9": {netip.MustParseAddr("10.5.0.1"), netip.MustParseAddr("fd00::5")}}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("HostInterfaceAddrs = %v, want %v", got, want)
	}
}

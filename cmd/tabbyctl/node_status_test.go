package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/nodestatus"
)

// Each family's sessions are shown in a table of their own, IPv4 then IPv6; a node
// without IPv6 sessions shows only the IPv4 table.
func TestPrintStatusFamilies(t *testing.T) {
	now := time.Now()
	st := &nodestatus.Status{Node: "node1", Role: "node", ASN: 64512, Address: "172.31.1.10", Address6: "fd00:0:0:1::10", RouterID: "172.31.1.10",
		Peers: []nodestatus.Peer{
			{Address: "172.31.1.11", Type: "node-to-node mesh", ASN: 64512, State: "Established", Source: "node2"},
			{Address: "fd00:0:0:1::11", Type: "node-to-node mesh", ASN: 64512, State: "Established", Source: "node2"},
		}, Ready: true}
	var b strings.Builder
	printStatus(&b, st, now)
	out := b.String()
	v4, v6 := strings.Index(out, "IPv4 BGP status"), strings.Index(out, "IPv6 BGP status")
	if !strings.Contains(out, "address 172.31.1.10 and fd00:0:0:1::10,") || v4 < 0 || v6 < v4 ||
		!strings.Contains(out[v4:v6], "172.31.1.11") || strings.Contains(out[v4:v6], "fd00:0:0:1::11") || !strings.Contains(out[v6:], "fd00:0:0:1::11") {
		t.Errorf("status:\n%s", out)
	}

	st.Address6, st.Peers = "", st.Peers[:1]
	b.Reset()
	printStatus(&b, st, now)
	if out := b.String(); strings.Contains(out, "IPv6") || !strings.Contains(out, "IPv4 BGP status") {
		t.Errorf("IPv4-only status:\n%s", out)
	}
}

// Node status names every setting that is not the flags' default with its source, and
// what a FelixConfiguration says where a flag overrides it; defaults are left out.
func TestPrintStatusSettings(t *testing.T) {
	st := &nodestatus.Status{Node: "node1", Role: "node", BGPOff: true, Ready: true, Settings: []nodestatus.Setting{
		{Name: "logSeverityScreen", Value: "info", Source: "default"},
		{Name: "ipipMTU", Value: "1400", Source: "flag --ipip-mtu", Shadowed: "FelixConfiguration default says 1380"},
		{Name: "vxlanMTU", Value: "1300", Source: "FelixConfiguration node.node1"},
	}}
	var b strings.Builder
	printStatus(&b, st, time.Now())
	want := "tabby-node node1 (node) is running, BGP off\n" +
		"Setting: ipipMTU: 1400 from flag --ipip-mtu (FelixConfiguration default says 1380)\n" +
		"Setting: vxlanMTU: 1300 from FelixConfiguration node.node1\n" +
		"Readiness: ready\n"
	if got := b.String(); got != want {
		t.Errorf("status:\n%s\nwant:\n%s", got, want)
	}
}

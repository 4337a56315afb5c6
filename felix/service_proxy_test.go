package felix

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/tabby-net/tabby/proxy"
)

// countingNFT is a knftables.Fake that keeps the text of every transaction it ran.
type countingNFT struct {
	*knftables.Fake
	ran []string
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.ran = append(c.ran, tx.String())
	return c.Fake.Run(ctx, tx)
}

func TestServiceProxyCachedWritesOnlyTheChange(t *testing.T) {
	ctx := context.Background()
	nft := &countingNFT{Fake: knftables.NewFake(knftables.IPv4Family, proxy.TableName)}
	var observed []string
	sp := newServiceProxy(ServiceProxyConfig{}, nft)
	sp.Observe = func(w string, _ time.Duration, err error) {
		if err != nil {
			w += " " + err.Error()
		}
		observed = append(observed, w)
	}
	port := func(name, vip string, backends ...string) proxy.PortLB {
		p := proxy.PortLB{Key: proxy.PortKey{Namespace: "ns", Name: name, Port: "http", Protocol: "TCP"}, Protocol: "TCP", Port: 80, Frontends: []netip.Addr{netip.MustParseAddr(vip)}}
		for _, b := range backends {
			p.Backends = append(p.Backends, proxy.Backend{Addr: netip.MustParseAddr(b), Port: 8080})
		}
		return p
	}
	st := &proxy.LBState{Ports: []proxy.PortLB{port("a", "10.96.0.1", "10.65.0.1"), port("b", "10.96.0.2", "10.65.0.2")}}
	if err := sp.ApplyCached(ctx, st); err != nil { // no cache yet: a full pass
		t.Fatal(err)
	}
	if len(nft.ran) != 1 || !strings.Contains(nft.ran[0], "add table ip tabby") {
		t.Fatalf("first apply ran %q", nft.ran)
	}
	if err := sp.ApplyCached(ctx, st); err != nil || len(nft.ran) != 1 {
		t.Fatalf("an unchanged state ran %d transactions (%v), want none", len(nft.ran)-1, err)
	}
	st.Ports[1] = port("b", "10.96.0.2", "10.65.0.3")
	if err := sp.ApplyCached(ctx, st); err != nil {
		t.Fatal(err)
	}
	last := nft.ran[len(nft.ran)-1]
	if strings.Contains(last, "10.65.0.1") || !strings.Contains(last, "10.65.0.3") || strings.Contains(last, "table") {
		t.Errorf("changing Service b wrote more than b's chains:\n%s", last)
	}
	// A full pass rewrites everything, even with the cache intact.
	if err := sp.Apply(ctx, st); err != nil {
		t.Fatal(err)
	}
	if last := nft.ran[len(nft.ran)-1]; !strings.Contains(last, "10.65.0.1") || !strings.Contains(last, "flush map") {
		t.Errorf("full pass:\n%s", last)
	}
	want := nft.Dump()
	// Drift the fake by hand; the cached pass does not see it, the full pass repairs it.
	tx := nft.NewTransaction()
	tx.Flush(&knftables.Map{Name: proxy.MapServiceIPs})
	if err := nft.Fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if err := sp.ApplyCached(ctx, st); err != nil || nft.Dump() == want {
		t.Fatalf("a cached pass repaired drift (%v): it should trust its cache", err)
	}
	if err := sp.Apply(ctx, st); err != nil || nft.Dump() != want {
		t.Errorf("after a full pass (%v):\n%s\nwant\n%s", err, nft.Dump(), want)
	}
	if err := sp.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if tables := nft.Fake.Table; tables != nil {
		t.Errorf("table left after Remove: %v", tables)
	}
	if len(observed) != 6 || observed[0] != WriterNFTables {
		t.Errorf("observed %v", observed)
	}
}

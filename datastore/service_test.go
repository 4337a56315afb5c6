package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

var svcKind = mustKind("services")

// newService decodes a Service of namespace shop from its spec in YAML flow style.
func newService(t testing.TB, name, spec string) *api.Service {
	t.Helper()
	rs, err := api.Decode([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: "+name+", namespace: shop}\nspec: "+spec+"\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	return rs[0].(*api.Service)
}

// claims lists the held addresses as "<key suffix>=<owner>".
func claims(t testing.TB, c *datastore.Client) []string {
	t.Helper()
	resp, err := c.Etcd().Get(testCtx(t), "/tabby/services/v1/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), "/tabby/services/v1/")+"="+string(kv.Value))
	}
	return out
}

func setServiceCIDRs(t testing.TB, c *datastore.Client, cidrs ...string) {
	t.Helper()
	cfg := mustKind("bgpconfigurations").New().(*api.BGPConfiguration)
	cfg.Name = api.DefaultBGPConfigurationName
	for _, s := range cidrs {
		cfg.Spec.ServiceClusterIPs = append(cfg.Spec.ServiceClusterIPs, api.ServiceIPBlock{CIDR: s})
	}
	if _, err := c.Apply(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
}

func TestServiceAddresses(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)

	// Allocated on create, from the default range, and claimed.
	web := mustCreate(t, c, newService(t, "web", "{type: NodePort, ports: [{port: 80}]}")).(*api.Service)
	ip, err := netip.ParseAddr(web.Spec.ClusterIP)
	if err != nil || !netip.MustParsePrefix("10.96.0.0/12").Contains(ip) {
		t.Fatalf("clusterIP %q, want one in 10.96.0.0/12", web.Spec.ClusterIP)
	}
	np := web.Spec.Ports[0].NodePort
	if np < api.NodePortMin || np > api.NodePortMax {
		t.Errorf("nodePort %d", np)
	}
	want := []string{"clusterips/" + ip.String() + "=shop/web", fmt.Sprintf("nodeports/tcp/%d=shop/web", np)}
	if got := claims(t, c); !slices.Equal(got, want) {
		t.Errorf("claims %q, want %q", got, want)
	}
	stored, err := datastore.GetAs[*api.Service](ctx, c, "shop", "web")
	if err != nil || stored.Spec.ClusterIP != web.Spec.ClusterIP || !slices.Equal(stored.Spec.ClusterIPs, []string{ip.String()}) ||
		stored.Spec.Ports[0].NodePort != np || stored.Spec.IPFamilyPolicy != api.IPFamilyPolicySingleStack {
		t.Errorf("stored %+v (%v), want the allocated addresses", stored, err)
	}

	// Applying the manifest again keeps them, and so does a change of other fields.
	again := newService(t, "web", "{type: NodePort, ports: [{port: 80}], selector: {app: web}}")
	out, err := c.Apply(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if s := out.(*api.Service); s.Spec.ClusterIP != web.Spec.ClusterIP || s.Spec.Ports[0].NodePort != np {
		t.Errorf("re-apply gave %s %d, want %s %d", s.Spec.ClusterIP, s.Spec.Ports[0].NodePort, web.Spec.ClusterIP, np)
	}
	if got := claims(t, c); !slices.Equal(got, want) {
		t.Errorf("claims after re-apply %q, want %q", got, want)
	}
	// A new address for a Service that has one is refused.
	_, err = c.Apply(ctx, newService(t, "web", "{clusterIP: 10.96.0.7, ports: [{port: 80}]}"))
	if err == nil || !strings.Contains(err.Error(), "apply services/shop/web: spec.clusterIP: may not change once set (stored "+ip.String()+", given 10.96.0.7)") {
		t.Errorf("change of clusterIP: %v", err)
	}

	// Another Service naming the same address is refused, with its owner named, and a
	// transaction it is part of writes nothing.
	before := claims(t, c)
	_, err = c.Txn(ctx, []datastore.Op{
		{Action: datastore.OpCreate, Resource: newNetSet("shop", "friends", "10.0.0.0/8")},
		{Action: datastore.OpCreate, Resource: newService(t, "dns", "{clusterIP: 10.96.0.10, ports: [{port: 53}]}")},
		{Action: datastore.OpCreate, Resource: newService(t, "copy", "{clusterIP: "+ip.String()+", ports: [{port: 80}]}")},
	})
	if err == nil || err.Error() != "txn op 2: create services/shop/copy: spec.clusterIP: "+ip.String()+" is already allocated to Service shop/web" {
		t.Errorf("duplicate clusterIP: %v", err)
	}
	_, err = c.Create(ctx, newService(t, "copy", fmt.Sprintf("{type: NodePort, ports: [{port: 8080, nodePort: %d}]}", np)))
	if err == nil || err.Error() != fmt.Sprintf("create services/shop/copy: spec.ports[0].nodePort: %d/TCP is already allocated to Service shop/web", np) {
		t.Errorf("duplicate nodePort: %v", err)
	}
	for _, name := range []string{"dns", "copy"} {
		if _, err := c.Get(ctx, svcKind, "shop", name); !errors.Is(err, datastore.ErrNotFound) {
			t.Errorf("get refused service %s: %v", name, err)
		}
	}
	if _, err := c.Get(ctx, netsetKind, "shop", "friends"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("the refused transaction's network set: %v", err)
	}
	if got := claims(t, c); !slices.Equal(got, before) {
		t.Errorf("claims after refusals %q, want %q", got, before)
	}

	// Delete releases: the addresses can be taken again.
	if _, err := c.Delete(ctx, svcKind, "shop", "web", ""); err != nil {
		t.Fatal(err)
	}
	if got := claims(t, c); len(got) != 0 {
		t.Errorf("claims after delete: %q", got)
	}
	copySvc := mustCreate(t, c, newService(t, "copy", fmt.Sprintf("{type: NodePort, clusterIP: %s, ports: [{port: 8080, nodePort: %d}]}", ip, np))).(*api.Service)
	if copySvc.Spec.ClusterIP != ip.String() {
		t.Errorf("re-used clusterIP %s, want %s", copySvc.Spec.ClusterIP, ip)
	}

	// Changing type releases what the new type does not use.
	if _, err := c.Apply(ctx, newService(t, "copy", "{type: ExternalName, externalName: example.com}")); err != nil {
		t.Fatal(err)
	}
	if got := claims(t, c); len(got) != 0 {
		t.Errorf("claims of an ExternalName Service: %q", got)
	}
	// Headless and ExternalName Services hold nothing.
	if s := mustCreate(t, c, newService(t, "headless", "{clusterIP: None, selector: {app: db}}")).(*api.Service); s.Spec.ClusterIP != "None" {
		t.Errorf("headless clusterIP %q", s.Spec.ClusterIP)
	}
	if got := claims(t, c); len(got) != 0 {
		t.Errorf("claims of headless and ExternalName Services: %q", got)
	}
}

func TestServiceAddressesDualStack(t *testing.T) {
	c := datastoretest.Start(t)
	setServiceCIDRs(t, c, "10.100.0.0/24", "fd00:100::/120")
	s := mustCreate(t, c, newService(t, "web", "{ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}")).(*api.Service)
	if len(s.Spec.ClusterIPs) != 2 || !strings.HasPrefix(s.Spec.ClusterIPs[0], "10.100.0.") || !strings.HasPrefix(s.Spec.ClusterIPs[1], "fd00:100::") ||
		!slices.Equal(s.Spec.IPFamilies, []api.IPFamily{api.IPv4Family, api.IPv6Family}) {
		t.Errorf("dual-stack Service got %q %q", s.Spec.ClusterIPs, s.Spec.IPFamilies)
	}
	if got := claims(t, c); len(got) != 2 {
		t.Errorf("claims %q, want two", got)
	}
	// Dropping to single-stack releases the second address.
	if _, err := c.Apply(testCtx(t), newService(t, "web", "{ipFamilyPolicy: SingleStack, ports: [{port: 80}]}")); err != nil {
		t.Fatal(err)
	}
	if got := claims(t, c); !slices.Equal(got, []string{"clusterips/" + s.Spec.ClusterIPs[0] + "=shop/web"}) {
		t.Errorf("claims after downgrade %q", got)
	}
}

func TestServiceAddressesExhausted(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	setServiceCIDRs(t, c, "10.97.0.0/30")
	var got []string
	for _, name := range []string{"a", "b"} {
		got = append(got, mustCreate(t, c, newService(t, name, "{ports: [{port: 80}]}")).(*api.Service).Spec.ClusterIP)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"10.97.0.1", "10.97.0.2"}) {
		t.Errorf("allocated %q from 10.97.0.0/30", got)
	}
	_, err := c.Create(ctx, newService(t, "c", "{ports: [{port: 80}]}"))
	if err == nil || err.Error() != "create services/shop/c: spec.clusterIP: no free IPv4 cluster IP: the service CIDRs 10.97.0.0/30 are full (2 addresses, all allocated)" {
		t.Errorf("create in a full range: %v", err)
	}

	// Node ports: hold all but one by hand, then the last is the only one to give.
	var puts []clientv3.Op
	for p := api.NodePortMin; p < api.NodePortMax; p++ {
		puts = append(puts, clientv3.OpPut(fmt.Sprintf("%stcp/%d", datastore.ServiceNodePortsPrefix, p), "other/holder"))
	}
	if _, err := c.Etcd().Txn(ctx).Then(puts...).Commit(); err != nil {
		t.Fatal(err)
	}
	setServiceCIDRs(t, c)
	s := mustCreate(t, c, newService(t, "np", "{type: NodePort, ports: [{port: 80}]}")).(*api.Service)
	if s.Spec.Ports[0].NodePort != api.NodePortMax {
		t.Errorf("last node port: got %d, want %d", s.Spec.Ports[0].NodePort, api.NodePortMax)
	}
	_, err = c.Create(ctx, newService(t, "np2", "{type: NodePort, ports: [{port: 80}]}"))
	if err == nil || err.Error() != "create services/shop/np2: spec.ports[0].nodePort: no free TCP node port: 30000-32767 are all allocated" {
		t.Errorf("create with node ports exhausted: %v", err)
	}
	// UDP is another space.
	mustCreate(t, c, newService(t, "np3", "{type: NodePort, ports: [{port: 53, protocol: UDP}]}"))
}

// TestServiceAddressesConcurrent: writers racing for addresses from one range all
// succeed (a lost race re-reads and picks again) and never share one.
func TestServiceAddressesConcurrent(t *testing.T) {
	e := datastoretest.StartEmbedded(t)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		c := datastoretest.Connect(t, e)
		wg.Go(func() {
			for i := range each {
				s := newService(t, fmt.Sprintf("s%d-%d", w, i), "{type: NodePort, ports: [{port: 80}]}")
				if _, err := c.Create(context.Background(), s); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := datastoretest.Connect(t, e)
	svcs, _, err := datastore.ListAs[*api.Service](testCtx(t), c, "shop")
	if err != nil {
		t.Fatal(err)
	}
	ips, ports := map[string]string{}, map[int32]string{}
	for _, s := range svcs {
		if o, dup := ips[s.Spec.ClusterIP]; dup {
			t.Errorf("%s and %s share clusterIP %s", o, s.Name, s.Spec.ClusterIP)
		}
		ips[s.Spec.ClusterIP] = s.Name
		np := s.Spec.Ports[0].NodePort
		if o, dup := ports[np]; dup {
			t.Errorf("%s and %s share nodePort %d", o, s.Name, np)
		}
		ports[np] = s.Name
	}
	if len(svcs) != writers*each || len(claims(t, c)) != 2*writers*each {
		t.Errorf("%d services, %d claims; want %d and %d", len(svcs), len(claims(t, c)), writers*each, 2*writers*each)
	}
}

// TestServiceAddressesBurst: as many writers as a /28 has addresses, at once, each
// creating one Service: they collide (the range leaves few choices), retry, and
// between them take every address.
func TestServiceAddressesBurst(t *testing.T) {
	e := datastoretest.StartEmbedded(t)
	c := datastoretest.Connect(t, e)
	setServiceCIDRs(t, c, "10.98.0.0/28")
	var retries atomic.Int64
	log := slog.New(countHandler{msg: "etcd transaction raced another writer; retrying", n: &retries})
	const n = 14
	var wg sync.WaitGroup
	ips := make([]string, n)
	for i := range n {
		w, err := datastore.Connect(testCtx(t), datastore.Config{Endpoints: e.Endpoints(), Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		wg.Go(func() {
			out, err := w.Create(context.Background(), newService(t, fmt.Sprintf("s%d", i), "{ports: [{port: 80}]}"))
			if err != nil {
				t.Error(err)
				return
			}
			ips[i] = out.(*api.Service).Spec.ClusterIP
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.SortFunc(ips, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	for i, ip := range ips {
		if want := fmt.Sprintf("10.98.0.%d", i+1); ip != want {
			t.Fatalf("addresses %q, want each of 10.98.0.1-14 once", ips)
		}
	}
	t.Logf("%d writers, %d retries after a lost race", n, retries.Load())
}

// countHandler counts the log records with one message.
type countHandler struct {
	msg string
	n   *atomic.Int64
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

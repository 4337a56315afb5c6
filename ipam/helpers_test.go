package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/datastore/embedded"
)

// env is an embedded etcd with a datastore client (pool guard registered) and an IPAM
// client on it.
type env struct {
	t  testing.TB
	e  *embedded.Etcd
	ds *datastore.Client
	c  *Client
}

func newEnv(t testing.TB) *env {
	e := datastoretest.StartEmbedded(t)
	return envOn(t, e)
}

// envOn connects another client to the same etcd.
func envOn(t testing.TB, e *embedded.Etcd) *env {
	ds := datastoretest.Connect(t, e)
	ds.AddWriteCheck(PoolInUseCheck())
	return &env{t: t, e: e, ds: ds, c: New(ds, slog.New(slog.DiscardHandler))}
}

// testCtx bounds a test's calls, so a broken etcd fails the test instead of hanging it.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) pool(name, cidr string, blockSize int, mods ...func(*api.IPPool)) *api.IPPool {
	e.t.Helper()
	p := poolKind.New().(*api.IPPool)
	p.Name, p.Spec.CIDR, p.Spec.BlockSize = name, cidr, blockSize
	for _, m := range mods {
		m(p)
	}
	out, err := e.ds.Apply(testCtx(e.t), p)
	if err != nil {
		e.t.Fatal(err)
	}
	return out.(*api.IPPool)
}

func (e *env) node(name string, labels map[string]string) {
	e.t.Helper()
	n := nodeKind.New().(*api.Node)
	n.Name, n.Labels = name, labels
	if _, err := e.ds.Apply(testCtx(e.t), n); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deleteNode(name string) {
	e.t.Helper()
	if _, err := e.ds.Delete(testCtx(e.t), nodeKind, "", name, ""); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) wep(ns, name, node, containerID string, addrs ...netip.Addr) {
	e.t.Helper()
	w := wepKind.New().(*api.WorkloadEndpoint)
	w.Namespace, w.Name = ns, name
	w.Spec = api.WorkloadEndpointSpec{Node: node, ContainerID: containerID, InterfaceName: "eth0", Workload: name}
	for _, a := range addrs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, netip.PrefixFrom(a, a.BitLen()).String())
	}
	if _, err := e.ds.Apply(testCtx(e.t), w); err != nil {
		e.t.Fatal(err)
	}
}

// assign auto-assigns n4 IPv4 and n6 IPv6 addresses, failing the test on error.
func (e *env) assign(node, handle string, n4, n6 int) *AutoAssignResult {
	e.t.Helper()
	res, err := e.c.AutoAssign(testCtx(e.t), AutoAssignArgs{Num4: n4, Num6: n6, Handle: handle, Node: node})
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// assign1 auto-assigns one IPv4 address.
func (e *env) assign1(node, handle string) Assignment {
	e.t.Helper()
	return e.assign(node, handle, 1, 0).IPv4[0]
}

func (e *env) usage() *Usage {
	e.t.Helper()
	u, err := e.c.Usage(testCtx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// check runs Check and fails the test on any problem.
func (e *env) checkClean() *Report {
	e.t.Helper()
	r, err := e.c.Check(testCtx(e.t), CheckOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if r.Problems() != 0 {
		e.t.Errorf("ipam check found %d problems:\n%s", r.Problems(), r)
	}
	return r
}

func wepHandle(i int) string { return WorkloadHandle("tabby-net", fmt.Sprintf("c%d", i)) }

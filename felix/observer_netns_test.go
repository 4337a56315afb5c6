package felix

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// The Dataplane tells its observer of every pass and counts the routes it programmed.
func TestDataplaneObserverAndRoutes(t *testing.T) {
	ns := newTestNS(t)
	a := vethName()
	ns.veth(t, a)
	var obs observed
	d := startDataplaneConfig(t, ns, Config{ResyncInterval: time.Hour, Observe: obs.observer()})
	d.Update(LocalState{
		Workloads: []Workload{{Name: "ns/a", Interface: a, Addrs: addrs("10.65.0.5", "fd00::5")}},
		Blocks:    prefixes("10.65.0.0/26"),
	})
	st := waitPass(t, d, 0)
	if st.Err != nil || st.Routes != 3 {
		t.Fatalf("first pass: err %v, %d routes; want nil and 3", st.Err, st.Routes)
	}
	if got := obs.take(); len(got) == 0 || slices.ContainsFunc(got, func(o observation) bool { return o != observation{WriterRoutes, false} }) {
		t.Errorf("observed %v, want only successful %q passes", got, WriterRoutes)
	}

	// A stray route of felix's protocol is removed; a workload gone takes its routes.
	ns.ip(t, "route", "add", "10.65.0.77/32", "dev", a, "proto", "116", "scope", "link")
	d.Update(LocalState{Blocks: prefixes("10.65.0.0/26")})
	eventually(t, 5*time.Second, "one route programmed", func() (bool, string) {
		st := d.Status()
		return st.Routes == 1 && len(ns.routes(t, "proto", "116")) == 1, fmt.Sprintf("status says %d routes", st.Routes)
	})
	if got := obs.take(); len(got) == 0 || got[0] != (observation{WriterRoutes, false}) {
		t.Errorf("observed %v after the update", got)
	}
}

// The tunnel reconcilers tell their observers of every Apply and how it ended.
func TestTunnelReconcilersObserve(t *testing.T) {
	ns := newTestNS(t)
	var obs observed
	v := NewVXLANReconciler(ns.h, nil)
	v.Observe = obs.observer()
	if _, err := v.Apply(nil, nil); err != nil {
		t.Fatal(err)
	}
	ip := NewIPIPReconciler(ns.h, nil)
	ip.Observe = obs.observer()
	if _, err := ip.Apply(netip.Addr{}, 0); err != nil {
		t.Fatal(err)
	}
	// Without ipip in the kernel (as on the build machine) this fails; in a VM it works.
	_, err := ip.Apply(netip.MustParseAddr("10.244.0.1"), 1480)
	want := []observation{{WriterVXLAN, false}, {WriterIPIP, false}, {WriterIPIP, err != nil}}
	if got := obs.take(); !slices.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}
}

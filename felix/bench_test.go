package felix

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const benchWorkloads = 10_000

// benchNode is a namespace with an uplink and benchWorkloads workload veths, each with one
// address: the shape of a node at 10,000 workloads. Building it takes a few seconds.
//
// The uplink's address matters: the kernel gives every scope-link route the first address
// it finds of scope link or wider, looking at the route's device and then at every device
// in creation order. Workload veths have no address, so on a node whose first addressed
// device came after thousands of veths, or that had none, each route add would walk them
// all: about 1 ms per route at 20,000 devices.
func benchNode(b *testing.B) (*testNS, LocalState) {
	ns := newTestNS(b)
	ns.veth(b, "eth0")
	ns.ip(b, "addr", "add", "10.0.0.5/24", "dev", "eth0")
	var batch strings.Builder
	var s LocalState
	for i := range benchWorkloads {
		name := fmt.Sprintf("tabby%010x", i)
		fmt.Fprintf(&batch, "link add %s type veth peer name p%010x\nlink set %s up\n", name, i, name)
		s.Workloads = append(s.Workloads, Workload{
			Name: fmt.Sprintf("bench/w%d", i), Interface: name,
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 64 + byte(i>>16), byte(i >> 8), byte(i)})},
		})
	}
	file := filepath.Join(b.TempDir(), "veths")
	if err := os.WriteFile(file, []byte(batch.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	ns.ip(b, "-batch", file)
	return ns, s
}

func routesPerSecond(b *testing.B, routes int, elapsed time.Duration) {
	b.ReportMetric(float64(routes*b.N)/elapsed.Seconds(), "routes/s")
}

// BenchmarkRouteApply measures route passes over 10,000 workload routes as Dataplane runs
// them (with its link table at hand and strict checking on): writing them all, a pass
// that finds nothing to do, and a pass with one route moved (one add, one delete). Each
// pass dumps felix's routes first. routes/s counts the routes a pass covers, written or
// not. list-links is the interface dump Dataplane avoids by following link events.
func BenchmarkRouteApply(b *testing.B) {
	ns, state := benchNode(b)
	desired, _ := DesiredRoutes(state)
	if err := ns.h.SetStrictCheck(true); err != nil {
		b.Fatal(err)
	}
	r := NewRouteReconciler(ns.h, 0, nil)
	links, err := listLinks(ns.h)
	if err != nil {
		b.Fatal(err)
	}
	// apply runs one pass; wantWrites < 0 accepts any number of writes.
	apply := func(routes []Route, wantWrites int) {
		st, err := r.apply(routes, links, false)
		if err != nil {
			b.Fatal(err)
		}
		writes := st.Added + st.Replaced + st.Deleted
		if (wantWrites >= 0 && writes != wantWrites) || len(st.Skipped) > 0 {
			b.Fatalf("%d writes, %d skipped; want %d writes", writes, len(st.Skipped), wantWrites)
		}
	}

	b.Run("from-empty", func(b *testing.B) {
		var elapsed time.Duration
		for range b.N {
			b.StopTimer()
			apply(nil, -1)
			b.StartTimer()
			start := time.Now()
			apply(desired, len(desired))
			elapsed += time.Since(start)
		}
		routesPerSecond(b, len(desired), elapsed)
	})
	b.Run("no-op", func(b *testing.B) {
		apply(desired, -1)
		start := time.Now()
		for b.Loop() {
			apply(desired, 0)
		}
		routesPerSecond(b, len(desired), time.Since(start))
	})
	b.Run("one-change", func(b *testing.B) {
		apply(desired, -1)
		moved := append([]Route(nil), desired...)
		moved[0].Dst = netip.MustParsePrefix("10.127.255.255/32")
		sets := [2][]Route{moved, desired}
		i := 0
		start := time.Now()
		for b.Loop() {
			apply(sets[i%2], 2)
			i++
		}
		routesPerSecond(b, len(desired), time.Since(start))
	})
	b.Run("list-links", func(b *testing.B) {
		for b.Loop() {
			if _, err := listLinks(ns.h); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDataplanePass measures a whole Dataplane pass at 10,000 workloads when nothing
// has changed: the event-driven kind, which skips sysctls already verified, and the
// periodic kind, which reads all 20,000 per-veth sysctls again.
func BenchmarkDataplanePass(b *testing.B) {
	ns, state := benchNode(b)
	d, err := NewDataplane(Config{NetNS: ns.path})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	links, err := listLinks(d.h) // what Run's subscription does
	if err != nil {
		b.Fatal(err)
	}
	d.links.load(links)
	start := time.Now()
	if err := d.sync(state, true, "bench"); err != nil {
		b.Fatal(err)
	}
	st := d.Status()
	if st.Stats.Added != benchWorkloads || len(st.Stats.Skipped) > 0 || st.Sysctls != 2*benchWorkloads+1 {
		b.Fatalf("first pass: %d added, %d skipped, %d sysctls written; want %d, 0, %d",
			st.Stats.Added, len(st.Stats.Skipped), st.Sysctls, benchWorkloads, 2*benchWorkloads+1)
	}
	b.Logf("first pass: %v for %d routes and %d sysctls", time.Since(start), st.Stats.Added, st.Sysctls)

	for _, full := range []bool{false, true} {
		name := map[bool]string{false: "event", true: "periodic"}[full]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := d.sync(state, full, "bench"); err != nil {
					b.Fatal(err)
				}
				if st := d.Status(); st.Stats.Changed() || st.Sysctls > 0 || len(st.Stats.Skipped) > 0 {
					b.Fatalf("a pass over an unchanged node wrote: %+v", st)
				}
			}
		})
	}
}

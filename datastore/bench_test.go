package datastore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
	"github.com/tabby-net/tabby/datastore/embedded"
)

// benchClient is a client of an embedded etcd that fsyncs, as a real one does.
func benchClient(b *testing.B) *datastore.Client {
	e, err := embedded.Start(context.Background(), embedded.Config{
		DataDir:      filepath.Join(b.TempDir(), "etcd"),
		ListenClient: "http://127.0.0.1:0",
		ListenPeer:   "http://127.0.0.1:0",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	return datastoretest.Connect(b, e)
}

// Network sets stand in for the high-churn kinds (workload endpoints): small, namespaced.
func BenchmarkCreate(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := c.Create(ctx, newNetSet("default", fmt.Sprintf("s%d", i), "10.0.0.1")); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkUpdate(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	r := mustCreate(b, c, newNetSet("default", "s", "10.0.0.1"))
	i := 0
	for b.Loop() {
		s := r.(*api.NetworkSet)
		s.Spec.Nets = []string{fmt.Sprintf("10.0.%d.%d", i/256%256, i%256)}
		var err error
		if r, err = c.Update(ctx, s); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkList1000(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	for batch := range 10 {
		var ops []datastore.Op
		for i := range 100 {
			ops = append(ops, datastore.Op{Action: datastore.OpCreate,
				Resource: newNetSet(fmt.Sprintf("ns%d", i%10), fmt.Sprintf("s%d-%d", batch, i), "10.0.0.1", "10.1.0.0/16")})
		}
		if _, err := c.Txn(ctx, ops); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		items, _, err := c.List(ctx, netsetKind, "")
		if err != nil || len(items) != 1000 {
			b.Fatal(len(items), err)
		}
	}
}

// BenchmarkWatchLatency measures from the start of an update to its event's delivery.
func BenchmarkWatchLatency(b *testing.B) {
	c := benchClient(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := mustCreate(b, c, newNetSet("default", "s", "10.0.0.1"))
	ch := c.Watch(ctx, netsetKind, "", 0)
	untilSynced(b, ch)
	var lat []time.Duration
	i := 0
	for b.Loop() {
		s := r.(*api.NetworkSet)
		s.Spec.Nets = []string{fmt.Sprintf("10.0.%d.%d", i/256%256, i%256)}
		start := time.Now()
		var err error
		if r, err = c.Update(ctx, s); err != nil {
			b.Fatal(err)
		}
		if ev := nextEvent(b, ch); ev.Type != datastore.Modified {
			b.Fatalf("event %v", ev.Type)
		}
		lat = append(lat, time.Since(start))
		i++
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkConnect is what every tabby-cni and tabbyctl run pays to reach etcd: Connect
// (dial, and a linearizable read of one key) and Close, over plain HTTP (the baseline)
// and over TLS with a client certificate, in the same run.
func BenchmarkConnect(b *testing.B) {
	plain := datastoretest.StartEmbedded(b)
	secure, files := datastoretest.StartEmbeddedTLS(b)
	for _, bc := range []struct {
		name string
		cfg  datastore.Config
	}{
		{"plain", datastore.Config{Endpoints: plain.Endpoints()}},
		{"tls", datastore.Config{Endpoints: secure.Endpoints(), CAFile: files.CAFile, CertFile: files.Client.CertFile, KeyFile: files.Client.KeyFile}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				c, err := datastore.Connect(context.Background(), bc.cfg)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/datastore/embedded"
)

// benchEnv is an env on an embedded etcd that fsyncs, as a real one does.
func benchEnv(b *testing.B) *env {
	e, err := embedded.Start(context.Background(), embedded.Config{
		DataDir:      filepath.Join(b.TempDir(), "etcd"),
		ListenClient: "http://127.0.0.1:0",
		ListenPeer:   "http://127.0.0.1:0",
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	return envOn(b, e)
}

func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "allocs/s")
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
}

// BenchmarkAutoAssign: one node allocating one address at a time (one new block every
// 64 allocations).
func BenchmarkAutoAssign(b *testing.B) {
	e := benchEnv(b)
	e.pool("big", "10.0.0.0/8", 26)
	e.node("n1", nil)
	ctx := context.Background()
	var lat []time.Duration
	i := 0
	began := time.Now()
	for b.Loop() {
		t0 := time.Now()
		if _, err := e.c.AutoAssign(ctx, AutoAssignArgs{Num4: 1, Handle: fmt.Sprintf("h%d", i), Node: "n1"}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		i++
	}
	reportLatency(b, lat, time.Since(began))
}

// BenchmarkAutoAssign8Nodes: eight nodes (goroutines, each with its own client)
// allocating at once.
func BenchmarkAutoAssign8Nodes(b *testing.B) {
	e := benchEnv(b)
	e.pool("big", "10.0.0.0/8", 26)
	clients := make([]*Client, 8)
	for i := range clients {
		e.node(fmt.Sprintf("n%d", i), nil)
		clients[i] = envOn(b, e.e).c
	}
	ctx := context.Background()
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	began := time.Now()
	var wg sync.WaitGroup
	for n, c := range clients {
		wg.Go(func() {
			var mine []time.Duration
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				t0 := time.Now()
				if _, err := c.AutoAssign(ctx, AutoAssignArgs{Num4: 1, Handle: fmt.Sprintf("h%d", i), Node: fmt.Sprintf("n%d", n)}); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	reportLatency(b, lat, time.Since(began))
}

// BenchmarkBlockClaim: claiming a block (pending affinity, then block and confirmed
// affinity).
func BenchmarkBlockClaim(b *testing.B) {
	e := benchEnv(b)
	e.pool("big", "10.0.0.0/8", 26)
	ctx := context.Background()
	r, err := e.c.readRound(ctx, "n1", "h")
	if err != nil {
		b.Fatal(err)
	}
	pool := r.pools[0]
	var i uint64
	for b.Loop() {
		if err := e.c.claimBlock(ctx, "n1", nthBlock(pool.prefix, 26, i), pool); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCheck100k: Check over 100,000 allocations (1,563 full /26 blocks on 8
// nodes, one handle per address, as workloads have), written directly.
func BenchmarkCheck100k(b *testing.B) {
	e := benchEnv(b)
	e.pool("big", "10.0.0.0/8", 26)
	const allocations = 100_000
	ctx := context.Background()
	pools, err := poolsFromKVs(must(e.c.etcd.Get(ctx, poolsPrefix, clientv3.WithPrefix())).Kvs)
	if err != nil {
		b.Fatal(err)
	}
	var ops []clientv3.Op
	flush := func() {
		if _, err := e.c.etcd.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	for n, i := 0, uint64(0); n < allocations; i++ {
		node := fmt.Sprintf("n%d", i%8)
		if i < 8 {
			e.node(node, nil)
		}
		blk := newBlock(nthBlock(pools[0].prefix, 26, i), node, 1)
		for ord := 0; ord < blk.size() && n < allocations; ord, n = ord+1, n+1 {
			h := fmt.Sprintf("h%d", n)
			blk.autoAssign(1, h, map[string]string{AttrNode: node})
			ops = append(ops, putJSON(handleKey(h), handleRecord{Handle: h, Blocks: map[string]int{blk.CIDR.String(): 1}}))
		}
		ops = append(ops, putJSON(blockKey(blk.CIDR), blk), putJSON(affinityKey(node, blk.CIDR), affinity{State: affinityConfirmed}))
		if len(ops) > 1000 {
			flush()
		}
	}
	flush()
	for b.Loop() {
		r, err := e.c.Check(ctx, CheckOptions{})
		if err != nil || r.Problems() != 0 || r.Summary.Allocations != allocations {
			b.Fatalf("check: %v, %d problems, %d allocations", err, r.Problems(), r.Summary.Allocations)
		}
	}
}

package ipam

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/datastore"
)

// The multi-process tests run this test binary again as helper processes, each an
// IPAM client of its own (one node), against the test's embedded etcd.
const (
	envHelper   = "TABBY_IPAM_HELPER" // "alloc" or "crash"
	envEtcd     = "TABBY_IPAM_ETCD"
	envNode     = "TABBY_IPAM_NODE"
	envCount    = "TABBY_IPAM_COUNT"
	envStartDir = "TABBY_IPAM_START" // helpers wait for a file "go" here, to start at once
)

// TestHelperProcess is not a test of its own: it is the body of a helper process.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode == "" {
		t.Skip("helper process for the multi-process tests")
	}
	ctx := context.Background()
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: strings.Split(os.Getenv(envEtcd), ",")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c := New(ds, slog.New(slog.DiscardHandler))
	node := os.Getenv(envNode)
	switch mode {
	case "alloc":
		err = helperAlloc(ctx, c, node)
	case "crash":
		err = helperCrash(ctx, c, node)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, node+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// helperResult is what an alloc helper prints: the addresses it holds at the end, by
// handle, and how long each AutoAssign took.
type helperResult struct {
	Held map[string]netip.Addr `json:"held"`
	// Blocks are the blocks of every AutoAssign, released addresses' too.
	Blocks    []netip.Prefix  `json:"blocks"`
	Latencies []time.Duration `json:"latencies"`
	Elapsed   time.Duration   `json:"elapsed"`
}

// helperAlloc allocates n addresses one at a time, releases every other one by
// handle, and allocates n/2 more.
func helperAlloc(ctx context.Context, c *Client, node string) error {
	n, err := strconv.Atoi(os.Getenv(envCount))
	if err != nil {
		return err
	}
	start := filepath.Join(os.Getenv(envStartDir), "go")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(2 * time.Millisecond) {
		if _, err := os.Stat(start); err == nil {
			break
		} else if time.Now().After(deadline) {
			return errors.New("no start signal within a minute")
		}
	}
	res := helperResult{Held: map[string]netip.Addr{}}
	began := time.Now()
	assign := func(i int) error {
		h := fmt.Sprintf("%s.%d", node, i)
		t0 := time.Now()
		got, err := c.AutoAssign(ctx, AutoAssignArgs{Num4: 1, Handle: h, Node: node})
		if err != nil {
			return err
		}
		res.Latencies = append(res.Latencies, time.Since(t0))
		res.Held[h] = got.IPv4[0].Addr
		res.Blocks = append(res.Blocks, got.IPv4[0].Block)
		return nil
	}
	for i := range n {
		if err := assign(i); err != nil {
			return err
		}
	}
	for i := 0; i < n; i += 2 {
		h := fmt.Sprintf("%s.%d", node, i)
		rel, err := c.ReleaseByHandle(ctx, h)
		if err != nil {
			return err
		}
		if len(rel) != 1 || rel[0] != res.Held[h] {
			return fmt.Errorf("release of %s freed %v, want %s", h, rel, res.Held[h])
		}
		delete(res.Held, h)
	}
	for i := n; i < n+n/2; i++ {
		if err := assign(i); err != nil {
			return err
		}
	}
	res.Elapsed = time.Since(began)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// helperCrash allocates and releases forever, printing a line per allocation, until
// it is killed.
func helperCrash(ctx context.Context, c *Client, node string) error {
	var held []string
	for i := 0; ; i++ {
		h := fmt.Sprintf("%s.%d.%d", node, os.Getpid(), i)
		_, err := c.AutoAssign(ctx, AutoAssignArgs{Num4: 1 + i%3, Handle: h, Node: node})
		switch {
		case errors.Is(err, ErrNoFreeAddresses):
			// The pool is full, mostly of what killed predecessors held: release all
			// of the node's handles, as a restarted agent cleaning up would.
			resp, err := c.etcd.Get(ctx, handleKey(node+"."), clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				return err
			}
			for _, kv := range resp.Kvs {
				if _, err := c.ReleaseByHandle(ctx, strings.TrimPrefix(string(kv.Key), handlesPrefix)); err != nil {
					return err
				}
			}
			held = nil
			continue
		case err != nil:
			return err
		}
		held = append(held, h)
		fmt.Println("allocated", h)
		if i%4 == 3 {
			if _, err := c.ReleaseByHandle(ctx, held[0]); err != nil {
				return err
			}
			held = held[1:]
		}
	}
}

func helperCmd(ctx context.Context, e *env, mode, node string, extra ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envEtcd+"="+strings.Join(e.e.Endpoints(), ","), envNode+"="+node)
	cmd.Env = append(cmd.Env, extra...)
	return cmd
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// Eight processes allocate 1,000 addresses each from one /19 at once, release half,
// and allocate again. A ninth node holds 10 addresses in one block first, so the
// eight share 127 of the 128 blocks: at least one of them gets 15 blocks (960
// addresses) and must borrow. No address may be held twice, the handles must match
// the blocks, and the pool's usage must be exact.
func TestEightProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 8 processes for tens of seconds")
	}
	e := newEnv(t)
	e.pool("small", "10.32.0.0/19", 26)
	e.node("node0", nil)
	const procs, perProc, seeded = 8, 1000, 10
	holder := map[netip.Addr]string{} // every address held, and by which handle
	for _, a := range e.assign("node0", "seed", seeded, 0).IPv4 {
		holder[a.Addr] = "seed"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	startDir := t.TempDir()
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 1; i <= procs; i++ {
		node := fmt.Sprintf("node%d", i)
		e.node(node, nil)
		cmd := helperCmd(ctx, e, "alloc", node, envCount+"="+strconv.Itoa(perProc), envStartDir+"="+startDir)
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	if err := os.WriteFile(filepath.Join(startDir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	var lat []time.Duration
	usedBlocks := map[string][]netip.Prefix{} // node → the blocks of its AutoAssigns
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper node%d: %v", i+1, err)
		}
		var res helperResult
		if err := json.Unmarshal(outs[i].Bytes(), &res); err != nil {
			t.Fatalf("helper node%d output: %v: %s", i+1, err, outs[i])
		}
		if len(res.Held) != perProc {
			t.Errorf("node%d holds %d addresses, want %d", i+1, len(res.Held), perProc)
		}
		for h, a := range res.Held {
			if other, dup := holder[a]; dup {
				t.Errorf("%s is held by %s and %s", a, other, h)
			}
			holder[a] = h
		}
		lat = append(lat, res.Latencies...)
		usedBlocks[fmt.Sprintf("node%d", i+1)] = res.Blocks
	}
	elapsed := time.Since(began)
	t.Logf("%d processes: %d allocations and %d releases in %s (%.0f AutoAssign/s overall); AutoAssign p50 %s, p99 %s",
		procs, len(lat), procs*perProc/2, elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds(),
		percentile(lat, 0.5).Round(time.Microsecond), percentile(lat, 0.99).Round(time.Microsecond))

	// etcd holds exactly what the processes hold.
	s, err := e.c.readState(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	stored, borrowed, everBorrowed := 0, 0, 0
	for node, blocks := range usedBlocks {
		for _, b := range blocks {
			if sb := s.blocks[b]; sb == nil || sb.b.node() != node {
				everBorrowed++
			}
		}
	}
	for _, sb := range s.blocks {
		for ord := range sb.b.Allocations {
			h := sb.b.holder(ord)
			if h == nil {
				continue
			}
			stored++
			if a := sb.b.addr(ord); holder[a] != h.Handle {
				t.Errorf("etcd has %s held by %q, the processes say %q", a, h.Handle, holder[a])
			}
			if h.Secondary[AttrNode] != sb.b.node() {
				borrowed++
			}
		}
	}
	if stored != procs*perProc+seeded || len(s.handles) != procs*perProc+1 {
		t.Errorf("etcd holds %d addresses under %d handles, want %d under %d", stored, len(s.handles), procs*perProc+seeded, procs*perProc+1)
	}
	t.Logf("%d blocks; %d AutoAssigns borrowed, %d addresses held at the end are borrowed", len(s.blocks), everBorrowed, borrowed)
	if borrowed == 0 {
		t.Error("no node borrowed, though one of them can have at most 15 blocks")
	}
	e.checkClean()
	u := e.usage()
	if u.Pools[0].InUse != procs*perProc+seeded {
		t.Errorf("pool usage %d, want %d", u.Pools[0].InUse, procs*perProc+seeded)
	}
}

// Helper processes are killed (SIGKILL) mid-allocation, again and again. Every write
// being one transaction, the state stays consistent: Check is clean (stale pending
// claims aside, which GC removes), usage equals what the handles hold, and once the
// handles are released every address of the pool can be allocated again.
func TestCrashSafety(t *testing.T) {
	e := newEnv(t)
	e.pool("crash", "10.64.0.0/24", 29) // 32 blocks of 8: many claims
	e.node("crasher", nil)
	e.node("survivor", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for round := range 8 {
		cmd := helperCmd(ctx, e, "crash", "crasher")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines, want := 0, 1+rand.IntN(60)
		sc := bufio.NewScanner(stdout)
		for lines < want && sc.Scan() {
			lines++
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, stdout)
		if err := cmd.Wait(); err == nil || lines < want {
			t.Fatalf("round %d: helper ended on its own after %d lines (%v): %s", round, lines, err, stderr.String())
		}
	}

	r, err := e.c.Check(testCtx(t), CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Problems() != 0 {
		t.Errorf("after the crashes:\n%s", r)
	}
	s, err := e.c.readState(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	counted := 0
	for _, h := range s.handles {
		counted += h.rec.total()
	}
	if u := e.usage(); u.Pools[0].InUse != counted {
		t.Errorf("pool usage %d, handles hold %d", u.Pools[0].InUse, counted)
	}
	t.Logf("after the crashes: %d addresses under %d handles, %d blocks, %d affinities", counted, len(s.handles), len(s.blocks), len(s.affinities))

	// GC removes claims a killed process left pending.
	clk := newClock()
	g := e.c.NewGarbageCollector(GCOptions{GracePeriod: time.Minute, Now: clk.now})
	e.gcPass(g)
	clk.advance(time.Minute)
	e.gcPass(g)
	for ref, sa := range s.affinities {
		if sa.a.State == affinityPending {
			t.Logf("GC had a pending claim to remove: %s %s", ref.node, ref.cidr)
		}
	}
	r, err = e.c.Check(testCtx(t), CheckOptions{PendingAge: time.Nanosecond})
	if err != nil || r.Problems() != 0 {
		t.Errorf("after GC: %v\n%s", err, r)
	}

	// Nothing is lost for good: release every handle, then the whole pool is allocatable.
	for h := range s.handles {
		if _, err := e.c.ReleaseByHandle(testCtx(t), h); err != nil {
			t.Fatal(err)
		}
	}
	if u := e.usage(); u.Pools[0].InUse != 0 {
		t.Errorf("%d addresses in use after releasing every handle", u.Pools[0].InUse)
	}
	if res := e.assign("survivor", "everything", 256, 0); len(res.IPv4) != 256 {
		t.Errorf("allocated %d of the pool's 256 addresses", len(res.IPv4))
	}
	e.checkClean()
}

package felix

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/testenv"
)

// requireTools skips a test whose commands are missing, unless CI is set.
func requireTools(t testing.TB, cmds ...string) {
	t.Helper()
	for _, cmd := range cmds {
		pkg := "iptables" // every command here but ipset comes with it
		if cmd == "ipset" {
			pkg = "ipset"
		}
		testenv.RequireTools(t, testenv.Tool{Cmd: cmd, Package: pkg})
	}
}

// runIptables runs the backend's iptables with args in r's namespace.
func runIptables(t *testing.T, r Runner, backend Backend, args ...string) string {
	t.Helper()
	out, err := r.Run(context.Background(), nil, strings.TrimSuffix(backend.Save, "-save"), args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// testSyncer is a PolicySyncer over r with backend, logging to t.
func testSyncer(t *testing.T, r Runner, backend Backend) *PolicySyncer {
	return &PolicySyncer{run: r, backend: backend, log: slog.New(slog.NewTextHandler(testWriter{t}, nil)), kick: make(chan struct{}, 1)}
}

// saveTable returns the backend's iptables-save of table in r's namespace.
func saveTable(t *testing.T, r Runner, backend Backend, table string) string {
	t.Helper()
	out, err := r.Run(context.Background(), nil, backend.Save, "-t", table)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestPolicySyncerNetns(t *testing.T) {
	requireTools(t, "iptables-nft-restore", "iptables-legacy-restore", "ipset")
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(backend.Name, func(t *testing.T) {
			ns := newTestNS(t)
			ctx := context.Background()
			r := Runner{NetNS: ns.name}
			ipt := func(args ...string) string { t.Helper(); return runIptables(t, r, backend, args...) }
			save := func() string { t.Helper(); return saveTable(t, r, backend, "filter") }
			// Another program's rules, before and after ours.
			ipt("-A", "FORWARD", "-s", "1.2.3.4/32", "-j", "DROP")
			ipt("-N", "OTHER")
			ipt("-A", "OTHER", "-d", "5.6.7.8/32", "-j", "ACCEPT")
			ipt("-A", "INPUT", "-j", "OTHER")

			s := testSyncer(t, r, backend)
			want := RenderPolicy(buildModel(t, renderWorld), "node1", PolicyConfig{})
			if err := s.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			if len(st.LastWritten) != len(want.Chains) {
				t.Errorf("first sync wrote %d chains, want %d", len(st.LastWritten), len(want.Chains))
			}
			out := save()
			for _, frag := range []string{
				"-A FORWARD -s 1.2.3.4/32 -j DROP", "-A OTHER -d 5.6.7.8/32 -j ACCEPT", "-A INPUT -j OTHER",
				":tby-pi-x_allow-b", "-j tby-pi-x_allow-b",
			} {
				if !strings.Contains(out, frag) {
					t.Errorf("iptables-save lacks %q:\n%s", frag, out)
				}
			}
			if k := ParseFilter([]byte(out)); len(k.Hooks["FORWARD"]) != 1 || k.Hooks["FORWARD"][0].pos != 1 {
				t.Errorf("FORWARD hooks %v, want one at position 1", k.Hooks["FORWARD"])
			}
			sets, err := r.Run(ctx, nil, "ipset", "list", "-n")
			if err != nil {
				t.Fatal(err)
			}
			for name := range want.IPSets {
				if !strings.Contains(string(sets), name) {
					t.Errorf("ipset %s missing: %s", name, sets)
				}
			}

			// go-iptables sees the hook and its chain, in the test's namespace, and then not.
			if v, err := BackendVersion(backend, false); err != nil || !strings.HasPrefix(v, "1.") {
				t.Errorf("BackendVersion: %q, %v", v, err)
			}
			s.Update(want)
			if ok, err := s.Hooked(ctx); !ok || err != nil {
				t.Errorf("Hooked after the first sync: %v, %v; want true", ok, err)
			}
			ipt("-D", "FORWARD", "-m", "comment", "--comment", "tby:hook", "-j", "tby-FORWARD")
			if ok, err := s.Hooked(ctx); ok || err != nil {
				t.Errorf("Hooked without the hook: %v, %v; want false", ok, err)
			}
			if err := s.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}

			// In sync: nothing written.
			if err := s.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); len(st.LastWritten) != 0 || st.RestoreLines != 0 || len(st.LastSetsUpdated) != 0 {
				t.Errorf("second sync wrote %v (%d lines), sets %v; want nothing", st.LastWritten, st.RestoreLines, st.LastSetsUpdated)
			}

			// A chain flushed from outside is restored, and only it is written.
			ipt("-F", "tby-pi-x_allow-b")
			if err := s.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); !slices.Equal(st.LastWritten, []string{"tby-pi-x_allow-b"}) {
				t.Errorf("after a flush wrote %v, want [tby-pi-x_allow-b]", st.LastWritten)
			}

			// One policy change rewrites only its chain: a header, its rules, COMMIT.
			changed := RenderPolicy(buildModel(t, strings.Replace(renderWorld, `ports: [80, "81:82", http]`, `ports: [80]`, 1)), "node1", PolicyConfig{})
			if err := s.Apply(ctx, changed); err != nil {
				t.Fatal(err)
			}
			st = s.Stats()
			if !slices.Equal(st.LastWritten, []string{"tby-pi-x_allow-b"}) {
				t.Errorf("one policy change wrote %v", st.LastWritten)
			}
			if wantLines := 3 + len(changed.Chains["tby-pi-x_allow-b"]); st.RestoreLines != wantLines {
				t.Errorf("one policy change: %d restore lines, want %d", st.RestoreLines, wantLines)
			}
			if !strings.Contains(save(), "--dports 80 ") {
				t.Errorf("changed rule not in the kernel:\n%s", save())
			}

			// What is changed from outside (a hook and its chain deleted, a chain and a set
			// flushed) is repaired by the loop's full pass: updates trust the syncer's cache.
			// The changes are made before the loop starts: made under it, a full pass could
			// put the hook back between two of them and the chain's delete would fail.
			var set *IPSet
			for _, name := range slices.Sorted(maps.Keys(changed.IPSets)) {
				if set = changed.IPSets[name]; len(set.Members) > 0 {
					break
				}
			}
			if set == nil || len(set.Members) == 0 {
				t.Fatal("no set with members to flush")
			}
			ipt("-D", "FORWARD", "-m", "comment", "--comment", "tby:hook", "-j", "tby-FORWARD")
			ipt("-F", "tby-FORWARD")
			ipt("-X", "tby-FORWARD")
			ipt("-F", "tby-to-wl-dispatch")
			if _, err := r.Run(ctx, nil, "ipset", "flush", set.Name); err != nil {
				t.Fatal(err)
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Run(runCtx, 50*time.Millisecond) }()
			stopLoop := sync.OnceFunc(func() { cancel(); <-done })
			t.Cleanup(stopLoop) // a Fatal below must not leave the loop logging
			s.Update(changed)
			deadline := time.Now().Add(5 * time.Second)
			for {
				k := ParseFilter([]byte(save()))
				out, err := r.Run(ctx, nil, "ipset", "save")
				if err != nil {
					t.Fatal(err)
				}
				ks := ParseIPSets(out)
				if len(k.Hooks["FORWARD"]) == 1 && k.Hooks["FORWARD"][0].pos == 1 && len(k.Chains["tby-to-wl-dispatch"]) == 2 &&
					slices.Equal(k.Chains["tby-FORWARD"], hashesOf(changed.Chains["tby-FORWARD"])) &&
					ks[set.Name] != nil && len(ks[set.Name].Members) == len(set.Members) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("hook, chains and set %s not restored within 5s:\n%s\n%s", set.Name, save(), out)
				}
				time.Sleep(20 * time.Millisecond)
			}
			stopLoop()

			// Cleanup removes all of tabby's and nothing else.
			chains, nsets, err := RemoveAll(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if chains != len(changed.Chains)+len(changed.IPv6.Chains) || nsets != len(changed.IPSets) {
				t.Errorf("RemoveAll removed %d chains and %d sets, want %d (IPv4 and IPv6) and %d", chains, nsets, len(changed.Chains)+len(changed.IPv6.Chains), len(changed.IPSets))
			}
			out = save()
			if strings.Contains(out, "tby") {
				t.Errorf("tabby's rules left after RemoveAll:\n%s", out)
			}
			for _, frag := range []string{"-A FORWARD -s 1.2.3.4/32 -j DROP", "-A OTHER -d 5.6.7.8/32 -j ACCEPT", "-A INPUT -j OTHER"} {
				if !strings.Contains(out, frag) {
					t.Errorf("another program's rule %q is gone:\n%s", frag, out)
				}
			}
			if sets, _ := r.Run(ctx, nil, "ipset", "list", "-n"); strings.Contains(string(sets), IPSetPrefix) {
				t.Errorf("ipsets left: %s", sets)
			}
		})
	}
}

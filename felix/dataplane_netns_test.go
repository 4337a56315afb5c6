package felix

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// startDataplane runs a Dataplane on ns until the test ends.
func startDataplane(t *testing.T, ns *testNS, interval time.Duration) *Dataplane {
	t.Helper()
	return startDataplaneConfig(t, ns, Config{ResyncInterval: interval})
}

// startDataplaneConfig is startDataplane with more of the Config; it sets NetNS and Log.
func startDataplaneConfig(t *testing.T, ns *testNS, cfg Config) *Dataplane {
	t.Helper()
	cfg.NetNS = ns.path
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := NewDataplane(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// testWriter sends the Dataplane's log to the test's, shown when it fails or with -v.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// waitPass waits until the Dataplane has run a pass after the first `after` ones, and
// returns its status.
func waitPass(t *testing.T, d *Dataplane, after uint64) Status {
	t.Helper()
	var st Status
	eventually(t, 5*time.Second, fmt.Sprintf("past pass %d", after), func() (bool, string) {
		st = d.Status()
		return st.Passes > after, fmt.Sprintf("%d passes", st.Passes)
	})
	return st
}

func waitRoutes(t *testing.T, ns *testNS, what string, want ...string) {
	t.Helper()
	eventually(t, 5*time.Second, what, func() (bool, string) {
		got := ns.routes(t, "proto", "116")
		return slices.Equal(got, want), strings.Join(got, "; ")
	})
}

// A route deleted by hand comes back through the netlink subscription: the periodic pass
// is an hour away.
func TestDataplaneRestoresDeletedRoutes(t *testing.T) {
	ns := newTestNS(t)
	a := vethName()
	ns.veth(t, a)
	d := startDataplane(t, ns, time.Hour)
	d.Update(LocalState{
		Workloads: []Workload{{Name: "ns/a", Interface: a, Addrs: addrs("10.65.0.5", "fd00::5")}},
		Blocks:    prefixes("10.65.0.0/26"),
	})
	want := []string{
		"10.65.0.5 dev " + a + " scope link",
		"blackhole 10.65.0.0/26",
		"fd00::5 dev " + a + " metric 1024 pref medium",
	}
	waitRoutes(t, ns, "programmed", want...)

	for _, del := range [][]string{
		{"route", "del", "10.65.0.5/32"},
		{"route", "del", "blackhole", "10.65.0.0/26"},
		{"-6", "route", "del", "fd00::5/128"},
	} {
		passes := d.Status().Passes
		start := time.Now()
		ns.ip(t, del...)
		waitRoutes(t, ns, "restored after ip "+strings.Join(del, " "), want...)
		t.Logf("ip %s: restored in %v", strings.Join(del, " "), time.Since(start))
		if st := d.Status(); st.Stats.Added != 1 || st.Passes <= passes {
			t.Errorf("after ip %s: status %+v, want a new pass that added one route", strings.Join(del, " "), st)
		}
	}

	// Replacing felix's route with one of felix's protocol but another device is undone too.
	b := vethName()
	ns.veth(t, b)
	ns.ip(t, "route", "replace", "10.65.0.5/32", "dev", b, "proto", "116", "scope", "link")
	waitRoutes(t, ns, "restored after a replace", want...)
	// A stray route of felix's protocol is removed.
	ns.ip(t, "route", "add", "10.65.0.77/32", "dev", b, "proto", "116", "scope", "link")
	waitRoutes(t, ns, "without the stray route", want...)
}

// A workload's veth may appear after its state; its route follows within the event's time.
func TestDataplaneInterfaceAppearsLater(t *testing.T) {
	ns := newTestNS(t)
	a := vethName()
	d := startDataplane(t, ns, time.Hour)
	d.Update(LocalState{Workloads: []Workload{{Name: "ns/a", Interface: a, Addrs: addrs("10.65.0.5")}}})
	st := waitPass(t, d, 0)
	if len(st.Stats.Skipped) != 1 || st.Stats.Skipped[0].Reason != "interface does not exist" {
		t.Fatalf("before the veth exists: skipped %v, want 10.65.0.5 for a missing interface", st.Stats.Skipped)
	}

	ns.veth(t, a)
	want := "10.65.0.5 dev " + a + " scope link"
	waitRoutes(t, ns, "routed once the veth exists", want)
	eventually(t, 5*time.Second, "proxy_arp set on the new veth", func() (bool, string) {
		v := ns.sysctl(t, "net/ipv4/conf/"+a+"/proxy_arp")
		return v == "1", v
	})
}

// A workload's veth set down by hand (the kernel drops its routes) is set up again by the
// next pass, woken by the link event (the periodic pass is an hour away), and its routes
// return; so is one set down repeatedly, and one found down at the first pass. An
// interface that is not a workload's is left down.
func TestDataplaneSetsWorkloadLinksUp(t *testing.T) {
	ns := newTestNS(t)
	a, other := vethName(), vethName()
	ns.veth(t, a)
	ns.veth(t, other)
	ns.ip(t, "link", "set", a, "down")
	ns.ip(t, "link", "set", other, "down")
	d := startDataplane(t, ns, time.Hour)
	d.Update(LocalState{Workloads: []Workload{{Name: "ns/a", Interface: a, Addrs: addrs("10.65.0.5", "fd00::5")}}})
	want := []string{"10.65.0.5 dev " + a + " scope link", "fd00::5 dev " + a + " metric 1024 pref medium"}
	waitRoutes(t, ns, "routed after the first pass set the veth up", want...)
	for round := range 3 {
		start := time.Now()
		ns.ip(t, "link", "set", a, "down")
		eventually(t, 5*time.Second, fmt.Sprintf("round %d: veth up again", round), func() (bool, string) {
			out := ns.ip(t, "-o", "link", "show", a)
			return strings.Contains(out, ",UP"), out
		})
		waitRoutes(t, ns, fmt.Sprintf("round %d: routes back", round), want...)
		t.Logf("round %d: up and routed again in %v", round, time.Since(start))
	}
	if out := ns.ip(t, "-o", "link", "show", other); strings.Contains(out, ",UP") {
		t.Errorf("an interface that is no workload's was set up: %s", out)
	}
}

// A workload that goes away takes its route with it; a restarted agent changes nothing.
func TestDataplaneStaleAndRestart(t *testing.T) {
	ns := newTestNS(t)
	a, b := vethName(), vethName()
	ns.veth(t, a)
	ns.veth(t, b)
	state := LocalState{
		Workloads: []Workload{
			{Name: "ns/a", Interface: a, Addrs: addrs("10.65.0.5", "fd00::5")},
			{Name: "ns/b", Interface: b, Addrs: addrs("10.65.0.6")},
		},
		Blocks: prefixes("10.65.0.0/26", "fd00::/122"),
	}
	ctx, cancel := context.WithCancel(context.Background())
	d1, err := NewDataplane(Config{NetNS: ns.path, ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d1.Run(ctx) }()
	d1.Update(state)
	want := []string{
		"10.65.0.5 dev " + a + " scope link",
		"10.65.0.6 dev " + b + " scope link",
		"blackhole 10.65.0.0/26",
		"blackhole fd00::/122 dev lo metric 1024 pref medium",
		"fd00::5 dev " + a + " metric 1024 pref medium",
	}
	waitRoutes(t, ns, "programmed", want...)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	d1.Close()

	d2 := startDataplane(t, ns, time.Hour)
	d2.Update(state)
	st := waitPass(t, d2, 0)
	if st.Err != nil || st.Stats.Changed() || len(st.Stats.Skipped) > 0 || st.Sysctls != 0 {
		t.Errorf("first pass after a restart: %+v, want no changes", st)
	}
	if st.LastOK.IsZero() || st.LastOK != st.LastPass {
		t.Errorf("status %+v: want LastOK = LastPass", st)
	}
	wantLines(t, "routes after a restart", ns.routes(t, "proto", "116"), want...)

	state.Workloads = state.Workloads[:1]
	d2.Update(state)
	waitRoutes(t, ns, "without workload b", slices.Delete(want, 1, 2)...)
}

// Sysctls are written in the namespace and not in the agent's own, where an interface of
// the same name exists; the periodic pass restores one changed by hand.
func TestDataplaneSysctls(t *testing.T) {
	ns := newTestNS(t)
	a := vethName()
	ns.veth(t, a)
	// A veth of the same name in the test's own namespace, which must stay untouched.
	peer := "p" + randomHex(10)
	run(t, "ip", "link", "add", a, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { run(t, "ip", "link", "del", a) })
	rootSysctls := func() string {
		var vals []string
		for _, p := range []string{"net/ipv4/conf/" + a + "/proxy_arp", "net/ipv4/neigh/" + a + "/proxy_delay",
			"net/ipv6/conf/" + a + "/proxy_ndp", "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			b, err := os.ReadFile("/proc/sys/" + p)
			if err != nil {
				t.Fatal(err)
			}
			vals = append(vals, p+"="+strings.TrimSpace(string(b)))
		}
		return strings.Join(vals, " ")
	}
	rootBefore := rootSysctls()
	ns.setSysctl(t, "net/ipv4/ip_forward", "0")
	ns.setSysctl(t, "net/ipv6/conf/all/forwarding", "0")
	ns.setSysctl(t, "net/ipv6/conf/"+a+"/disable_ipv6", "1")

	d := startDataplane(t, ns, 200*time.Millisecond)
	d.Update(LocalState{Workloads: []Workload{{Name: "ns/a", Interface: a, Addrs: addrs("10.65.0.5", "fd00::5")}}})
	st := waitPass(t, d, 0)
	if st.Err != nil || st.Sysctls != 6 {
		t.Errorf("first pass: err %v, %d sysctls written, want 6", st.Err, st.Sysctls)
	}
	for path, want := range map[string]string{
		"net/ipv4/ip_forward":                     "1",
		"net/ipv6/conf/all/forwarding":            "1",
		"net/ipv4/conf/" + a + "/proxy_arp":       "1",
		"net/ipv4/neigh/" + a + "/proxy_delay":    "0",
		"net/ipv6/conf/" + a + "/disable_ipv6":    "0",
		"net/ipv6/conf/" + a + "/proxy_ndp":       "1",
		"net/ipv6/conf/" + a + "/forwarding":      "1", // follows all.forwarding
		"net/ipv4/conf/" + a + "/forwarding":      "1", // follows ip_forward
		"net/ipv4/conf/" + a + "/rp_filter":       "0", // untouched
		"net/ipv6/conf/" + a + "/accept_ra_pinfo": "1", // untouched
	} {
		if got := ns.sysctl(t, path); got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	if got := rootSysctls(); got != rootBefore {
		t.Errorf("the test's own namespace changed:\n was %s\n now %s", rootBefore, got)
	}
	// No thread of this process is left in the test namespace.
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, task := range tasks {
		if l, err := os.Readlink(task); err == nil && l != self {
			t.Errorf("%s is %s, not the process's %s", task, l, self)
		}
	}

	ns.setSysctl(t, "net/ipv4/conf/"+a+"/proxy_arp", "0")
	eventually(t, 5*time.Second, "proxy_arp restored by the periodic pass", func() (bool, string) {
		v := ns.sysctl(t, "net/ipv4/conf/"+a+"/proxy_arp")
		return v == "1", v
	})
}

// The agent's usual mode: programming the namespace it runs in. The test runs itself again
// under `ip netns exec`, so that its own namespace is a throwaway one.
func TestDataplaneOwnNamespace(t *testing.T) {
	if veth := os.Getenv("FELIX_TEST_OWN_NS_VETH"); veth != "" {
		d, err := NewDataplane(Config{ResyncInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			d.Close()
		}()
		d.Update(LocalState{Workloads: []Workload{{Name: "ns/a", Interface: veth, Addrs: addrs("10.65.0.5")}}})
		want := "10.65.0.5 dev " + veth + " proto 116 scope link"
		routes := func() (bool, string) {
			out := strings.TrimSpace(run(t, "ip", "route", "show", "10.65.0.5"))
			return out == want, out
		}
		eventually(t, 5*time.Second, "routed", routes)
		run(t, "ip", "route", "del", "10.65.0.5/32")
		eventually(t, 5*time.Second, "restored", routes)
		if v, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + veth + "/proxy_arp"); err != nil || strings.TrimSpace(string(v)) != "1" {
			t.Errorf("proxy_arp = %q, %v; want 1", v, err)
		}
		return
	}
	ns := newTestNS(t)
	a := vethName()
	ns.veth(t, a)
	cmd := exec.Command("ip", "netns", "exec", ns.name, os.Args[0], "-test.run", "^TestDataplaneOwnNamespace$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "FELIX_TEST_OWN_NS_VETH="+a)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestDataplaneOwnNamespace") {
		t.Fatalf("in namespace %s: %v\n%s", ns.name, err, out)
	}
	if got := ns.sysctl(t, "net/ipv4/conf/"+a+"/proxy_arp"); got != "1" {
		t.Errorf("proxy_arp in the namespace = %s, want 1", got)
	}
}

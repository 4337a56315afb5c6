package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// These tests build real labs with internal/labtest: they need root, ip (iproute2) and
// ping (iputils-ping). They skip without root unless CI is set; under CI a missing tool is
// a failure. Every lab has a unique name and is removed by t.Cleanup even when the test
// fails. Traffic stays inside the labs' namespaces.

func TestMain(m *testing.M) { labtest.Main(m) }

// fakeAgent stands in for the agents (testdata/fakeagent.sh).
var fakeAgent = func() string {
	path, err := filepath.Abs("testdata/fakeagent.sh")
	if err != nil {
		panic(err)
	}
	return path
}()

// fakeCNIDir builds the fake plugin (testdata/fakecni) as tabby-cni and returns its
// directory.
func fakeCNIDir(t testing.TB) string {
	t.Helper()
	return filepath.Dir(labtest.Build(t, "./testdata/fakecni", "tabby-cni"))
}

// snapshot is what a lab must leave as it found it.
type snapshot struct {
	netns  []string // /run/netns entries
	links  []string // the root namespace's links
	mounts []string // mount points under /run/netns/
}

func takeSnapshot(t *testing.T) snapshot {
	t.Helper()
	var s snapshot
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		s.netns = append(s.netns, e.Name())
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		s.links = append(s.links, i.Name)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], netnsDir+"/") {
			s.mounts = append(s.mounts, f[4])
		}
	}
	slices.Sort(s.netns)
	slices.Sort(s.links)
	slices.Sort(s.mounts)
	return s
}

// assertGone checks that the labs left the machine as before was: none of their
// namespaces, mounts, processes or files remain, and the root namespace has the links it
// had. Other packages' tests may make and remove namespaces of their own meanwhile, so
// namespaces and mounts are judged by the labs' prefixes (TestLabsCoexist checks that one
// lab's down leaves another's alone).
func assertGone(t *testing.T, before snapshot, labs ...*labtest.Lab) {
	t.Helper()
	after := takeSnapshot(t)
	ours := func(name string) bool {
		for _, l := range labs {
			if strings.HasPrefix(filepath.Base(name), labPrefix(l.Name)) {
				return true
			}
		}
		return false
	}
	for _, n := range after.netns {
		if ours(n) {
			t.Errorf("namespace %s is left behind", n)
		}
	}
	for _, m := range after.mounts {
		if ours(m) {
			t.Errorf("mount %s is left behind", m)
		}
	}
	assertRootLinks(t, before, after)
	for _, l := range labs {
		for _, dir := range []string{l.StateDir(), l.DataDir()} {
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s is left behind (%v)", dir, err)
			}
		}
		if _, err := os.Stat(l.StateDir() + ".lock"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("lock file of %s is left behind", l.Name)
		}
		if pids := labProcesses(t, l); len(pids) > 0 {
			t.Errorf("processes of lab %s are left behind: %v", l.Name, pids)
		}
	}
}

// labLinkRE matches the names of the links a lab makes (in its own namespaces).
var labLinkRE = regexp.MustCompile(`^(br[0-9]+|node[0-9]+|h-.*|eth0)$`)

// assertRootLinks checks that the root namespace lost no link and gained none of the
// lab's (other tests may add links of their own meanwhile).
func assertRootLinks(t *testing.T, before, after snapshot) {
	t.Helper()
	for _, l := range before.links {
		if !slices.Contains(after.links, l) {
			t.Errorf("the root namespace's link %s is gone", l)
		}
	}
	for _, l := range after.links {
		if !slices.Contains(before.links, l) && labLinkRE.MatchString(l) {
			t.Errorf("a lab's link %s is in the root namespace", l)
		}
	}
}

// labProcesses finds running processes that belong to a lab: in one of its namespaces, or
// with its state or data directory on their command line.
func labProcesses(t *testing.T, l *labtest.Lab) []string {
	t.Helper()
	names, err := listNetns(labPrefix(l.Name))
	if err != nil {
		t.Fatal(err)
	}
	inNS, err := pidsIn(names)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for ns, pids := range inNS {
		for _, pid := range pids {
			found = append(found, fmt.Sprintf("%d (%s, in %s)", pid, procName(pid), ns))
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || !running(pid) {
			continue
		}
		cmdline := procName(pid)
		if strings.Contains(cmdline, "tabby-lab/"+l.Name+"/") {
			found = append(found, fmt.Sprintf("%d (%s)", pid, cmdline))
		}
	}
	return found
}

// killLab simulates a session killed under a lab: SIGKILL for every process in its
// namespaces, and its state directory deleted.
func killLab(t *testing.T, l *labtest.Lab) {
	t.Helper()
	names, err := listNetns(labPrefix(l.Name))
	if err != nil {
		t.Fatal(err)
	}
	inNS, err := pidsIn(names)
	if err != nil {
		t.Fatal(err)
	}
	var all []int
	for _, pids := range inNS {
		all = append(all, pids...)
	}
	if len(all) == 0 {
		t.Fatalf("lab %s runs no process to kill", l.Name)
	}
	signalAll(all, syscall.SIGKILL)
	if left := waitGone(all, 10*time.Second); len(left) > 0 {
		t.Fatalf("processes %v survived SIGKILL", left)
	}
	if err := os.RemoveAll(l.StateDir()); err != nil {
		t.Fatal(err)
	}
}

func TestLabUpDown(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "3", "--subnets", "2", "--no-agents")

	for _, ns := range []string{"router", "node1", "node2", "node3"} {
		if !netnsExists(l.NS(ns)) {
			t.Errorf("namespace %s does not exist", l.NS(ns))
		}
	}
	assertRootLinks(t, before, takeSnapshot(t))

	// The router: a bridge per subnet with the gateway address, connected routes only.
	assertContains(t, "router's br1", l.OK("exec", "router", "--", "ip", "-o", "addr", "show", "dev", "br1"), "inet 172.31.1.1/24")
	assertContains(t, "router's br2", l.OK("exec", "router", "--", "ip", "-o", "addr", "show", "dev", "br2"), "inet 172.31.2.1/24")
	assertContains(t, "router's node2 port", l.OK("exec", "router", "--", "ip", "-o", "link", "show", "dev", "node2"), "master br2")
	routes := strings.Split(strings.TrimSpace(l.OK("exec", "router", "--", "ip", "-4", "route", "show")), "\n")
	if len(routes) != 2 || !strings.HasPrefix(routes[0], "172.31.1.0/24 dev br1") || !strings.HasPrefix(routes[1], "172.31.2.0/24 dev br2") {
		t.Errorf("router's routes: want only its two subnets, got:\n%s", strings.Join(routes, "\n"))
	}
	if fwd := strings.TrimSpace(l.OK("exec", "router", "--", "cat", "/proc/sys/net/ipv4/ip_forward")); fwd != "1" {
		t.Errorf("router's ip_forward = %s", fwd)
	}

	// Nodes: round-robin over the subnets, a default route via their gateway.
	assertContains(t, "node1's addresses", l.OK("exec", "node1", "--", "ip", "addr"), "inet 172.31.1.10/24", "eth0")
	assertContains(t, "node2's addresses", l.OK("exec", "node2", "--", "ip", "-o", "addr", "show", "dev", "eth0"), "inet 172.31.2.11/24")
	assertContains(t, "node3's routes", l.OK("exec", "node3", "--", "ip", "route"), "default via 172.31.1.1 dev eth0")
	l.Ping("node1", "172.31.1.12") // same subnet
	l.Ping("node1", "172.31.2.11") // across the router
	l.Ping("node2", "172.31.2.1")
	l.Ping("node3", "172.31.2.1")

	s := l.Status()
	if s.Name != l.Name || !s.Ready || s.Etcd.Endpoint != "http://172.31.1.1:2379" || s.Etcd.Netns != l.NS("router") || !s.Etcd.Process.Alive {
		t.Errorf("status: %+v", s)
	}
	if len(s.Subnets) != 2 || s.Subnets[1].Bridge != "br2" || s.Subnets[1].CIDR.String() != "172.31.2.0/24" {
		t.Errorf("status subnets: %+v", s.Subnets)
	}
	if len(s.Nodes) != 3 || s.Nodes[1].Name != "node2" || s.Nodes[1].Netns != l.NS("node2") ||
		s.Nodes[1].Address.String() != "172.31.2.11/24" || s.Nodes[1].Subnet != 2 || s.Nodes[1].Agent != nil {
		t.Errorf("status nodes: %+v", s.Nodes)
	}
	if len(s.Problems) != 0 || len(s.Workloads) != 0 {
		t.Errorf("status problems %v, workloads %v", s.Problems, s.Workloads)
	}
	if inNS, _ := pidsIn([]string{l.NS("router")}); !slices.Contains(inNS[l.NS("router")], s.Etcd.Process.PID) {
		t.Errorf("etcd pid %d is not in the router namespace (%v)", s.Etcd.Process.PID, inNS)
	}
	assertContains(t, "status", l.OK("status"), "172.31.1.1:2379", "node3", "172.31.1.12/24", "br2")

	// exec passes standard input, output, error and the exit status through.
	stdout, stderr, code := l.Run("", "exec", "node1", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if stdout != "out\n" || stderr != "err\n" || code != 7 {
		t.Errorf("exec: stdout %q, stderr %q, exit %d; want out, err, 7", stdout, stderr, code)
	}
	if stdout, _, code := l.Run("hello\n", "exec", "node2", "cat"); stdout != "hello\n" || code != 0 {
		t.Errorf("exec cat: %q, exit %d", stdout, code)
	}

	// ctl reaches the lab's etcd from the router and from a node.
	assertContains(t, "ctl get nodes", l.OK("ctl", "get", "nodes"), "NAME")
	assertContains(t, "ctl --node node2 version", l.OK("ctl", "--node", "node2", "version"), "etcd", "172.31.1.1:2379")
	assertContains(t, "ctl get weps -A", l.OK("ctl", "get", "workloadendpoints", "-A"), "NAMESPACE")
	l.Fails("ctl", "get", "nosuchkind")

	l.OK("down")
	assertGone(t, before, l)
	// A second down has nothing to do and says so.
	_, stderr, code = l.Run("", "down")
	if code != 0 || !strings.Contains(stderr, "nothing to remove") {
		t.Errorf("second down: exit %d, %s", code, stderr)
	}
}

func TestLabStaleIsCleaned(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--no-agents")

	// A killed session: its processes are gone, and so is the state.
	if got := listed(t, l); !slices.Equal(got, []string{l.Name, "up", "3", "2", "0", "pid"}) {
		t.Errorf("list: %v", got)
	}
	killLab(t, l)
	assertContains(t, "status of a stale lab", l.Fails("status"), "no state", "tabby-lab down --name "+l.Name)
	if !slices.Contains(strings.Fields(l.OK("list", "-q")), l.Name) {
		t.Errorf("list -q does not name the stale lab %s", l.Name)
	}
	if got := listed(t, l); !slices.Equal(got, []string{l.Name, "no", "state", "3", "-", "-", "-"}) {
		t.Errorf("list: %v", got)
	}

	// up clears it first.
	_, stderr, code := l.Run("", "up", "--nodes", "2", "--no-agents")
	if code != 0 || !strings.Contains(stderr, "removed the lab") {
		t.Fatalf("up over a stale lab: exit %d: %s", code, stderr)
	}
	l.Ping("node1", "172.31.1.11")

	// Again, with a namespace no state knows and a process in it, as a crashed up leaves.
	killLab(t, l)
	stray := l.NS("node7")
	if out, err := exec.Command("ip", "netns", "add", stray).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	sleeper := exec.Command("ip", "netns", "exec", stray, "sleep", "600")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	waitInNetns(t, stray, sleeper.Process.Pid)

	// A namespace of another shape with the lab's prefix is not the lab's.
	foreign := l.NS("foreign")
	if out, err := exec.Command("ip", "netns", "add", foreign).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", foreign).Run()

	l.OK("down")
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("the process in %s still runs after down", stray)
	}
	if !netnsExists(foreign) {
		t.Errorf("down removed %s, which is not the lab's", foreign)
	}
	exec.Command("ip", "netns", "del", foreign).Run()
	assertGone(t, before, l)
	if slices.Contains(strings.Fields(l.OK("list", "-q")), l.Name) {
		t.Errorf("list -q still names %s after down", l.Name)
	}
}

// listed returns the fields of the lab's line in tabby-lab list (the etcd column cut to
// its first word).
func listed(t *testing.T, l *labtest.Lab) []string {
	t.Helper()
	for _, line := range strings.Split(l.OK("list"), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == l.Name {
			if f[1] == "up" {
				return f[:6]
			}
			return f
		}
	}
	return nil
}

// waitInNetns polls until pid has entered the named namespace.
func waitInNetns(t *testing.T, ns string, pid int) {
	t.Helper()
	labtest.Poll(t, fmt.Sprintf("pid %d enters %s", pid, ns), 10*time.Second, func() string {
		inNS, err := pidsIn([]string{ns})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(inNS[ns], pid) {
			return fmt.Sprintf("in %s: %v", ns, inNS[ns])
		}
		return ""
	})
}

func TestLabsCoexist(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	a, b := labtest.New(t), labtest.New(t)
	a.OK("up", "--nodes", "3", "--no-agents")
	b.OK("up", "--nodes", "2", "--no-agents")

	// Identical addresses, separate networks: b has no 172.31.1.12.
	for _, l := range []*labtest.Lab{a, b} {
		if s := l.Status(); s.Nodes[0].Address.String() != "172.31.1.10/24" || s.Etcd.Endpoint != "http://172.31.1.1:2379" {
			t.Errorf("lab %s: node1 %s, etcd %s", l.Name, s.Nodes[0].Address, s.Etcd.Endpoint)
		}
		l.Ping("node1", "172.31.1.11")
		l.OK("ctl", "version")
	}
	a.Ping("node1", "172.31.1.12")
	b.NoPing("node1", "172.31.1.12")

	// Removing one leaves the other whole.
	a.OK("down")
	if s := b.Status(); len(s.Problems) > 0 || !s.Etcd.Process.Alive {
		t.Errorf("lab %s after lab %s went down: %v", b.Name, a.Name, s.Problems)
	}
	b.Ping("node2", "172.31.1.10")
	b.OK("ctl", "get", "nodes")
	b.OK("down")
	assertGone(t, before, a, b)
}

func TestLabArgs(t *testing.T) {
	labtest.Need(t)
	l := labtest.New(t)
	bad := labtest.Named(t, "x")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "My_Lab", "up"}, "lab name \"My_Lab\""},
		{[]string{"--name", "my-lab", "status"}, "lab name \"my-lab\""},
		{[]string{"--name", "abcdefghijklmnopq", "down"}, "lab name"},
		{[]string{"up", "--nodes", "0"}, "--nodes 0: want 1 to 100"},
		{[]string{"up", "--subnets", "0"}, "--subnets 0"},
		{[]string{"up", "extra"}, "unknown command"},
		{[]string{"workload", "add", "node1", "web1"}, "want NAMESPACE/NAME"},
		{[]string{"workload", "add", "node1", "default/web1", "--labels", "app=a b"}, "label app="},
		{[]string{"status", "-o", "yaml"}, "-o \"yaml\""},
		{[]string{"--name", "nosuchlab", "status"}, "lab \"nosuchlab\" does not exist"},
		{[]string{"--name", "nosuchlab", "exec", "node1", "--", "true"}, "does not exist"},
	} {
		stderr := bad.Fails(c.args...)
		assertContains(t, strings.Join(c.args, " "), stderr, c.want)
	}

	l.OK("up", "--nodes", "2", "--no-agents")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"workload", "add", "node9", "default/web1"}, "has no node \"node9\" (its nodes: node1, node2)"},
		{[]string{"workload", "del", "default/web1"}, "has no workload \"default/web1\""},
		{[]string{"exec", "node9", "--", "true"}, "has no \"node9\": targets are router, node1, node2"},
		{[]string{"exec", "default/web1", "--", "true"}, "has no workload"},
		{[]string{"exec", "node1"}, "requires at least 2 arg"},
		{[]string{"ctl", "--node", "node9", "get", "nodes"}, "has no node \"node9\""},
		{[]string{"host", "add", "node1"}, "names of the lab's router and nodes"},
		{[]string{"host", "del", "nobody"}, "has no host \"nobody\""},
	} {
		stderr := l.Fails(c.args...)
		assertContains(t, strings.Join(c.args, " "), stderr, c.want)
	}
	l.OK("down")
	l.OK("up", "--nodes", "1", "--no-agents", "--cni-bin-dir", t.TempDir())
	assertContains(t, "workload add without a plugin", l.Fails("workload", "add", "node1", "default/web1"), "no CNI plugin")
}

func TestLabHosts(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "2", "--no-agents")
	routerMAC := bridgeMACOf(t, l)
	assertContains(t, "host add bird1", l.OK("host", "add", "bird1"), "172.31.1.200/24")
	// A bridge takes its lowest port's MAC unless it has one of its own; a host joining
	// must not move the router's MAC from under the nodes' ARP caches.
	ipCmd(t, "-n", l.NS("router"), "link", "set", "h-bird1", "address", "00:00:00:00:00:01")
	if got := bridgeMACOf(t, l); got != routerMAC {
		t.Errorf("the router's MAC on br1 moved from %s to %s when a host joined", routerMAC, got)
	}
	assertContains(t, "host add internet", l.OK("host", "add", "internet", "--subnet", "9"), "172.31.9.200/24", "br9")
	l.Fails("host", "add", "bird1")

	l.Ping("node2", "172.31.9.200") // subnet 2 to a segment of its own, through the router
	l.Ping("internet", "172.31.1.10")
	l.Ping("bird1", "172.31.1.10") // same subnet
	s := l.Status()
	if len(s.Hosts) != 2 || s.Hosts[1].Name != "internet" || s.Hosts[1].Netns != l.NS("h-internet") || len(s.Subnets) != 3 || s.Subnets[2].Index != 9 {
		t.Errorf("status hosts %+v, subnets %+v", s.Hosts, s.Subnets)
	}

	// host del stops what runs in the host, as down would.
	sleeper := l.Command("exec", "bird1", "--", "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	waitInNetns(t, l.NS("h-bird1"), sleeper.Process.Pid)
	l.OK("host", "del", "bird1")
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the process in host bird1 still runs after host del")
	}
	if netnsExists(l.NS("h-bird1")) {
		t.Error("host del left its namespace")
	}
	l.NoPing("node1", "172.31.1.200")

	l.OK("down")
	assertGone(t, before, l)
}

// bridgeMACOf is the MAC of the router's subnet-1 bridge.
func bridgeMACOf(t *testing.T, l *labtest.Lab) string {
	t.Helper()
	f := strings.Fields(ipCmd(t, "-n", l.NS("router"), "-br", "link", "show", "br1"))
	if len(f) < 3 {
		t.Fatalf("ip link show br1: %q", f)
	}
	return f[2]
}

func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func assertContains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, s)
		}
	}
}

// TestLabUpFailsCleanly: an up that fails, or is interrupted, leaves nothing behind.
func TestLabUpFailsCleanly(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)

	// An etcd that cannot start: up says why, with its log, and removes what it made.
	bad := t.TempDir()
	script := "#!/bin/sh\necho 'fake tabby-node: cannot start: boom' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bad, "tabby-node"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(labtest.Bin(t, "tabbyctl"), filepath.Join(bad, "tabbyctl")); err != nil {
		t.Fatal(err)
	}
	stderr := l.Fails("up", "--nodes", "2", "--no-agents", "--bin-dir", bad)
	assertContains(t, "up with a failing etcd", stderr, "etcd (tabby-node --datastore-only in "+l.NS("router")+") exited", "boom")
	assertGone(t, before, l)

	// Binaries that are not there.
	assertContains(t, "up without binaries", l.Fails("up", "--bin-dir", t.TempDir()), "tabby-node is not an executable in")

	// Interrupted while it waits for the agents.
	cmd := l.Command("up", "--nodes", "2", "--agent-binary", fakeAgent)
	cmd.Env = append(cmd.Env, "FAKE_AGENT=mute")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
			t.Logf("tabby-lab up's output:\n%s", out.String())
		}
	}()
	labtest.Poll(t, "the agents start", 30*time.Second, func() string {
		if log, _ := os.ReadFile(filepath.Join(l.StateDir(), "node2.log")); !strings.Contains(string(log), "starting") {
			return "node2's agent has not logged starting"
		}
		return ""
	})
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	waited = true
	if err == nil {
		t.Errorf("an interrupted up succeeded:\n%s", out.String())
	}
	assertContains(t, "interrupted up", out.String(), "context canceled")
	assertGone(t, before, l)
}

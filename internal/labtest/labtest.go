// Package labtest is the one harness for tests that run tabby in tabby-lab labs: the
// tests of cmd/tabby-lab and cmd/tabby-cni, bgp/e2e and e2e all use it, as every raft test
// uses etcd's rafttest. It owns:
//
//   - the binaries: tabby-node, tabby-cni, tabbyctl and tabby-lab, built once per test
//     binary into a temporary directory (Bin, BinDir; Build for a test's own programs;
//     AgentScript for an agent with extra flags), removed when the tests end (Main);
//   - what a lab test needs of the machine (Need): root, ip and ping, by internal/testenv's
//     rule (skip outside CI, fail under CI);
//   - a Lab: a unique name (CI runs right after a killed session, and tabby-lab up clears
//     a stale lab of the same name), tabby-lab driven as Run/OK/Fails, the lab's state and
//     status (internal/labstate's types), tabbyctl against its etcd, Ping/NoPing, a ping
//     left running to count losses (StartPinger, Lost), felix's routes, tcpdump captures
//     on the router; tabby-lab down at the test's end, with the agents' log tails when the
//     test failed;
//   - waiting without sleeps: Poll (until a condition holds, within a deadline) and Steady
//     (a condition holds throughout a period).
//
// Tests send traffic only inside the labs' namespaces.
package labtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/labstate"
	"github.com/tabby-net/tabby/internal/testenv"
)

// Where labs keep their state and data: tabby-lab's defaults, passed explicitly so that
// an environment setting TABBY_LAB_STATE_DIR or TABBY_LAB_DATA_DIR does not move them
// behind the harness's back.
const (
	StateRoot = "/run/tabby-lab"
	DataRoot  = "/var/tmp/tabby-lab"
)

// commandTimeout bounds one tabby-lab command: a guard against a hang, not a wait.
const commandTimeout = 5 * time.Minute

var (
	mainCalled bool
	tmpDir     string // everything the harness builds or writes; removed by Main

	mu      sync.Mutex
	built   bool
	builds  = map[string]string{} // Build's and AgentScript's outputs by key
	binDirV string
)

// Main runs the tests and then removes what the harness built; call it from TestMain:
//
//	func TestMain(m *testing.M) { labtest.Main(m) }
func Main(m *testing.M) {
	mainCalled = true
	code := m.Run()
	if tmpDir != "" {
		os.RemoveAll(tmpDir)
	}
	os.Exit(code)
}

// workDir returns the harness's temporary directory, making it on first use.
func workDir(t testing.TB) string {
	t.Helper()
	if !mainCalled {
		t.Fatal("labtest: call labtest.Main(m) from the package's TestMain")
	}
	if tmpDir == "" {
		dir, err := os.MkdirTemp("", "tabby-labtest")
		if err != nil {
			t.Fatal(err)
		}
		tmpDir = dir
	}
	return tmpDir
}

// BinDir returns the directory of the built tabby-node, tabby-cni, tabbyctl and
// tabby-lab, building them on the first call (once per test binary).
func BinDir(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if built {
		return binDirV
	}
	dir := filepath.Join(workDir(t), "bin")
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/tabby-net/tabby/cmd/tabby-lab", "github.com/tabby-net/tabby/cmd/tabby-node",
		"github.com/tabby-net/tabby/cmd/tabbyctl", "github.com/tabby-net/tabby/cmd/tabby-cni")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("labtest: build the binaries: %v\n%s", err, out)
	}
	built, binDirV = true, dir
	return dir
}

// Bin returns the path of one of the built binaries: tabby-node, tabby-cni, tabbyctl or
// tabby-lab.
func Bin(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(BinDir(t), name)
}

// Build builds the package pkg (a path relative to the test's package, such as
// ./testdata/fakecni, or an import path) as a program called name, in a directory of its
// own, once per test binary; it returns the program's path.
func Build(t testing.TB, pkg, name string) string {
	t.Helper()
	key := "build\x00" + pkg + "\x00" + name
	mu.Lock()
	defer mu.Unlock()
	if path, ok := builds[key]; ok {
		return path
	}
	path := filepath.Join(workDir(t), "build-"+hash(key), name)
	if out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput(); err != nil {
		t.Fatalf("labtest: build %s: %v\n%s", pkg, err, out)
	}
	builds[key] = path
	return path
}

// FastBGP are agent flags for labs whose BGP sessions must come up and fail over in
// seconds: short hold, keepalive and connect-retry timers, and route refresh.
var FastBGP = []string{"--bgp-hold-time", "9s", "--bgp-keepalive-time", "3s", "--bgp-connect-retry", "1s", "--route-refresh-interval", "2s"}

// AgentScript returns a program for tabby-lab up --agent-binary: it runs the built
// tabby-node with the lab's arguments followed by flags (a later flag overrides an
// earlier one). One script per set of flags and test binary.
func AgentScript(t testing.TB, flags ...string) string {
	t.Helper()
	node := Bin(t, "tabby-node")
	key := "agent\x00" + strings.Join(flags, "\x00")
	mu.Lock()
	defer mu.Unlock()
	if path, ok := builds[key]; ok {
		return path
	}
	var quoted []string
	for _, f := range flags {
		quoted = append(quoted, "'"+strings.ReplaceAll(f, "'", `'\''`)+"'")
	}
	path := filepath.Join(workDir(t), "agent-"+hash(key))
	script := "#!/bin/sh\nexec " + node + ` "$@" ` + strings.Join(quoted, " ") + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	builds[key] = path
	return path
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

// Need skips the test without root (outside CI; under CI it fails) and checks the tools
// every lab needs: ip (iproute2) and ping (iputils-ping).
func Need(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "lab tests (tabby-lab makes network namespaces)")
	testenv.RequireTools(t, testenv.Tool{Cmd: "ip", Package: "iproute2"}, testenv.Tool{Cmd: "ping", Package: "iputils-ping"})
}

// Lab drives one lab through the built tabby-lab.
type Lab struct {
	t    testing.TB
	Name string
	// Env is extra environment for tabby-lab (and so for what it starts: the agents).
	Env []string
}

// New checks what a lab needs (Need), builds the binaries if this test binary has not
// yet, and returns a Lab with a unique name that is not up yet; tabby-lab down removes
// it when the test ends, after logging the tails of its agents' logs if the test failed.
func New(t testing.TB) *Lab {
	t.Helper()
	Need(t)
	BinDir(t)
	l := &Lab{t: t, Name: uniqueName()}
	t.Cleanup(func() {
		if t.Failed() {
			l.logTails()
		}
		if _, stderr, code := l.Run("", "down"); code != 0 {
			t.Errorf("cleanup: tabby-lab --name %s down: exit %d: %s", l.Name, code, stderr)
		}
	})
	return l
}

// Named returns a Lab for the lab called name that the test does not own: nothing
// removes it at the end, and the name is not checked (tests of tabby-lab's own checks).
func Named(t testing.TB, name string) *Lab {
	t.Helper()
	BinDir(t)
	return &Lab{t: t, Name: name}
}

// With is the same lab driven for another test (a subtest): failures are that test's.
// The lab's owner still removes it.
func (l *Lab) With(t testing.TB) *Lab {
	return &Lab{t: t, Name: l.Name, Env: l.Env}
}

// uniqueName is "t" and nine random lowercase letters and digits: a valid lab name that
// no other lab on the machine has, a stale one included.
func uniqueName() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 9)
	rand.Read(b)
	name := []byte{'t'}
	for _, c := range b {
		name = append(name, letters[int(c)%len(letters)])
	}
	return string(name)
}

// logTails logs the last 40 lines of each node's agent log.
func (l *Lab) logTails() {
	st, err := labstate.Load(l.StateDir())
	if err != nil {
		return
	}
	for _, n := range st.Nodes {
		if b, err := os.ReadFile(filepath.Join(l.StateDir(), n.Name+".log")); err == nil {
			lines := strings.Split(string(b), "\n")
			l.t.Logf("lab %s: %s.log (tail):\n%s", l.Name, n.Name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	}
}

// StateDir is the lab's state directory: state.json, logs, the CNI log and cache.
func (l *Lab) StateDir() string { return filepath.Join(StateRoot, l.Name) }

// DataDir is the lab's data directory (etcd's and the agents'); down removes it.
func (l *Lab) DataDir() string { return filepath.Join(DataRoot, l.Name) }

// NS is the name of the lab's network namespace with the given suffix: "router",
// "node1", "h-<host>", "w-<namespace>.<pod>".
func (l *Lab) NS(suffix string) string { return labstate.NetnsPrefix(l.Name) + suffix }

// Command returns tabby-lab --name <lab> args..., not started, with the lab's
// environment.
func (l *Lab) Command(args ...string) *exec.Cmd {
	cmd := exec.Command(Bin(l.t, "tabby-lab"), l.argv(args)...)
	cmd.Env = append(os.Environ(), l.Env...)
	return cmd
}

// StartExec starts argv in a lab namespace (tabby-lab exec target -- argv...), in the
// background, and kills it when t ends; a failure to start fails t.
func (l *Lab) StartExec(t testing.TB, target string, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := l.Command(append([]string{"exec", target, "--"}, argv...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func (l *Lab) argv(args []string) []string {
	return append([]string{"--state-dir", StateRoot, "--data-dir", DataRoot, "--name", l.Name}, args...)
}

// Run runs tabby-lab --name <lab> args... with stdin and returns stdout, stderr and the
// exit code.
func (l *Lab) Run(stdin string, args ...string) (string, string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Bin(l.t, "tabby-lab"), l.argv(args)...)
	cmd.Env = append(os.Environ(), l.Env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	l.t.Fatalf("tabby-lab %s: %v (%v)\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), stdout.String(), stderr.String())
	return "", "", -1
}

// OK runs tabby-lab and fails the test unless it exits 0; it returns stdout.
func (l *Lab) OK(args ...string) string {
	l.t.Helper()
	stdout, stderr, code := l.Run("", args...)
	if code != 0 {
		l.t.Fatalf("tabby-lab --name %s %s: exit %d\nstdout:\n%s\nstderr:\n%s", l.Name, strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// Fails runs tabby-lab, fails the test unless it exits non-zero, and returns stderr.
func (l *Lab) Fails(args ...string) string {
	l.t.Helper()
	stdout, stderr, code := l.Run("", args...)
	if code == 0 {
		l.t.Fatalf("tabby-lab --name %s %s succeeded, want failure; stdout:\n%s", l.Name, strings.Join(args, " "), stdout)
	}
	return stderr
}

// Apply applies a manifest to the lab's etcd (tabby-lab ctl apply -f -), failing the
// test if it is refused.
func (l *Lab) Apply(manifest string) {
	l.t.Helper()
	if stdout, stderr, code := l.Run(manifest, "ctl", "apply", "-f", "-"); code != 0 {
		l.t.Fatalf("apply: exit %d: %s%s", code, stdout, stderr)
	}
}

// Tabbyctl runs the built tabbyctl inside a lab namespace (a node, a host, a workload or
// the router) and returns stdout, stderr and the exit code: for what talks to an agent
// there, such as tabbyctl node status. tabby-lab ctl is for the lab's etcd.
func (l *Lab) Tabbyctl(target string, args ...string) (string, string, int) {
	l.t.Helper()
	return l.Run("", append([]string{"exec", target, "--", Bin(l.t, "tabbyctl")}, args...)...)
}

// Status is tabby-lab status -o json.
func (l *Lab) Status() *labstate.Status {
	l.t.Helper()
	var s labstate.Status
	if err := json.Unmarshal([]byte(l.OK("status", "-o", "json")), &s); err != nil {
		l.t.Fatalf("status -o json: %v", err)
	}
	return &s
}

// State reads the lab's state.json.
func (l *Lab) State() *labstate.State {
	l.t.Helper()
	st, err := labstate.Load(l.StateDir())
	if err != nil {
		l.t.Fatal(err)
	}
	return st
}

// NodeDataDir is a node's data directory (its agent's status socket is there).
func (l *Lab) NodeDataDir(node string) string {
	l.t.Helper()
	n := l.State().Node(node)
	if n == nil {
		l.t.Fatalf("lab %s has no node %s", l.Name, node)
	}
	return n.DataDir
}

// WorkloadIP is the address of a workload of the lab (it must have exactly one).
func (l *Lab) WorkloadIP(namespace, name string) netip.Addr {
	l.t.Helper()
	st := l.State()
	if w := st.Workload(namespace, name); w != nil && len(w.IPs) == 1 {
		return w.IPs[0].Addr()
	}
	l.t.Fatalf("lab %s has no workload %s/%s with one address: %+v", l.Name, namespace, name, st.Workloads)
	return netip.Addr{}
}

// WorkloadIPs are the IPv4 and IPv6 addresses of a dual-stack workload of the lab (it
// must have one of each).
func (l *Lab) WorkloadIPs(namespace, name string) (v4, v6 netip.Addr) {
	l.t.Helper()
	w := l.State().Workload(namespace, name)
	if w == nil {
		l.t.Fatalf("lab %s has no workload %s/%s", l.Name, namespace, name)
	}
	for _, p := range w.IPs {
		if p.Addr().Is4() {
			v4 = p.Addr()
		} else {
			v6 = p.Addr()
		}
	}
	if len(w.IPs) != 2 || !v4.IsValid() || !v6.IsValid() {
		l.t.Fatalf("workload %s/%s of lab %s is not dual stack: %v", namespace, name, l.Name, w.IPs)
	}
	return v4, v6
}

// WorkloadVeth is the host side of a workload's veth, from its WorkloadEndpoint.
func (l *Lab) WorkloadVeth(namespace, name string) string {
	l.t.Helper()
	var w struct {
		Spec struct{ InterfaceName string } `json:"spec"`
	}
	if err := json.Unmarshal([]byte(l.OK("ctl", "get", "workloadendpoints", "-n", namespace, name, "-o", "json")), &w); err != nil {
		l.t.Fatal(err)
	}
	return w.Spec.InterfaceName
}

// Ping checks that one ICMP echo from a lab namespace to addr is answered.
func (l *Lab) Ping(from, addr string) {
	l.t.Helper()
	if stdout, stderr, code := l.Run("", "exec", from, "--", "ping", "-c1", "-W5", addr); code != 0 {
		l.t.Fatalf("ping %s from %s in lab %s: exit %d\n%s%s", addr, from, l.Name, code, stdout, stderr)
	}
}

// NoPing checks that addr does not answer from a lab namespace (within a second).
func (l *Lab) NoPing(from, addr string) {
	l.t.Helper()
	if stdout, _, code := l.Run("", "exec", from, "--", "ping", "-c1", "-W1", addr); code == 0 {
		l.t.Errorf("%s in lab %s reached %s, want no answer:\n%s", from, l.Name, addr, stdout)
	}
}

// felixRoutes maps a lab namespace's routes of felix's protocol that have a via (the
// device, or the gateway) by destination: destination → via. family is ip's: -4 or -6.
func (l *Lab) felixRoutes(target, family string, via func(dev, gateway string) string) map[string]string {
	l.t.Helper()
	var routes []struct{ Dst, Dev, Gateway string }
	out := l.OK("exec", target, "--", "ip", family, "-j", "route", "show", "proto", strconv.Itoa(felix.RouteProtocol))
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		l.t.Fatalf("ip -j route in %s: %v: %s", target, err, out)
	}
	m := map[string]string{}
	for _, r := range routes {
		if v := via(r.Dev, r.Gateway); v != "" {
			m[r.Dst] = v
		}
	}
	return m
}

// DeviceRoutes lists a lab namespace's felix routes through a device: destination →
// device (to workloads, and through tunnels).
func (l *Lab) DeviceRoutes(target string) map[string]string {
	l.t.Helper()
	return l.felixRoutes(target, "-4", func(dev, _ string) string { return dev })
}

// GatewayRoutes lists a lab namespace's felix routes with a gateway: destination →
// gateway (learned over BGP).
func (l *Lab) GatewayRoutes(target string) map[string]string {
	l.t.Helper()
	return l.felixRoutes(target, "-4", func(_, gateway string) string { return gateway })
}

// GatewayRoutes6 is GatewayRoutes for IPv6 routes.
func (l *Lab) GatewayRoutes6(target string) map[string]string {
	l.t.Helper()
	return l.felixRoutes(target, "-6", func(_, gateway string) string { return gateway })
}

// pollInterval is how often Poll looks again.
const pollInterval = 25 * time.Millisecond

// Poll calls cond until it returns "" and returns how long that took; cond returns what
// is still wrong. If within passes first, it fails the test with what and cond's last
// answer.
func Poll(t testing.TB, what string, within time.Duration, cond func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		wrong := cond()
		if wrong == "" {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s: %s", what, within, wrong)
		}
		time.Sleep(pollInterval)
	}
}

// Steady calls cond every interval for the period d and fails the test the first time it
// returns something (what is wrong): for what must stay true, such as a route kept
// through an agent's restart.
func Steady(t testing.TB, what string, d, interval time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if wrong := cond(); wrong != "" {
			t.Fatalf("%s: %s", what, wrong)
		}
		time.Sleep(interval)
	}
}

// Pool is the lab's IPv4 pool for workloads, the one its first agent creates on first
// boot (default-ipv4-ippool, 10.244.0.0/16 in /26 blocks), without encapsulation or NAT
// outgoing. Applying it makes the pool exactly this whether an agent created it already
// or not (up --no-default-pools: it creates it).
const Pool = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
`

// VXLANPool is Pool with a vxlanMode (Always, CrossSubnet, Never) and natOutgoing
// ("true" or "false").
func VXLANPool(mode, nat string) string {
	return `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.244.0.0/16, blockSize: 26, vxlanMode: ` + mode + `, natOutgoing: ` + nat + `}
`
}

// BlockOf is the /26 a workload address sits in (Pool's block size).
func BlockOf(a netip.Addr) string {
	p, _ := a.Prefix(26)
	return p.String()
}

// BlockOf6 is the /122 an IPv6 workload address sits in (IPv6 pools' default block size).
func BlockOf6(a netip.Addr) string {
	p, _ := a.Prefix(122)
	return p.String()
}

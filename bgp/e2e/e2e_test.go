// Package e2e runs tabby's BGP fabric end to end in tabby-lab labs: real tabby-node agents,
// the real tabby-cni, and (when installed) BIRD. The tests need root; they skip without it
// unless CI is set. Every lab has a unique name and is torn down by t.Cleanup; traffic stays
// inside the labs' namespaces.
package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 && os.Getenv("CI") == "" {
		// Nothing to build: every test skips.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "tabby-bgp-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = filepath.Join(dir, "bin")
	for _, pkg := range []string{"tabby-lab", "tabby-node", "tabbyctl", "tabby-cni"} {
		build := exec.Command("go", "build", "-o", binDir+"/", "github.com/tabby-net/tabby/cmd/"+pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg, err)
			os.Exit(1)
		}
	}
	// The lab's agents with short BGP timers, so that sessions come up and fail over in
	// seconds.
	wrapper := "#!/bin/sh\nexec " + filepath.Join(binDir, "tabby-node") +
		` "$@" --bgp-hold-time 9s --bgp-keepalive-time 3s --bgp-connect-retry 1s --route-refresh-interval 2s` + "\n"
	if err := os.WriteFile(filepath.Join(binDir, "tabby-node-bgp"), []byte(wrapper), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "" {
			t.Skip("BGP lab tests need root (network namespaces); run as root, or with CI=1 to fail instead")
		}
		t.Fatal("BGP lab tests need root")
	}
	for _, tool := range []string{"ip", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("need %s (make deps)", tool)
			}
			t.Fatalf("need %s (make deps)", tool)
		}
	}
}

// needTool skips (fails under CI) when a Debian package's program is missing.
func needTool(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s is not installed: install the Debian package %s (make deps)", path, pkg)
		}
		t.Fatalf("%s is not installed: the Debian package %s is missing (make deps installs it)", path, pkg)
	}
}

type lab struct {
	t        testing.TB
	name     string
	stateDir string
	dataDir  string
}

func newLab(t testing.TB) *lab {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	l := &lab{t: t, name: fmt.Sprintf("bgp%x", b), stateDir: t.TempDir(), dataDir: t.TempDir()}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"node1.log", "node2.log", "node3.log"} {
				if b, err := os.ReadFile(filepath.Join(l.stateDir, l.name, f)); err == nil {
					lines := strings.Split(string(b), "\n")
					t.Logf("%s (tail):\n%s", f, strings.Join(lines[max(0, len(lines)-40):], "\n"))
				}
			}
		}
		if _, stderr, code := l.run("", "down"); code != 0 {
			t.Errorf("down: %s", stderr)
		}
	})
	return l
}

func (l *lab) run(stdin string, args ...string) (string, string, int) {
	args = append([]string{"--name", l.name, "--state-dir", l.stateDir, "--data-dir", l.dataDir}, args...)
	cmd := exec.Command(filepath.Join(binDir, "tabby-lab"), args...)
	cmd.Env = append(os.Environ(), "TABBY_LAB_BIN_DIR="+binDir)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return out.String(), errb.String(), code
}

func (l *lab) ok(args ...string) string {
	l.t.Helper()
	out, stderr, code := l.run("", args...)
	if code != 0 {
		l.t.Fatalf("tabby-lab %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

func (l *lab) apply(yaml string) {
	l.t.Helper()
	if out, stderr, code := l.run(yaml, "ctl", "apply", "-f", "-"); code != 0 {
		l.t.Fatalf("apply: %s%s", out, stderr)
	}
}

type labState struct {
	Nodes []struct {
		Name    string       `json:"name"`
		Netns   string       `json:"netns"`
		Address netip.Prefix `json:"address"`
		DataDir string       `json:"dataDir"`
		Agent   *struct {
			PID int    `json:"pid"`
			Log string `json:"log"`
		} `json:"agent"`
	} `json:"nodes"`
	Hosts []struct {
		Name    string       `json:"name"`
		Netns   string       `json:"netns"`
		Address netip.Prefix `json:"address"`
	} `json:"hosts"`
	Workloads []struct {
		Namespace string         `json:"namespace"`
		Name      string         `json:"name"`
		Node      string         `json:"node"`
		IPs       []netip.Prefix `json:"ips"`
	} `json:"workloads"`
	Etcd struct {
		Endpoint string `json:"endpoint"`
	} `json:"etcd"`
}

func (l *lab) state() *labState {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.stateDir, l.name, "state.json"))
	if err != nil {
		l.t.Fatal(err)
	}
	var s labState
	if err := json.Unmarshal(b, &s); err != nil {
		l.t.Fatal(err)
	}
	return &s
}

func (l *lab) workloadIP(ns, name string) netip.Addr {
	l.t.Helper()
	for _, w := range l.state().Workloads {
		if w.Namespace == ns && w.Name == name && len(w.IPs) > 0 {
			return w.IPs[0].Addr()
		}
	}
	l.t.Fatalf("no workload %s/%s", ns, name)
	return netip.Addr{}
}

// bgpStatus is the part of tabbyctl node status -o json the tests read.
type bgpStatus struct {
	Synced bool `json:"synced"`
	Peers  []struct {
		Address    string    `json:"address"`
		Type       string    `json:"type"`
		State      string    `json:"state"`
		Since      time.Time `json:"since"`
		Info       string    `json:"info"`
		Received   uint64    `json:"received"`
		Advertised uint64    `json:"advertised"`
	} `json:"peers"`
	Advertised []string `json:"advertised"`
}

// status runs tabbyctl node status on a node (or a host running an agent, with its data dir).
func (l *lab) status(target, dataDir string) (*bgpStatus, error) {
	out, stderr, code := l.run("", "exec", target, "--", filepath.Join(binDir, "tabbyctl"), "node", "status",
		"--socket", filepath.Join(dataDir, "status.sock"), "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("node status on %s: %s", target, stderr)
	}
	var s bgpStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Errorf("node status on %s: %w: %s", target, err, out)
	}
	return &s, nil
}

func (l *lab) nodeDataDir(node string) string {
	for _, n := range l.state().Nodes {
		if n.Name == node {
			return n.DataDir
		}
	}
	l.t.Fatalf("no node %s", node)
	return ""
}

// established returns the peers of target in state Established.
func (l *lab) established(target, dataDir string) (map[string]bool, *bgpStatus) {
	s, err := l.status(target, dataDir)
	if err != nil {
		return nil, nil
	}
	up := map[string]bool{}
	for _, p := range s.Peers {
		if p.State == "Established" {
			up[p.Address] = true
		}
	}
	return up, s
}

// gatewayRoutes returns a namespace's routes of protocol 116 with a gateway: dst -> gateway.
func (l *lab) gatewayRoutes(target string) map[string]string {
	l.t.Helper()
	var routes []struct{ Dst, Gateway string }
	if err := json.Unmarshal([]byte(l.ok("exec", target, "--", "ip", "-j", "route", "show", "proto", "116")), &routes); err != nil {
		l.t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range routes {
		if r.Gateway != "" {
			out[r.Dst] = r.Gateway
		}
	}
	return out
}

// poll calls cond until it returns "" or the deadline passes; cond returns what is still wrong.
func poll(t testing.TB, what string, within time.Duration, cond func() string) time.Duration {
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
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *lab) ping(from string, to netip.Addr) {
	l.t.Helper()
	if out, stderr, code := l.run("", "exec", from, "--", "ping", "-c", "1", "-W", "2", to.String()); code != 0 {
		l.t.Fatalf("ping %s from %s: %s%s", to, from, out, stderr)
	}
}

// cmdline reads a process's argv.
func cmdline(t testing.TB, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// startIn starts argv detached in a network namespace, appending to log; it returns the pid.
func startIn(t testing.TB, netns string, argv []string, log string) *os.Process {
	t.Helper()
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	return cmd.Process
}

func waitExit(t testing.TB, pid int, within time.Duration) {
	t.Helper()
	poll(t, fmt.Sprintf("pid %d exits", pid), within, func() string {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
			return "still running"
		}
		return ""
	})
}

const labPool = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-v4}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
`

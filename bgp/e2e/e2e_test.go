// Package e2e runs tabby's BGP fabric end to end in tabby-lab labs through
// internal/labtest: real tabby-node agents, the real tabby-cni, and (when installed) BIRD,
// FRR and gobgpd. End-to-end tests that are not about BGP are in the top-level e2e. The
// tests need root; they skip without it unless CI is set. Every lab has a unique name and
// is torn down by t.Cleanup; traffic stays inside the labs' namespaces.
package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/nodestatus"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// bgpAgent is the agent for these labs: tabby-node with labtest.FastBGP's short timers,
// so that sessions come up and fail over in seconds, after the flags extra.
func bgpAgent(t testing.TB, extra ...string) string {
	t.Helper()
	return labtest.AgentScript(t, append(extra, labtest.FastBGP...)...)
}

// lab is a labtest.Lab with what the BGP tests ask of it: agents' status, peers, routes.
type lab struct {
	*labtest.Lab
	t testing.TB
}

func newLab(t testing.TB) *lab {
	t.Helper()
	return &lab{Lab: labtest.New(t), t: t}
}

// status runs tabbyctl node status on a node (or a host running an agent, with its data dir).
func (l *lab) status(target, dataDir string) (*nodestatus.Status, error) {
	out, stderr, code := l.Tabbyctl(target, "node", "status", "--socket", filepath.Join(dataDir, "status.sock"), "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("node status on %s: %s", target, stderr)
	}
	var s nodestatus.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Errorf("node status on %s: %w: %s", target, err, out)
	}
	return &s, nil
}

// established returns the peers of target in state Established.
func (l *lab) established(target, dataDir string) (map[string]bool, *nodestatus.Status) {
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
	labtest.Poll(t, fmt.Sprintf("pid %d exits", pid), within, func() string {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
			return "still running"
		}
		return ""
	})
}

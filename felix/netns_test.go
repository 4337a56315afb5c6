package felix

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tabby-net/tabby/internal/testenv"
)

// requireRoot skips a test that needs root, unless CI is set: there it must run.
func requireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "this test (network namespaces)")
}

// testNS is a network namespace of the test's own, deleted when the test ends.
type testNS struct {
	name string
	path string
	h    *netlink.Handle // netlink in the namespace
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	requireRoot(t)
	n := &testNS{name: "tby-test-" + randomHex(8)}
	n.path = filepath.Join("/run/netns", n.name)
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	ns, err := netns.GetFromName(n.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if n.h, err = netlink.NewHandleAt(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.h.Close)
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs `ip -n NS args...`, as an operator would.
func (n *testNS) ip(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", n.name}, args...)...)
}

// sysctl reads a sysctl inside the namespace through another process.
func (n *testNS) sysctl(t testing.TB, path string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "ip", "netns", "exec", n.name, "cat", "/proc/sys/"+path))
}

func (n *testNS) setSysctl(t testing.TB, path, value string) {
	t.Helper()
	run(t, "ip", "netns", "exec", n.name, "sh", "-c", "echo "+value+" > /proc/sys/"+path)
}

// veth creates a veth named name with its peer beside it, both up.
func (n *testNS) veth(t testing.TB, name string) {
	t.Helper()
	peer := "p" + randomHex(10)
	n.ip(t, "link", "add", name, "type", "veth", "peer", "name", peer)
	n.ip(t, "link", "set", peer, "up")
	n.ip(t, "link", "set", name, "up")
}

// newHandle opens another netlink handle in the namespace, as a restarted agent would.
func (n *testNS) newHandle(t testing.TB) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(n.path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// routes returns `ip route show` lines of both families for the given selector, trimmed
// and sorted, as the operator sees them.
func (n *testNS) routes(t testing.TB, selector ...string) []string {
	t.Helper()
	var lines []string
	for _, family := range []string{"-4", "-6"} {
		out := n.ip(t, append([]string{family, "route", "show"}, selector...)...)
		for l := range strings.Lines(out) {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
	}
	slices.Sort(lines)
	return lines
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// vethName returns a workload-veth-shaped name: "tabby" and hex, at most 15 bytes.
func vethName() string { return "tabby" + randomHex(10) }

// eventually polls cond until it holds or the timeout passes; cond returns what it saw,
// for the failure message.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still not %s; saw %s", timeout, what, saw)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package ops

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestNodeLifecycle runs node lifecycle in a lab of three nodes, workloads on node3:
//
//   - node list shows every agent alive; node delete node3 is refused while its agent is;
//   - node3's agent killed (-9, as a host that died): node list shows it down within the
//     lease's time (15 s, plus slack), and node delete then removes it; node1 and node2
//     withdraw the routes to node3's blocks, ipam check is clean, no endpoint is left on
//     node3, and traffic between node1 and node2 flows;
//   - sweep: node3 registered again, a workload add on it and node delete started
//     together (delete 0, 0.2, 0.5, 1, 2 and 5 s after the add) leave ipam check clean, and a second
//     delete leaves nothing on node3;
//   - the lab's datastore exported and imported into a fresh tabby-node --datastore-only
//     on loopback: the import's export equals the export and ipam check is clean there.
func TestNodeLifecycle(t *testing.T) {
	labtest.Need(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "3", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("workload", "add", "node2", "default/w2")
	l.OK("workload", "add", "node3", "default/w3a")
	l.OK("workload", "add", "node3", "default/w3b")
	ip2 := l.WorkloadIP("default", "w2")
	block3 := labtest.BlockOf(l.WorkloadIP("default", "w3a"))
	routed := func(node string) bool { _, ok := l.GatewayRoutes(node)[block3]; return ok }
	labtest.Poll(t, "node1 and node2 route node3's block", 60*time.Second, func() string {
		for _, n := range []string{"node1", "node2"} {
			if !routed(n) {
				return n + " has no route to " + block3
			}
		}
		return ""
	})
	agentOf := func(node string) string {
		for _, line := range strings.Split(l.OK("ctl", "node", "list"), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == node {
				return line
			}
		}
		return ""
	}
	labtest.Poll(t, "every agent alive in node list", 30*time.Second, func() string {
		for _, n := range []string{"node1", "node2", "node3"} {
			if line := agentOf(n); !strings.Contains(line, "alive since") {
				return fmt.Sprintf("%s: %q", n, line)
			}
		}
		return ""
	})
	if stderr := l.Fails("ctl", "node", "delete", "node3"); !strings.Contains(stderr, `node "node3": its agent is alive`) {
		t.Errorf("node delete of a live node: %s", stderr)
	}

	pid := l.State().Node("node3").Agent.PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	down := labtest.Poll(t, "node list shows node3 down", 25*time.Second, func() string {
		if line := agentOf("node3"); !strings.HasSuffix(strings.TrimSpace(line), "down") {
			return line
		}
		return ""
	})
	t.Logf("node3's agent killed: node list shows it down after %s (lease TTL 15 s)", down.Round(100*time.Millisecond))
	if !strings.Contains(agentOf("node1"), "alive since") {
		t.Errorf("node1 not alive after node3 went: %q", agentOf("node1"))
	}
	out := l.OK("ctl", "node", "delete", "node3")
	if !strings.Contains(out, "Deleted node node3: 2 workload endpoints") {
		t.Errorf("node delete: %s", out)
	}
	withdrawn := labtest.Poll(t, "node3's routes withdrawn", 30*time.Second, func() string {
		for _, n := range []string{"node1", "node2"} {
			if routed(n) {
				return n + " still routes " + block3
			}
		}
		return ""
	})
	t.Logf("node delete: node3's routes withdrawn on node1 and node2 %s after it returned (%s after the kill)", withdrawn.Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
	ipamClean(t, l, "after node delete")
	noEndpointsOn(t, l, "node3", "after node delete")
	if strings.Contains(l.OK("ctl", "ipam", "show", "--show-blocks"), "node3") {
		t.Errorf("ipam show --show-blocks still names node3 after delete")
	}
	l.Ping("default/w1", ip2.String())

	// Sweep: delete racing a workload add on node3.
	for i, delay := range []time.Duration{0, 200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second} {
		l.Apply("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node3}\n")
		name := fmt.Sprintf("default/race%d", i)
		var wg sync.WaitGroup
		var addOut, addErr string
		var addCode int
		wg.Go(func() { addOut, addErr, addCode = l.Run("", "workload", "add", "node3", name) })
		time.Sleep(delay) // the sweep's offset between the two calls, not a wait for either
		delOut, delErr, delCode := l.Run("", "ctl", "node", "delete", "node3")
		wg.Wait()
		t.Logf("delete %s after add: add exit %d %s%s; delete exit %d %s%s", delay, addCode, addOut, lastLine(addErr), delCode, delOut, lastLine(delErr))
		if delCode != 0 {
			t.Errorf("delete %s after add: node delete failed: %s", delay, delErr)
		}
		ipamClean(t, l, fmt.Sprintf("delete %s after add", delay))
		// An add that read the Node before it went may land after the delete: a second
		// delete clears it (or finds nothing).
		l.Run("", "ctl", "node", "delete", "node3")
		noEndpointsOn(t, l, "node3", fmt.Sprintf("delete %s after add, deleted again", delay))
		ipamClean(t, l, fmt.Sprintf("delete %s after add, deleted again", delay))
		if addCode == 0 {
			l.Run("", "workload", "del", name)
		}
	}

	// Export the lab's datastore and import it into a fresh one.
	export := l.OK("ctl", "datastore", "export")
	ep := startDatastoreOnly(t)
	ctl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(labtest.Bin(t, "tabbyctl"), append([]string{"--etcd-endpoints", ep}, args...)...)
		cmd.Stdin = strings.NewReader(export)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("tabbyctl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	t.Logf("import into a fresh datastore: %s", strings.TrimSpace(ctl("datastore", "import", "-f", "-")))
	if again := ctl("datastore", "export"); again != export {
		t.Errorf("the import's export differs from the lab's export:\n--- lab\n%s\n--- import\n%s", export, again)
	}
	if out := ctl("ipam", "check"); !strings.Contains(out, "No problems found.") {
		t.Errorf("ipam check after import:\n%s", out)
	}
	for _, want := range []string{"kind: WorkloadEndpoint", "name: w1", "key: blocks/10.244.", "key: affinities/node1/"} {
		if !strings.Contains(export, want) {
			t.Errorf("the lab's export lacks %q", want)
		}
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func ipamClean(t *testing.T, l *labtest.Lab, when string) {
	t.Helper()
	if out, stderr, code := l.Run("", "ctl", "ipam", "check"); code != 0 {
		t.Errorf("%s: ipam check: %s%s", when, out, stderr)
	}
}

func noEndpointsOn(t *testing.T, l *labtest.Lab, node, when string) {
	t.Helper()
	for _, line := range strings.Split(l.OK("ctl", "get", "workloadendpoints", "-A", "-o", "wide"), "\n") {
		if strings.Contains(" "+line+" ", " "+node+" ") {
			t.Errorf("%s: endpoint on %s: %s", when, node, line)
		}
	}
}

// startDatastoreOnly runs tabby-node --datastore-only on loopback ports until the test
// ends and returns its client endpoint once it answers.
func startDatastoreOnly(t *testing.T) string {
	t.Helper()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	client, peer := fmt.Sprintf("http://127.0.0.1:%d", port()), fmt.Sprintf("http://127.0.0.1:%d", port())
	var log bytes.Buffer
	cmd := exec.Command(labtest.Bin(t, "tabby-node"), "--datastore-only", "--data-dir", t.TempDir(),
		"--etcd-listen-client", client, "--etcd-listen-peer", peer)
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	labtest.Poll(t, "tabby-node --datastore-only answers", 30*time.Second, func() string {
		out, err := exec.CommandContext(ctx, labtest.Bin(t, "tabbyctl"), "--etcd-endpoints", client, "version").CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%v: %s (log: %s)", err, out, log.String())
		}
		return ""
	})
	return client
}

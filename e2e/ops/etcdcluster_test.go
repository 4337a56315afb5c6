package ops

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labstate"
	"github.com/tabby-net/tabby/internal/labtest"
)

// TestEtcdClusterTLS runs a lab on a 3-member etcd cluster that serves only TLS with
// client certificates (tabby-lab up --etcd-members 3 --etcd-tls):
//   - the hostile probe of issue 13: from inside a workload, etcd's HTTP API on every
//     member refuses plain HTTP and HTTPS without a client certificate (and with the lab's
//     certificate the same request reads the keys, so the probe is one that can succeed);
//     tabbyctl without a client certificate names that cause;
//   - one member killed (SIGKILL) while workloads are added, the kill swept 0, 1 and 2 s
//     after the first add, a different member each round (the first is every client's
//     first endpoint): every add succeeds, the new workloads are reachable across nodes,
//     a ping across nodes loses nothing throughout, tabbyctl ipam check is clean, and the
//     member started again (tabby-lab etcd start --member) rejoins and serves the latest
//     data.
func TestEtcdClusterTLS(t *testing.T) {
	labtest.Need(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--etcd-members", "3", "--etcd-tls", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	st := l.State()
	if len(st.Etcd.Members) != 3 || st.Etcd.TLS == nil {
		t.Fatalf("lab state: %d etcd members, TLS %v", len(st.Etcd.Members), st.Etcd.TLS)
	}
	l.OK("workload", "add", "node1", "shop/a")
	l.OK("workload", "add", "node2", "shop/b")
	b := l.WorkloadIP("shop", "b").String()
	reach := func(what, from, addr string) {
		t.Helper()
		labtest.Poll(t, what, 30*time.Second, func() string {
			if out, _, code := l.Run("", "exec", from, "--", "ping", "-c1", "-W1", addr); code != 0 {
				return out
			}
			return ""
		})
	}
	reach("a reaches b", "shop/a", b)

	t.Run("hostile probe", func(t *testing.T) { probeEtcdFromWorkload(t, l.With(t), st) })

	pinger := l.StartPinger("w-shop.a", b, 100*time.Millisecond)
	for round, delay := range []time.Duration{0, time.Second, 2 * time.Second} {
		victim := st.Etcd.Members[(round+1)%3] // etcd2, etcd3, then etcd1
		var wg sync.WaitGroup
		var killed atomic.Bool
		wg.Go(func() {
			time.Sleep(delay) // the kill's offset from the first add, swept: not a wait for a result
			if err := syscall.Kill(victim.Process.PID, syscall.SIGKILL); err != nil {
				t.Errorf("round %d: kill %s (pid %d): %v", round, victim.Name, victim.Process.PID, err)
			}
			killed.Store(true)
		})
		// Adds go on until two have started after the kill: some race it, some find
		// the member dead.
		var added []string
		for after := 0; after < 2; {
			if killed.Load() {
				after++
			}
			name := fmt.Sprintf("r%d-%d", round, len(added))
			l.OK("workload", "add", fmt.Sprintf("node%d", len(added)%2+1), "shop/"+name)
			added = append(added, name)
		}
		wg.Wait()
		t.Logf("round %d: %s killed %v after the first of %d adds", round, victim.Name, delay, len(added))
		for _, name := range added {
			reach(fmt.Sprintf("round %d (%s killed after %v): a reaches %s", round, victim.Name, delay, name), "shop/a", l.WorkloadIP("shop", name).String())
		}
		if out := l.OK("ctl", "ipam", "check"); !strings.Contains(out, "No problems found") {
			t.Errorf("round %d: ipam check with %s down:\n%s", round, victim.Name, out)
		}
		l.OK("etcd", "start", "--member", victim.Name)
		// Rejoined: the member alone answers a linearizable read (it has a leader) and
		// has the endpoints added while it was down.
		labtest.Poll(t, fmt.Sprintf("round %d: %s rejoins with the latest data", round, victim.Name), 60*time.Second, func() string {
			out, stderr, code := l.Run("", "exec", "router", "--", labtest.Bin(t, "tabbyctl"), "--etcd-endpoints", victim.ClientURL,
				"--dial-timeout", "2s", "get", "workloadendpoints", "-A")
			if code != 0 {
				return stderr
			}
			for _, name := range added {
				if !strings.Contains(out, name) {
					return "no endpoint of " + name + " in:\n" + out
				}
			}
			return ""
		})
	}
	replies, out := pinger.Stop(t)
	if lost := labtest.Lost(replies); len(replies) == 0 || len(lost) > 0 {
		t.Errorf("a -> b across nodes: %d replies, lost %v (goal: none lost)\n%s", len(replies), lost, out)
	} else {
		t.Logf("a -> b across nodes: %d replies, none lost, through 3 member kills and restarts", len(replies))
	}
	if cni, err := os.ReadFile(filepath.Join(l.StateDir(), "cni.log")); err == nil {
		t.Logf("CNI writes sent again after a member failed mid-request: %d", strings.Count(string(cni), "sending it again"))
	}
	if out, _, _ := l.Tabbyctl("node1", "node", "status"); !strings.Contains(out, "Established") {
		t.Errorf("node1's BGP session is not established:\n%s", out)
	}
}

// probeEtcdFromWorkload is the hostile probe: etcd's HTTP API from inside a workload.
func probeEtcdFromWorkload(t *testing.T, l *labtest.Lab, st *labstate.State) {
	rangeAll := `{"key":"AA==","range_end":"AA=="}` // every key
	curl := func(args ...string) (string, int) {
		out, stderr, code := l.Run("", append([]string{"exec", "shop/a", "--", "curl", "-sS", "-m", "5", "-X", "POST", "-d", rangeAll}, args...)...)
		return out + stderr, code
	}
	for _, m := range st.Etcd.Members {
		plain := "http" + strings.TrimPrefix(m.ClientURL, "https") + "/v3/kv/range"
		if out, code := curl(plain); code == 0 || strings.Contains(out, `"kvs"`) {
			t.Errorf("plain HTTP to %s from a workload: exit %d: %s", plain, code, out)
		}
		if out, code := curl("-k", m.ClientURL+"/v3/kv/range"); code == 0 || strings.Contains(out, `"kvs"`) {
			t.Errorf("HTTPS without a client certificate to %s from a workload: exit %d: %s", m.ClientURL, code, out)
		}
	}
	tls := st.Etcd.TLS
	if out, code := curl("--cacert", tls.CAFile, "--cert", tls.CertFile, "--key", tls.KeyFile, st.Etcd.Members[0].ClientURL+"/v3/kv/range"); code != 0 || !strings.Contains(out, `"kvs"`) {
		t.Errorf("HTTPS with the lab's client certificate (the probe's control) read nothing: exit %d: %s", code, out)
	}
	// tabbyctl without a client certificate says so (an empty flag overrides the
	// certificate tabby-lab exec puts in the environment).
	_, stderr, code := l.Run("", "exec", "router", "--", labtest.Bin(t, "tabbyctl"), "--etcd-cert-file=", "--etcd-key-file=",
		"--dial-timeout", "1s", "get", "nodes")
	if code == 0 || !strings.Contains(stderr, "the server requires a client certificate and none was given") {
		t.Errorf("tabbyctl without a client certificate: exit %d: %s", code, stderr)
	}
}

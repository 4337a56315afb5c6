package ops

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/nodestatus"
	"github.com/tabby-net/tabby/ipam"
)

// TestNodeDiags runs tabbyctl node diags on a lab node (two nodes peering, a workload
// and a Service, so every table has something of tabby's) and checks the archive: every
// entry is there and says something, the JSON entries parse (status, readiness, BGP
// peers with the other node Established, an IPAM check without problems), the logs are
// the agent's, the routes hold the workload's, iptables and ipsets hold tabby's chains
// and sets in their save syntax, nftables tabby's table. An agent of another node is
// refused.
func TestNodeDiags(t *testing.T) {
	labtest.Need(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, labtest.FastBGP...))
	l.Apply(labtest.Pool)
	l.OK("workload", "add", "node1", "default/web", "--labels", "app=web")
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web-in}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress: [{action: Allow, source: {selector: app == 'client'}}]
`)
	ip := l.WorkloadIP("default", "web")
	socket := filepath.Join(l.NodeDataDir("node1"), nodestatus.SocketName)
	ctl := labtest.Bin(t, "tabbyctl")
	labtest.Poll(t, "node1 ready with its peer established", 60*time.Second, func() string {
		out, _, code := l.Run("", "exec", "node1", "--", ctl, "node", "status", "--socket", socket)
		if code != 0 || !strings.Contains(out, "Established") || !strings.Contains(out, "Readiness: ready") {
			return out
		}
		return ""
	})
	archive := filepath.Join(t.TempDir(), "diags.tar.gz")
	out := l.OK("exec", "node1", "--", ctl, "node", "diags", "node1", "-o", archive, "--socket", socket)
	if !strings.Contains(out, "Diagnostics of node node1 written to "+archive) {
		t.Errorf("node diags: %s", out)
	}
	files := readArchive(t, archive)
	for _, name := range []string{"version.txt", "flags.txt", "status.json", "readiness.json", "bgp-peers.json", "logs.txt",
		"routes.txt", "iptables.txt", "ip6tables.txt", "nftables.txt", "ipsets.txt", "ipam-check.json"} {
		if strings.TrimSpace(files[name]) == "" {
			t.Errorf("%s missing or empty", name)
		}
		if strings.Contains(files[name], "# error:") && name != "ip6tables.txt" && name != "nftables.txt" {
			t.Errorf("%s has an error:\n%s", name, files[name])
		}
	}
	var st nodestatus.Status
	var rr nodestatus.Readiness
	var peers []nodestatus.Peer
	var rep ipam.Report
	for name, v := range map[string]any{"status.json": &st, "readiness.json": &rr, "bgp-peers.json": &peers, "ipam-check.json": &rep} {
		if err := json.Unmarshal([]byte(files[name]), v); err != nil {
			t.Errorf("%s: %v\n%s", name, err, files[name])
		}
	}
	if st.Node != "node1" || !rr.Ready || len(peers) != 1 || peers[0].State != "Established" || rep.Problems() != 0 || rep.Summary.WorkloadEndpoints != 1 {
		t.Errorf("status %+v, readiness %+v, peers %+v, ipam check %d problems %+v", st, rr, peers, rep.Problems(), rep.Summary)
	}
	for name, wants := range map[string][]string{
		"version.txt":  {"tabby-node", "node node1, role node"},
		"flags.txt":    {"--node-name=node1", "--bgp-hold-time=9s"},
		"logs.txt":     {"agent running"},
		"routes.txt":   {ip.String()},
		"iptables.txt": {"*filter", ":tby-", "-A FORWARD", "-j tby-", "COMMIT"},
		"ipsets.txt":   {"create tby"},
		"nftables.txt": {"table ip tabby"},
	} {
		for _, w := range wants {
			if !strings.Contains(files[name], w) {
				t.Errorf("%s lacks %q:\n%s", name, w, files[name])
			}
		}
	}
	for _, line := range strings.Split(files["iptables.txt"], "\n") {
		if strings.HasPrefix(line, "-A ") && !strings.Contains(line, "tby-") {
			t.Errorf("iptables.txt holds a rule not tabby's: %s", line)
		}
	}

	socket2 := filepath.Join(l.NodeDataDir("node2"), nodestatus.SocketName)
	if stderr := l.Fails("exec", "node2", "--", ctl, "node", "diags", "node1", "-o", archive+"2", "--socket", socket2); !strings.Contains(stderr, `is node "node2", not "node1"`) {
		t.Errorf("diags of node1 from node2's agent: %s", stderr)
	}
	if _, err := os.Stat(archive + "2"); err == nil {
		t.Error("a refused diags wrote its file")
	}
}

// readArchive reads a tar.gz into name → content.
func readArchive(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = string(b)
	}
}

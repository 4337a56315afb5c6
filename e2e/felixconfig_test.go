package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/labtest"
)

// agentWithoutLogLevel is labtest.AgentScript without the lab's --log-level, so that a
// FelixConfiguration sets the agents' log level (an explicit flag would win).
func agentWithoutLogLevel(t *testing.T, flags ...string) string {
	t.Helper()
	script := `#!/bin/bash
args=()
while [ $# -gt 0 ]; do
	if [ "$1" = --log-level ]; then shift 2; continue; fi
	args+=("$1"); shift
done
exec ` + labtest.AgentScript(t, flags...) + ` "${args[@]}"
`
	path := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFelixConfiguration runs a two-node VXLAN lab whose agents are given --ipip-mtu
// (and FastBGP's --route-refresh-interval) on the command line, node1 protected by a
// deny-all host endpoint policy and servers on node1's ports 7777 and 8080. It applies a
// FelixConfiguration default and a node.node1 and a node.node2 override, and sees each
// live effect in the nodes' namespaces, without a restart:
//
//   - vxlanMTU: vxlan.tabby's MTU and the recorded workload MTU, node1's from its
//     override, node2's from the default; a workload attached then gets node1's;
//   - chainInsertMode Append (node1): policy's hook moves below another program's rule in
//     FORWARD;
//   - failsafeInboundHostPorts: port 7777 opens under the deny-all policy, 8080 stays shut;
//   - defaultEndpointToHostAction Drop: a workload no longer reaches its own host;
//   - logSeverityScreen Debug (node1): debug lines in node1's log;
//   - iptablesBackend Legacy (node2): policy's chains move from nft to legacy;
//   - wireguardEnabled (node2): WireGuard turns on, which this kernel cannot (a problem
//     in node status), and off again;
//   - ipipMTU: the flag wins, and node status says what the default says.
//
// tabbyctl gets them, and refuses a field of Calico's that tabby does not implement.
// Deleting the FelixConfigurations brings every default back.
func TestFelixConfiguration(t *testing.T) {
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", agentWithoutLogLevel(t, append(slices.Clone(labtest.FastBGP), "--ipip-mtu", "1400")...))
	l.Apply(labtest.VXLANPool("Always", "false"))
	l.OK("workload", "add", "node1", "default/w1")
	l.OK("host", "add", "outside")
	st := l.State()
	node1 := st.Node("node1").Address.Addr().String()
	l.StartExec(t, "node1", probe, "serve", "node1", "7777", "8080")
	// Another program's rule in node1's FORWARD, on the backend the lab's nodes detect.
	l.OK("exec", "node1", "--", "iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "ACCEPT")

	// Deny-all on node1's host interfaces: only the failsafe ports stay open.
	l.Apply(`apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-all, labels: {protect: "yes"}}
spec: {node: node1, interfaceName: "*", expectedIPs: [` + node1 + `]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all-protected-hosts}
spec: {selector: protect == 'yes', types: [Ingress, Egress]}
`)

	reaches := func(from, addr string) bool {
		c := probeCounts(t, l, probe, from, "tcp", 1, addr)
		return c["timeout"]+c["refused"]+c["error"] == 0
	}
	ports := func() string {
		got := fmt.Sprintf("7777 %v, 8080 %v, w1 to its host %v",
			reaches("outside", node1+":7777"), reaches("outside", node1+":8080"), reaches("default/w1", node1+":8080"))
		return got
	}
	mtu := func(target, dev string) string {
		out := l.OK("exec", target, "--", "ip", "-o", "link", "show", dev)
		if m := regexp.MustCompile(` mtu (\d+) `).FindStringSubmatch(out); m != nil {
			return m[1]
		}
		return out
	}
	workloadMTU := func(node string) string {
		out := l.OK("ctl", "get", "node", node, "-o", "yaml")
		if m := regexp.MustCompile(`tabby.io/workload-mtu: "(\d+)"`).FindStringSubmatch(out); m != nil {
			return m[1]
		}
		return "none"
	}
	// forward says where policy's hook stands in node1's FORWARD: "top" or "bottom".
	forward := func() string {
		var rules []string
		for _, line := range strings.Split(l.OK("exec", "node1", "--", "iptables-nft-save", "-t", "filter"), "\n") {
			if strings.HasPrefix(line, "-A FORWARD ") {
				rules = append(rules, line)
			}
		}
		switch {
		case len(rules) == 2 && strings.HasSuffix(rules[0], "-j "+felix.ChainForward):
			return "top"
		case len(rules) == 2 && strings.HasSuffix(rules[1], "-j "+felix.ChainForward):
			return "bottom"
		}
		return fmt.Sprintf("%q", rules)
	}
	// backend says which backends hold policy's chains in node2.
	backend := func() string {
		var on []string
		for _, b := range []string{"nft", "legacy"} {
			if strings.Contains(l.OK("exec", "node2", "--", "iptables-"+b+"-save", "-t", "filter"), ":"+felix.ChainForward+" ") {
				on = append(on, b)
			}
		}
		return strings.Join(on, ",")
	}
	status := func(node string) string {
		out, stderr, code := l.Tabbyctl(node, "node", "status", "--socket", filepath.Join(l.NodeDataDir(node), "status.sock"))
		if code != 0 {
			t.Fatalf("node status %s: %s", node, stderr)
		}
		return out
	}
	// state is every observed setting, compared with want as one string.
	state := func() string {
		return fmt.Sprintf("vxlan.tabby node1 %s node2 %s; workload MTU node1 %s node2 %s; hook %s; backend %s; %s",
			mtu("node1", "vxlan.tabby"), mtu("node2", "vxlan.tabby"), workloadMTU("node1"), workloadMTU("node2"), forward(), backend(), ports())
	}
	expect := func(step, want string) {
		t.Helper()
		took := labtest.Poll(t, step, 60*time.Second, func() string {
			if got := state(); got != want {
				return "got  " + got + "\nwant " + want
			}
			return ""
		})
		t.Logf("%s: as expected after %v", step, took.Round(time.Millisecond))
	}
	const defaults = "vxlan.tabby node1 1450 node2 1450; workload MTU node1 1450 node2 1450; hook top; backend nft; 7777 false, 8080 false, w1 to its host true"
	expect("deny-all, no FelixConfiguration", defaults)
	log1 := filepath.Join(l.StateDir(), "node1.log")
	before, err := os.ReadFile(log1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(before), "level=DEBUG") {
		t.Fatalf("node1 logged debug lines at level info")
	}

	l.Apply(`apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec:
  vxlanMTU: 1400
  ipipMTU: 1380
  routeRefreshInterval: 30s
  defaultEndpointToHostAction: Drop
  failsafeInboundHostPorts:
  - {protocol: TCP, port: 22}
  - {protocol: TCP, port: 179}
  - {protocol: TCP, port: 2379}
  - {protocol: TCP, port: 2380}
  - {protocol: TCP, port: 7777}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node1}
spec: {vxlanMTU: 1300, chainInsertMode: Append, logSeverityScreen: Debug}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: node.node2}
spec: {iptablesBackend: Legacy, wireguardEnabled: true}
`)
	if got := l.OK("ctl", "get", "felixconfig"); !strings.Contains(got, "node.node1") || !strings.Contains(got, "default") {
		t.Errorf("tabbyctl get felixconfig:\n%s", got)
	}
	// A field of Calico's that tabby does not implement is refused, naming it.
	if _, stderr, code := l.Run("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: true}\n",
		"ctl", "apply", "-f", "-"); code == 0 || !strings.Contains(stderr, "spec.bpfEnabled: not implemented") {
		t.Errorf("apply of bpfEnabled: exit %d, %s; want it refused as not implemented", code, stderr)
	}
	expect("FelixConfigurations applied",
		"vxlan.tabby node1 1300 node2 1400; workload MTU node1 1300 node2 1400; hook bottom; backend legacy; 7777 true, 8080 false, w1 to its host false")
	l.OK("workload", "add", "node1", "default/w3")
	if got := mtu("default/w3", "eth0"); got != "1300" {
		t.Errorf("a workload attached on node1 after vxlanMTU 1300 has MTU %s", got)
	}
	labtest.Poll(t, "debug lines in node1's log", 30*time.Second, func() string {
		b, _ := os.ReadFile(log1)
		if !strings.Contains(string(b[len(before):]), "level=DEBUG") {
			return "none yet"
		}
		return ""
	})
	if b, _ := os.ReadFile(filepath.Join(l.StateDir(), "node2.log")); strings.Contains(string(b), "level=DEBUG") {
		t.Errorf("node2, whose log level is the default's, logged debug lines")
	}
	s1 := status("node1")
	for _, want := range []string{
		"Setting: ipipMTU: 1400 from flag --ipip-mtu (FelixConfiguration default says 1380)",
		"Setting: routeRefreshInterval: 2s from flag --route-refresh-interval (FelixConfiguration default says 30s)",
		"Setting: vxlanMTU: 1300 from FelixConfiguration node.node1",
		"Setting: defaultEndpointToHostAction: DROP from FelixConfiguration default",
		"Setting: logSeverityScreen: debug from FelixConfiguration node.node1",
	} {
		if !strings.Contains(s1, want+"\n") {
			t.Errorf("node1's status lacks %q:\n%s", want, s1)
		}
	}
	// This kernel has no wireguard: turned on, node2's encapsulation pass says so.
	labtest.Poll(t, "node2's WireGuard on, without the kernel's support", 30*time.Second, func() string {
		if s2 := status("node2"); !strings.Contains(s2, "Setting: iptablesBackend: legacy from FelixConfiguration node.node2\n") ||
			!strings.Contains(s2, "Problem: wireguard: ") {
			return s2
		}
		return ""
	})

	l.OK("ctl", "delete", "felixconfiguration", "default", "node.node1", "node.node2")
	expect("FelixConfigurations deleted", defaults)
	if s1 := status("node1"); strings.Contains(s1, "FelixConfiguration") || !strings.Contains(s1, "Setting: ipipMTU: 1400 from flag --ipip-mtu\n") {
		t.Errorf("node1's status after the delete:\n%s", s1)
	}
	labtest.Poll(t, "node2's WireGuard off again", 30*time.Second, func() string {
		if s2 := status("node2"); strings.Contains(s2, "wireguard") || strings.Contains(s2, "FelixConfiguration") {
			return s2
		}
		return ""
	})
}

package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

// hepProbe is one flow of the host endpoint test: from a lab namespace (a node, a host
// or a workload) to an address, over TCP or UDP.
type hepProbe struct {
	name     string
	from     string // lab target: node1, outside, default/w1
	src, dst string // for tabbyctl policy check: an address or namespace/name
	addr     string // what the prober dials: address
	proto    string
	port     int
	failsafe bool // a failsafe port: policy check (which does not know them) is not asked
}

func (p hepProbe) String() string {
	return fmt.Sprintf("%s (%s -> %s %s/%d)", p.name, p.from, p.addr, p.proto, p.port)
}

// TestHostEndpointPolicy runs a two-node lab (VXLAN) whose agents keep automatic host
// endpoints, with servers on node1, on a workload of each node and on an outside host:
//
//   - the automatic host endpoints (allow-all profile) change nothing;
//   - a deny-all policy on node1's host endpoint (selected by a label put on node1's Node,
//     which its automatic host endpoint takes) closes node1's other ports both ways,
//     while the failsafe ports (22 and 6443 in, DNS out, BGP's 179) stay open, BGP stays
//     Established, and workload traffic (across the VXLAN tunnel, and to a workload's own
//     host) flows;
//   - a doNotTrack policy that allows port 8080 in only is not enough (its replies are
//     untracked policy's too); allowing the replies as well opens it, and the flows leave
//     no conntrack entry on node1, where a tracked one left some;
//   - a preDNAT policy closes a NodePort to one outside host and leaves it open to
//     another;
//   - an applyOnForward policy denying the other host closes the NodePort's forwarded
//     traffic to it, and node1's own port.
//
// At each step, tabbyctl policy check agrees with what the kernel did, on every flow
// but the failsafe ports' (outside the model), and but the untracked flow whose replies
// are dropped (policy check decides a flow's first packet).
func TestHostEndpointPolicy(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "conntrack", Package: "conntrack"})
	probe := labtest.Build(t, "./testdata/svcprobe", "svcprobe")
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--subnets", "1", "--agent-binary", labtest.AgentScript(t, append(slices.Clone(labtest.FastBGP), "--auto-host-endpoints")...))
	l.Apply(labtest.VXLANPool("Always", "false"))
	l.OK("workload", "add", "node1", "default/w1", "--labels", "app=web")
	l.OK("workload", "add", "node2", "default/w2")
	l.OK("host", "add", "outside")
	l.OK("host", "add", "outside2")
	st := l.State()
	node1 := st.Node("node1").Address.Addr().String()
	outside := st.Host("outside").Address.Addr().String()
	outside2 := st.Host("outside2").Address.Addr().String()
	w1 := l.WorkloadIP("default", "w1").String()
	for _, s := range []struct{ target, name string }{{"node1", "node1"}, {"default/w1", "w1"}, {"outside", "outside"}} {
		ports := map[string][]string{"node1": {"22", "6443", "8080"}, "w1": {"8080"}, "outside": {"53", "8080"}}[s.name]
		l.StartExec(t, s.target, append([]string{probe, "serve", s.name}, ports...)...)
	}
	l.Apply(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}]
`)

	in := hepProbe{name: "outside to node1's 8080", from: "outside", src: outside, dst: node1, addr: node1, proto: "tcp", port: 8080}
	ssh := hepProbe{name: "ssh (failsafe)", from: "outside", src: outside, dst: node1, addr: node1, proto: "tcp", port: 22, failsafe: true}
	kube := hepProbe{name: "kube-apiserver (failsafe)", from: "outside", src: outside, dst: node1, addr: node1, proto: "tcp", port: 6443, failsafe: true}
	out := hepProbe{name: "node1 to outside's 8080", from: "node1", src: node1, dst: outside, addr: outside, proto: "tcp", port: 8080}
	dns := hepProbe{name: "node1's DNS to outside (failsafe)", from: "node1", src: node1, dst: outside, addr: outside, proto: "udp", port: 53, failsafe: true}
	wl := hepProbe{name: "w2 to w1 (VXLAN)", from: "default/w2", src: "default/w2", dst: "default/w1", addr: w1, proto: "tcp", port: 8080}
	toOwnHost := hepProbe{name: "w1 to its own host", from: "default/w1", src: "default/w1", dst: node1, addr: node1, proto: "tcp", port: 8080}
	wlToHost := hepProbe{name: "w2 to node1", from: "default/w2", src: "default/w2", dst: node1, addr: node1, proto: "tcp", port: 8080}
	nodePort := hepProbe{name: "outside to the NodePort", from: "outside", src: outside, dst: node1, addr: node1, proto: "tcp", port: 30080}
	nodePort2 := hepProbe{name: "outside2 to the NodePort", from: "outside2", src: outside2, dst: node1, addr: node1, proto: "tcp", port: 30080}
	all := []hepProbe{in, ssh, kube, out, dns, wl, toOwnHost, wlToHost}

	reaches := func(p hepProbe) bool {
		c := probeCounts(t, l, probe, p.from, p.proto, 1, fmt.Sprintf("%s:%d", p.addr, p.port))
		return c["timeout"]+c["refused"]+c["error"] == 0
	}
	// expect polls until every probe's outcome is want's (allowed unless listed), then,
	// with check, asks policy check about each.
	expect := func(step string, check bool, probes []hepProbe, denied ...hepProbe) {
		t.Helper()
		took := labtest.Poll(t, step, 60*time.Second, func() string {
			var wrong []string
			for _, p := range probes {
				want := !slices.Contains(denied, p)
				if got := reaches(p); got != want {
					wrong = append(wrong, fmt.Sprintf("%s: reached %v, want %v", p, got, want))
				}
			}
			return strings.Join(wrong, "; ")
		})
		t.Logf("%s: as expected after %v", step, took.Round(time.Millisecond))
		for _, p := range probes {
			if p.failsafe || !check {
				continue
			}
			args := []string{"policy", "check", p.src, p.dst, "--protocol", p.proto, "--port", strconv.Itoa(p.port)}
			got, stderr, code := l.Tabbyctl("node1", args...)
			if code != 0 {
				t.Fatalf("policy check %s: %s", p, stderr)
			}
			want := "ALLOWED"
			if slices.Contains(denied, p) {
				want = "DENIED"
			}
			if first, _, _ := strings.Cut(got, "\n"); !strings.HasSuffix(first, want) {
				t.Errorf("%s: policy check says\n%s\nwant %s, as the kernel did", step, got, want)
			}
		}
	}
	conntrack := func(port int) int {
		out, stderr, code := l.Run("", "exec", "node1", "--", "conntrack", "-L", "-p", "tcp", "--orig-port-dst", strconv.Itoa(port))
		if code != 0 {
			t.Fatalf("conntrack -L: %s", stderr)
		}
		return strings.Count(out, "\n")
	}

	// The automatic host endpoints: node1's, and nothing changes.
	labtest.Poll(t, "node1's automatic host endpoint", 30*time.Second, func() string {
		got, stderr, _ := l.Run("", "ctl", "get", "hostendpoints", "node1-auto-hep", "-o", "yaml")
		if !strings.Contains(got, "interfaceName: '*'") || !strings.Contains(got, "- "+node1) {
			return got + stderr
		}
		return ""
	})
	expect("automatic host endpoints, no policy", true, append(all, nodePort, nodePort2))
	if n := conntrack(8080); n == 0 {
		t.Errorf("no conntrack entry on node1 for port 8080 after a tracked connection")
	}

	// Deny-all on node1, selected by its Node's label through the automatic endpoint.
	labelNode(t, l, "node1", "protect", "yes")
	labtest.Poll(t, "node1's automatic host endpoint takes the label", 30*time.Second, func() string {
		got, _, _ := l.Run("", "ctl", "get", "hostendpoints", "node1-auto-hep", "-o", "yaml")
		if !strings.Contains(got, "protect: \"yes\"") && !strings.Contains(got, "protect: 'yes'") {
			return got
		}
		return ""
	})
	const denyAll = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: deny-all-protected-hosts}
spec: {selector: protect == 'yes', types: [Ingress, Egress]}
`
	l.Apply(denyAll)
	expect("deny-all on node1's host endpoint", true, all, in, out, wlToHost)
	bgp := func() string {
		got, stderr, code := l.Tabbyctl("node1", "node", "status", "--socket", filepath.Join(l.NodeDataDir("node1"), "status.sock"))
		if code != 0 || !strings.Contains(got, "Established") {
			return got + stderr
		}
		return ""
	}
	if c := probeCounts(t, l, probe, "outside", "tcp", 1, node1+":179"); c["timeout"] != 0 {
		t.Errorf("BGP's port 179 (failsafe) dropped under deny-all: %v", c)
	}
	labtest.Steady(t, "node1's BGP session stays Established under deny-all", 10*time.Second, time.Second, bgp)

	// Untracked: ingress alone does not open the port (the replies are not tracked, and
	// egress deny-all drops them); with the replies allowed, it opens without conntrack.
	untracked := func(egress string) string {
		return `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: untracked-8080}
spec:
  selector: protect == 'yes'
  doNotTrack: true
  applyOnForward: true
  types: [Ingress, Egress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]
  egress: ` + egress + "\n"
	}
	// policy check decides a flow's first packet, which is allowed here: not asked.
	l.Apply(untracked("[]"))
	expect("doNotTrack ingress without its replies", false, []hepProbe{in}, in)
	l.Apply(untracked("[{action: Allow, protocol: TCP, source: {ports: [8080]}}]"))
	l.Run("", "exec", "node1", "--", "conntrack", "-D", "-p", "tcp", "--orig-port-dst", "8080")
	expect("doNotTrack both ways", true, []hepProbe{in, ssh, out}, out)
	for range 3 {
		if !reaches(in) {
			t.Errorf("%s: not reached under the doNotTrack policy", in)
		}
	}
	if n := conntrack(8080); n != 0 {
		t.Errorf("%d conntrack entries on node1 for port 8080 under the doNotTrack policy, want 0", n)
	}

	// PreDNAT: the NodePort closed to outside, open to outside2.
	l.OK("ctl", "delete", "globalnetworkpolicy", "untracked-8080")
	l.OK("ctl", "delete", "globalnetworkpolicy", "deny-all-protected-hosts")
	expect("host policies removed", true, append(all, nodePort, nodePort2))
	l.Apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: nodeport-from-outside}
spec:
  selector: protect == 'yes'
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, protocol: TCP, source: {nets: [` + outside + `/32]}, destination: {ports: [30080]}}]
`)
	expect("preDNAT deny of the NodePort from outside", true, []hepProbe{nodePort, nodePort2, in}, nodePort)

	// applyOnForward: a normal policy that denies outside2 polices the NodePort's
	// forwarded traffic (after the DNAT) as well as the host's own.
	l.OK("ctl", "delete", "globalnetworkpolicy", "nodeport-from-outside")
	l.Apply(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: forward-not-from-outside2}
spec:
  selector: protect == 'yes'
  applyOnForward: true
  types: [Ingress]
  ingress: [{action: Deny, source: {nets: [` + outside2 + `/32]}}, {action: Allow}]
`)
	in2 := hepProbe{name: "outside2 to node1's 8080", from: "outside2", src: outside2, dst: node1, addr: node1, proto: "tcp", port: 8080}
	expect("applyOnForward deny from outside2", true, []hepProbe{nodePort, nodePort2, in, in2}, nodePort2, in2)
}

// labelNode sets a label on a Node, retrying when the agent wrote the Node meanwhile.
func labelNode(t *testing.T, l *labtest.Lab, node, key, value string) {
	t.Helper()
	labtest.Poll(t, "label "+node, 30*time.Second, func() string {
		rs, err := api.Decode([]byte(l.OK("ctl", "get", "node", node, "-o", "yaml")), node)
		if err != nil {
			t.Fatal(err)
		}
		n := rs[0].(*api.Node)
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[key] = value
		b, err := yaml.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := l.Run(string(b), "ctl", "apply", "-f", "-"); code != 0 {
			return stderr
		}
		return ""
	})
}

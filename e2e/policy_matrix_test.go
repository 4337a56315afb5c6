package e2e

import (
	"bufio"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
	"github.com/tabby-net/tabby/policy"
)

// The policy matrix: namespaces x, y, z with workloads a, b, c, each serving TCP and UDP
// on ports 80 and 81, as the upstream Kubernetes network policy e2e suite has them.
var (
	matrixNamespaces = []string{"x", "y", "z"}
	matrixPods       = []string{"a", "b", "c"}
	matrixPorts      = []struct {
		proto string
		port  uint16
	}{{"tcp", 80}, {"tcp", 81}, {"udp", 80}, {"udp", 81}}
)

type matrixPod struct {
	key  string // "x/a"
	addr netip.Addr
	ns   string // its network namespace
}

// cell is one probe: from a pod to a pod's proto/port.
type cell struct {
	from, to string
	proto    string
	port     uint16
}

func (c cell) String() string { return fmt.Sprintf("%s -> %s %s/%d", c.from, c.to, c.proto, c.port) }

// matrixLab is a lab with the matrix's workloads and their servers running, and the
// same servers on its two nodes (hosts: probed from the pods, not probing).
type matrixLab struct {
	l     *labtest.Lab
	pods  []matrixPod
	hosts []matrixPod // key "node1", "node2"
	probe string
	// observations counts observe's rounds; each round's UDP probes leave from ports of
	// their own (sourcePort), never one that an earlier probe left in conntrack.
	observations int
}

// sourcePort is the first UDP source port of observation round n: rounds take turns
// through 20000-59999, far more ports than a run's rounds use within UDP's 120 s
// conntrack timeout.
func sourcePort(n, perRound int) int { return 20000 + (n*perRound)%40000 }

func newMatrixLab(t testing.TB) *matrixLab {
	labtest.Need(t)
	testenv.RequireTools(t, testenv.Tool{Cmd: "iptables-nft-restore", Package: "iptables"}, testenv.Tool{Cmd: "ipset", Package: "ipset"})
	probe := labtest.Build(t, "./testdata/policyprobe", "policyprobe")
	m := &matrixLab{l: labtest.New(t), probe: probe}
	l := m.l
	l.OK("up", "--nodes", "2")
	var ns strings.Builder
	for _, n := range matrixNamespaces {
		fmt.Fprintf(&ns, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %q, labels: {ns: %q}}\n", n, n)
	}
	if _, stderr, code := l.Run(labtest.Pool+ns.String(), "ctl", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for ni, n := range matrixNamespaces {
		for pi, p := range matrixPods {
			// Spread over both nodes: x on node1, y on node2, z on both.
			node := []string{"node1", "node2"}[(ni+pi*(ni/2))%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := n + "/" + p
				// The service account reaches the endpoint through tabby-cni's args labels.
				labels := "pod=" + p + ",projectcalico.org/serviceaccount=sa-" + p
				if _, stderr, code := l.Run("", "workload", "add", node, key, "--labels", labels); code != 0 {
					errs <- fmt.Errorf("workload add %s: %s", key, stderr)
					return
				}
				mu.Lock()
				m.pods = append(m.pods, matrixPod{key: key, ns: l.NS("w-" + n + "." + p)})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.SortFunc(m.pods, func(a, b matrixPod) int { return strings.Compare(a.key, b.key) })
	for i := range m.pods {
		ns, name, _ := strings.Cut(m.pods[i].key, "/")
		m.pods[i].addr = l.WorkloadIP(ns, name)
		m.serve(t, m.pods[i])
	}
	m.addNamedPorts(t)
	st := l.State()
	for _, node := range []string{"node1", "node2"} {
		h := matrixPod{key: node, addr: st.Node(node).Address.Addr(), ns: l.NS(node)}
		m.hosts = append(m.hosts, h)
		m.serve(t, h)
	}
	return m
}

// serve starts the pod's servers and waits until they listen.
func (m *matrixLab) serve(t testing.TB, p matrixPod) {
	cmd := exec.Command("ip", "netns", "exec", p.ns, m.probe, "serve", "80", "81")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "serving" {
		t.Fatalf("server in %s: %q %v", p.key, line, err)
	}
}

// addNamedPorts gives every endpoint the named ports serve-80-tcp, serve-81-udp and so on,
// as a pod spec's container ports would.
func (m *matrixLab) addNamedPorts(t testing.TB) {
	var docs []string
	for _, p := range m.pods {
		ns, name, _ := strings.Cut(p.key, "/")
		rs, err := api.Decode([]byte(m.l.OK("ctl", "get", "workloadendpoints", "-n", ns, name, "-o", "yaml")), p.key)
		if err != nil {
			t.Fatal(err)
		}
		w := rs[0].(*api.WorkloadEndpoint)
		w.Spec.Ports = nil
		for _, mp := range matrixPorts {
			w.Spec.Ports = append(w.Spec.Ports, api.WorkloadEndpointPort{
				Name: fmt.Sprintf("serve-%d-%s", mp.port, mp.proto), Protocol: api.ParseProtocol(mp.proto), Port: mp.port,
			})
		}
		w.ResourceVersion = ""
		b, err := yaml.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	if _, stderr, code := m.l.Run(strings.Join(docs, "---\n"), "ctl", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply named ports: %s", stderr)
	}
}

// oracle reads the lab's resources and computes the expected matrix.
func (m *matrixLab) oracle(t testing.TB) map[cell]bool {
	var in policy.Input
	for _, kind := range slices.Concat(policy.InputKinds, policy.ServiceKinds) {
		rs, err := api.Decode([]byte(m.l.OK("ctl", "get", kind, "-A", "-o", "yaml")), kind)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			in.Add(r)
		}
	}
	model, err := policy.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[cell]bool{}
	for _, c := range m.cells() {
		proto := uint8(policy.ProtoTCP)
		if c.proto == "udp" {
			proto = policy.ProtoUDP
		}
		v := model.Evaluate(policy.Packet{Src: m.addr(c.from), Dst: m.addr(c.to), Protocol: proto, SrcPort: 40000, DstPort: c.port})
		want[c] = v.Allowed
	}
	return want
}

func (m *matrixLab) addr(key string) netip.Addr {
	for _, p := range slices.Concat(m.pods, m.hosts) {
		if p.key == key {
			return p.addr
		}
	}
	return netip.Addr{}
}

// cells are every pair of distinct pods, and every pod to every node, and every port (a
// pod reaching itself stays in its own namespace, where no policy applies).
func (m *matrixLab) cells() []cell {
	var out []cell
	for _, from := range m.pods {
		for _, to := range slices.Concat(m.pods, m.hosts) {
			if from.key == to.key {
				continue
			}
			for _, mp := range matrixPorts {
				out = append(out, cell{from.key, to.key, mp.proto, mp.port})
			}
		}
	}
	return out
}

// observe probes every cell: one probe process per source pod, all in parallel.
func (m *matrixLab) observe(t testing.TB) map[cell]bool {
	got := map[cell]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sport := fmt.Sprintf("--sport=%d", sourcePort(m.observations, len(m.cells())))
	m.observations++
	for _, from := range m.pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"netns", "exec", from.ns, m.probe, "probe", sport, "600ms"}
			index := map[string]cell{}
			for _, c := range m.cells() {
				if c.from != from.key {
					continue
				}
				target := fmt.Sprintf("%s/%s", c.proto, netip.AddrPortFrom(m.addr(c.to), c.port))
				index[target] = c
				args = append(args, target)
			}
			out, err := exec.Command("ip", args...).Output()
			if err != nil {
				t.Errorf("probe from %s: %v", from.key, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
				target, res, _ := strings.Cut(line, " ")
				got[index[target]] = res == "ok"
			}
		}()
	}
	wg.Wait()
	return got
}

// expectMatrix probes until the observed matrix equals the oracle's, for up to 10 s, and
// otherwise fails listing the differing cells.
func (m *matrixLab) expectMatrix(t testing.TB, scenario string) {
	t.Helper()
	want := m.oracle(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := m.observe(t)
		var diff []string
		for _, c := range m.cells() {
			if got[c] != want[c] {
				diff = append(diff, fmt.Sprintf("  %s: observed %s, oracle %s", c, verdictWord(got[c]), verdictWord(want[c])))
			}
		}
		if len(diff) == 0 {
			allowed := 0
			for _, ok := range want {
				if ok {
					allowed++
				}
			}
			t.Logf("%s: matrix agrees with the oracle (%d of %d cells allowed)", scenario, allowed, len(want))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %d cells differ from the oracle:\n%s", scenario, len(diff), strings.Join(diff, "\n"))
			return
		}
	}
}

func verdictWord(ok bool) string {
	if ok {
		return "allowed"
	}
	return "denied"
}

func (m *matrixLab) apply(t testing.TB, manifest string) {
	t.Helper()
	if _, stderr, code := m.l.Run(manifest, "ctl", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
}

func (m *matrixLab) remove(t testing.TB, manifest string) {
	t.Helper()
	if _, stderr, code := m.l.Run(manifest, "ctl", "delete", "-f", "-"); code != 0 {
		t.Fatalf("delete: %s", stderr)
	}
}

// TestPolicyMatrix: for each scenario the observed connectivity of the 3x3 matrix (TCP
// and UDP, ports 80 and 81) equals the evaluator's (and, where a scenario checks it,
// tabbyctl policy check's on every cell); workloads are on two nodes.
func TestPolicyMatrix(t *testing.T) {
	m := newMatrixLab(t)
	m.expectMatrix(t, "no policy")
	for _, sc := range policyScenarios {
		m.apply(t, sc.manifest)
		m.expectMatrix(t, sc.name)
		if sc.check != nil {
			sc.check(t, m)
		}
		if sc.then != "" {
			m.apply(t, sc.then)
			m.expectMatrix(t, sc.name+", updated")
		}
		m.remove(t, sc.manifest)
	}
	m.expectMatrix(t, "all policies removed")
	m.relabelling(t)
	m.hostEndpoints(t)
}

// relabelling changes an endpoint's labels and a namespace's labels while the servers
// run, under a policy that selects by those labels, and expects the matrix to follow.
func (m *matrixLab) relabelling(t *testing.T) {
	const manifest = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: by-label, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}, {namespaceSelector: {matchLabels: {team: blue}}}]}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: clients-out, namespace: z}
spec:
  selector: role == 'client'
  egress: [{action: Deny, protocol: UDP}, {action: Allow}]
`
	m.apply(t, manifest)
	m.expectMatrix(t, "relabelling: policies by label, no endpoint labelled")
	m.relabel(t, "x/b", map[string]string{"role": "client"})
	m.relabel(t, "z/c", map[string]string{"role": "client"})
	m.expectMatrix(t, "relabelling: x/b and z/c labelled role=client")
	m.apply(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: \"y\", labels: {ns: \"y\", team: blue}}\n")
	m.expectMatrix(t, "relabelling: namespace y labelled team=blue")
	m.relabel(t, "x/b", map[string]string{"role": ""})
	m.relabel(t, "z/c", map[string]string{"pod": "x"})
	m.apply(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: \"y\", labels: {ns: \"y\"}}\n")
	m.expectMatrix(t, "relabelling: x/b's role removed, z/c's pod changed, namespace y's team removed")
	m.remove(t, manifest)
	m.relabel(t, "z/c", map[string]string{"pod": "c", "role": ""})
	m.expectMatrix(t, "relabelling: policies removed, labels restored")
}

// relabel sets (or, with "", removes) labels of a pod's WorkloadEndpoint, as an
// orchestrator relabelling a pod would.
func (m *matrixLab) relabel(t testing.TB, key string, labels map[string]string) {
	t.Helper()
	m.apply(t, m.relabelled(t, key, labels))
}

// getEndpoint reads a pod's WorkloadEndpoint (with a non-nil Labels map).
func (m *matrixLab) getEndpoint(t testing.TB, key string) *api.WorkloadEndpoint {
	t.Helper()
	ns, name, _ := strings.Cut(key, "/")
	rs, err := api.Decode([]byte(m.l.OK("ctl", "get", "workloadendpoints", "-n", ns, name, "-o", "yaml")), key)
	if err != nil {
		t.Fatal(err)
	}
	w := rs[0].(*api.WorkloadEndpoint)
	if w.Labels == nil {
		w.Labels = map[string]string{}
	}
	return w
}

// endpointYAML is w as a manifest that apply updates whatever its revision.
func endpointYAML(t testing.TB, w *api.WorkloadEndpoint) string {
	w.ResourceVersion = ""
	b, err := yaml.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logHits sums, per node, the packet counters of tabby's LOG and NFLOG rules (both
// iptables backends).
func (m *matrixLab) logHits(t testing.TB) map[string]int {
	hits := map[string]int{}
	for _, node := range []string{"node1", "node2"} {
		for _, save := range []string{"iptables-nft-save", "iptables-legacy-save"} {
			out, err := exec.Command("ip", "netns", "exec", m.l.NS(node), save, "-c", "-t", "filter").Output()
			if err != nil {
				continue
			}
			for line := range strings.SplitSeq(string(out), "\n") {
				var pkts, bytes int
				var rest string
				if n, _ := fmt.Sscanf(line, "[%d:%d] -A tby-%s", &pkts, &bytes, &rest); n < 3 {
					continue
				}
				if strings.Contains(line, " -j LOG ") || strings.Contains(line, " -j NFLOG ") {
					hits[node] += pkts
				}
			}
		}
	}
	return hits
}

// expectLogged checks that the scenario's Log rule (UDP into namespaces x and z) was hit
// on both nodes, each of which has workloads of x or z.
func expectLogged(t *testing.T, m *matrixLab) {
	hits := m.logHits(t)
	for _, node := range []string{"node1", "node2"} {
		if hits[node] == 0 {
			t.Errorf("Log rule: no packet counted by a LOG rule on %s (hits %v)", node, hits)
		}
	}
	t.Logf("Log rule: packets logged per node %v", hits)
}

// policyScenario is a manifest TestPolicyMatrix applies, probes and removes.
type policyScenario struct {
	name, manifest string
	then           string // applied next, while the servers run: an update
	check          func(*testing.T, *matrixLab)
}

var policyScenarios = []policyScenario{
	{"default deny ingress and egress", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: "y"}
spec: {podSelector: {}, policyTypes: [Egress]}
`, "", nil},
	{"allow from namespace, from pod, both (AND) and either (OR)", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: b}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}, {podSelector: {matchLabels: {pod: c}}}]}]
`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: c}}}]}]
`, nil},
	{"named ports, port ranges, ipBlock with except, egress to a CIDR", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: serve-81-udp, protocol: UDP}, {port: 79, endPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr, namespace: z}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.0.0/17]}}]}]
`, "", nil},
	{"calico order, Deny before Allow, Pass, GlobalNetworkPolicy, NetworkSets, Log", `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass-or-deny}
spec:
  tier: security
  namespaceSelector: ns in {'x', 'z'}
  ingress:
  - {action: Log, protocol: UDP}
  - {action: Pass, source: {selector: pod == 'a', namespaceSelector: all()}}
  - {action: Deny, protocol: TCP, destination: {ports: [81]}}
  - {action: Allow, source: {selector: role == 'friends', namespaceSelector: global()}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: only-80, namespace: x}
spec:
  order: 10
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  order: 20
  ingress: [{action: Deny, protocol: UDP, destination: {ports: [81]}}, {action: Allow}]
`, `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: friends, labels: {role: friends}}
spec: {nets: [10.244.0.0/16]}
`, expectLogged},
	tiersScenario,
	serviceAccountScenario,
	servicesScenario,
}

// hostEndpoints protects both nodes with host endpoints (node1's every interface,
// node2's underlay interface by name) and a policy that lets in TCP 80 from namespace y
// and UDP 81 from pods b, and expects the matrix (pods to nodes included) to follow;
// then tabbyctl policy check agrees with each pod-to-node cell; then the host endpoints
// go and every node is open again.
func (m *matrixLab) hostEndpoints(t *testing.T) {
	st := m.l.State()
	node2 := st.Node("node2").Address.Addr()
	iface := ""
	out, _, _ := m.l.Run("", "exec", "node2", "--", "ip", "-4", "-o", "addr", "show")
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 3 && strings.HasPrefix(f[3], node2.String()+"/") {
			iface = f[1]
		}
	}
	if iface == "" {
		t.Fatalf("no interface of node2 holds %s:\n%s", node2, out)
	}
	manifest := fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-all, labels: {host: node1}}
spec: {node: node1, interfaceName: "*", expectedIPs: [%s]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node2-%s, labels: {host: node2}}
spec: {node: node2, interfaceName: %s, expectedIPs: [%s]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: hosts-in}
spec:
  selector: has(host)
  ingress:
  - {action: Allow, protocol: TCP, source: {namespaceSelector: ns == 'y'}, destination: {ports: [80]}}
  - {action: Allow, protocol: UDP, source: {selector: pod == 'b'}, destination: {ports: [81]}}
  egress: [{action: Allow}]
`, st.Node("node1").Address.Addr(), iface, iface, node2)
	m.apply(t, manifest)
	m.expectMatrix(t, "host endpoints: TCP 80 from y, UDP 81 from pods b")
	var checked, denied int
	oracle := m.oracle(t)
	for _, c := range m.cells() {
		if c.to != "node1" && c.to != "node2" {
			continue
		}
		want := oracle[c]
		got, stderr, code := m.l.Run("", "ctl", "policy", "check", c.from, m.addr(c.to).String(), "--protocol", c.proto, "--port", strconv.Itoa(int(c.port)))
		if code != 0 {
			t.Fatalf("policy check %s: %s", c, stderr)
		}
		verdict, _, _ := strings.Cut(got, "\n")
		if strings.HasSuffix(verdict, "ALLOWED") != want {
			t.Errorf("%s: policy check says %q, the kernel %s", c, verdict, verdictWord(want))
		}
		checked++
		if !want {
			denied++
		}
	}
	t.Logf("host endpoints: policy check agrees on %d pod-to-node cells (%d denied)", checked, denied)
	if denied == 0 || denied == checked {
		t.Errorf("host endpoints: %d of %d pod-to-node cells denied: the scenario tests nothing", denied, checked)
	}
	m.remove(t, manifest)
	m.expectMatrix(t, "host endpoints removed")
}

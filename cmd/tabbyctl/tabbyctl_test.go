package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
)

// These tests run the built tabbyctl and tabby-node binaries against a real embedded etcd.

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tabbyctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/tabby-net/tabby/cmd/tabbyctl", "github.com/tabby-net/tabby/cmd/tabby-node")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// node is a tabby-node --datastore-only process.
type node struct {
	cmd      *exec.Cmd
	endpoint string
	log      *bytes.Buffer
}

func startNode(t *testing.T, dataDir string) *node {
	t.Helper()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	return startNodeWith(t, dataDir, client, peer)
}

// startNodeWith starts tabby-node --datastore-only with these URLs and more flags, and
// waits until it serves.
func startNodeWith(t *testing.T, dataDir, client, peer string, flags ...string) *node {
	t.Helper()
	n := &node{endpoint: client, log: &bytes.Buffer{}}
	n.cmd = exec.Command(filepath.Join(binDir, "tabby-node"), append([]string{"--datastore-only", "--data-dir", dataDir,
		"--etcd-listen-client", client, "--etcd-listen-peer", peer}, flags...)...)
	n.cmd.Stderr = n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := n.ctl(t, "", "version"); err == nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("tabby-node did not serve within 30s; log:\n%s", n.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *node) stop(t *testing.T) {
	if n.cmd.ProcessState != nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	if err := n.cmd.Wait(); err != nil {
		t.Errorf("tabby-node exited with %v; log:\n%s", err, n.log)
	}
}

// ctl runs tabbyctl against the node with stdin and returns stdout, stderr and the error.
func (n *node) ctl(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "tabbyctl"), append([]string{"--etcd-endpoints", n.endpoint}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// ok runs tabbyctl and fails the test unless it exits 0.
func (n *node) ok(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := n.ctl(t, "", args...)
	if err != nil {
		t.Fatalf("tabbyctl %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// fails runs tabbyctl, fails the test unless it exits non-zero, and returns stderr.
func (n *node) fails(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := n.ctl(t, "", args...)
	if err == nil {
		t.Fatalf("tabbyctl %s succeeded, want failure; stdout:\n%s", strings.Join(args, " "), out)
	}
	return errOut
}

func names(t *testing.T, n *node, args ...string) []string {
	t.Helper()
	out := n.ok(t, append([]string{"get"}, args...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var got []string
	for _, l := range lines[1:] { // skip the header
		got = append(got, strings.Fields(l)[0])
	}
	return got
}

func assertContains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, s)
		}
	}
}

const examples = "../../examples"

func TestApplyGetDeleteRoundTrip(t *testing.T) {
	n := startNode(t, t.TempDir())

	out := n.ok(t, "apply", "-f", examples)
	assertContains(t, "apply output", out,
		"ippool default-ipv4-ippool applied", "globalnetworkpolicy allow-cluster-dns applied",
		"networkpolicy shop/frontend-to-backend applied", "bgppeer rack-a-tor applied")

	if got := names(t, n, "ippools"); strings.Join(got, ",") != "default-ipv4-ippool,default-ipv6-ippool" {
		t.Errorf("get ippools names = %v", got)
	}
	wide := n.ok(t, "get", "pools", "-o", "wide")
	assertContains(t, "get pools -o wide", wide, "10.244.0.0/16", "CrossSubnet", "fd00:10:244::/48")

	// YAML of a list reads back into the same resources.
	y := n.ok(t, "get", "networkpolicies", "-A", "-o", "yaml")
	rs, err := api.Decode([]byte(y), "get output")
	if err != nil {
		t.Fatalf("decode get -o yaml: %v\n%s", err, y)
	}
	if len(rs) != 1 || rs[0].GetObjectMeta().Name != "frontend-to-backend" || rs[0].GetObjectMeta().ResourceVersion == "" {
		t.Errorf("get networkpolicies -A -o yaml gave %d resources: %s", len(rs), y)
	}
	if got := names(t, n, "networkpolicies"); len(got) != 0 {
		t.Errorf("get networkpolicies in namespace default = %v, want none", got)
	}
	if got := names(t, n, "np", "-n", "shop"); strings.Join(got, ",") != "frontend-to-backend" {
		t.Errorf("get np -n shop = %v", got)
	}
	if got := names(t, n, "knp", "-n", "shop"); strings.Join(got, ",") != "default-deny-ingress" {
		t.Errorf("get knp -n shop = %v", got)
	}

	// A single resource prints as itself, in JSON too, and applies again unchanged.
	j := n.ok(t, "get", "ippool", "default-ipv4-ippool", "-o", "json")
	assertContains(t, "get ippool -o json", j, `"kind": "IPPool"`, `"cidr": "10.244.0.0/16"`)
	if _, errOut, err := n.ctl(t, j, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply of get output: %v: %s", err, errOut)
	}

	n.ok(t, "delete", "-f", filepath.Join(examples, "ippool.yaml"))
	if got := names(t, n, "ippools"); len(got) != 0 {
		t.Errorf("after delete, ippools = %v", got)
	}
	n.ok(t, "delete", "gnp", "allow-cluster-dns")
	errOut := n.fails(t, "get", "gnp", "allow-cluster-dns")
	assertContains(t, "get of a deleted resource", errOut, "allow-cluster-dns", "not found")
}

func TestApplyIsAllOrNothing(t *testing.T) {
	n := startNode(t, t.TempDir())
	n.ok(t, "apply", "-f", filepath.Join(examples, "ippool.yaml"))

	errOut := n.fails(t, "apply", "-f", filepath.Join(examples, "invalid", "typo.yaml"))
	assertContains(t, "typo error", errOut, "typo.yaml", "document 2", "natOutgong", "nothing was written")

	errOut = n.fails(t, "apply", "-f", filepath.Join(examples, "invalid", "overlap.yaml"))
	assertContains(t, "overlap error", errOut, "overlapping-pool", "default-ipv4-ippool", "nothing was written")

	if got := names(t, n, "ippools"); strings.Join(got, ",") != "default-ipv4-ippool,default-ipv6-ippool" {
		t.Errorf("after refused applies, ippools = %v (extra-pool must not exist)", got)
	}

	// A validation error in one document of a multi-document stream: nothing written.
	bad := `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: fine}
spec: {cidr: 192.168.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: host-bits}
spec: {cidr: 192.169.0.1/16}
`
	_, errOut, err := n.ctl(t, bad, "apply", "-f", "-")
	if err == nil {
		t.Fatal("apply of a pool with host bits set succeeded")
	}
	assertContains(t, "host bits error", errOut, "<stdin>: document 2", "spec.cidr", "host bits")
	if _, _, err := n.ctl(t, "", "get", "ippool", "fine"); err == nil {
		t.Error("pool from the valid document was written although another document was bad")
	}
}

func TestCreateReplaceDelete(t *testing.T) {
	n := startNode(t, t.TempDir())
	pool := filepath.Join(examples, "ippool.yaml")

	errOut := n.fails(t, "replace", "-f", pool)
	assertContains(t, "replace of missing", errOut, "default-ipv4-ippool", "not found")

	n.ok(t, "create", "-f", pool)
	errOut = n.fails(t, "create", "-f", pool)
	assertContains(t, "create of existing", errOut, "already exists")

	before := n.ok(t, "get", "ippool", "default-ipv4-ippool", "-o", "yaml")
	out := n.ok(t, "replace", "-f", pool)
	assertContains(t, "replace output", out, "ippool default-ipv4-ippool replaced")
	after := n.ok(t, "get", "ippool", "default-ipv4-ippool", "-o", "yaml")
	if before == after {
		t.Error("replace did not write a new revision")
	}

	// A replace carrying a stale resourceVersion is a conflict.
	_, errOut, err := n.ctl(t, before, "replace", "-f", "-")
	if err == nil {
		t.Fatal("replace with a stale resourceVersion succeeded")
	}
	assertContains(t, "stale replace", errOut, "conflict")

	errOut = n.fails(t, "delete", "ippool", "default-ipv4-ippool", "no-such-pool")
	assertContains(t, "delete of a missing pool", errOut, "no-such-pool", "not found")
	if got := names(t, n, "ippools"); len(got) != 2 {
		t.Errorf("a failed delete removed pools: %v", got)
	}
	n.ok(t, "delete", "ippool", "default-ipv4-ippool", "no-such-pool", "--skip-not-exists")
	if got := names(t, n, "ippools"); strings.Join(got, ",") != "default-ipv6-ippool" {
		t.Errorf("after delete, ippools = %v", got)
	}
}

func TestNamespaceFlag(t *testing.T) {
	n := startNode(t, t.TempDir())
	set := `apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners}
spec: {nets: [198.51.100.0/24]}
`
	if _, errOut, err := n.ctl(t, set, "apply", "-n", "shop", "-f", "-"); err != nil {
		t.Fatalf("apply -n shop: %v: %s", err, errOut)
	}
	if got := names(t, n, "networksets", "-n", "shop"); strings.Join(got, ",") != "partners" {
		t.Errorf("networksets in shop = %v", got)
	}
	all := n.ok(t, "get", "networksets", "-A")
	assertContains(t, "get -A", all, "NAMESPACE", "shop")
	withNS := strings.Replace(set, "{name: partners}", "{name: partners, namespace: web}", 1)
	_, errOut, err := n.ctl(t, withNS, "apply", "-n", "shop", "-f", "-")
	if err == nil {
		t.Fatal("apply with a namespace contradicting -n succeeded")
	}
	assertContains(t, "namespace mismatch", errOut, `"web"`, `"shop"`)
}

func TestErrors(t *testing.T) {
	n := startNode(t, t.TempDir())
	assertContains(t, "unknown kind", n.fails(t, "get", "widgets"), `unknown resource kind "widgets"`)
	assertContains(t, "bad output", n.fails(t, "get", "ippools", "-o", "xml"), `-o "xml"`)
	assertContains(t, "missing file", n.fails(t, "apply", "-f", "/nonexistent.yaml"), "/nonexistent.yaml")

	// An unreachable etcd is an error naming the endpoint, not a hang.
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "tabbyctl"), "--etcd-endpoints", closed, "--dial-timeout", "1s", "get", "ippools")
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("get against a closed port: err=%v ctx=%v", err, ctx.Err())
	}
	assertContains(t, "unreachable error", string(out), closed, "unreachable")
}

func TestNodeKeepsDataAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	n.ok(t, "apply", "-f", filepath.Join(examples, "bgp.yaml"))
	n.stop(t)

	n = startNode(t, dir)
	if got := names(t, n, "bgppeers"); strings.Join(got, ",") != "rack-a-tor" {
		t.Errorf("after restart, bgppeers = %v", got)
	}
}

func TestNodeReportsPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := "http://" + l.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "tabby-node"), "--datastore-only", "--data-dir", t.TempDir(),
		"--etcd-listen-client", busy, "--etcd-listen-peer", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("tabby-node started on a busy port")
	}
	assertContains(t, "tabby-node error", string(out), l.Addr().String())
}

// More resources than etcd's default transaction limit still apply as one transaction,
// and one bad document among them still means none is written.
func TestApplyManyInOneTransaction(t *testing.T) {
	n := startNode(t, t.TempDir())
	var b strings.Builder
	for i := range 300 {
		fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: set-%03d}\nspec: {nets: [10.%d.%d.0/24]}\n", i, i/256, i%256)
	}
	bad := b.String() + "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: Bad_Name}\n"
	_, errOut, err := n.ctl(t, bad, "apply", "-f", "-")
	if err == nil {
		t.Fatal("apply with a bad last document succeeded")
	}
	assertContains(t, "bad name error", errOut, "document 301", "metadata.name")
	if got := names(t, n, "globalnetworksets"); len(got) != 0 {
		t.Fatalf("%d sets written although a document was bad", len(got))
	}

	if _, errOut, err := n.ctl(t, b.String(), "apply", "-f", "-"); err != nil {
		t.Fatalf("apply of 300 sets: %v: %s", err, errOut)
	}
	if got := names(t, n, "globalnetworksets"); len(got) != 300 {
		t.Errorf("got %d sets, want 300", len(got))
	}
}

// TestApplyLimits: 10,000 resources from one file apply in one transaction, as the README
// promises; manifests over the input limit are refused before they are decoded, saying
// what the limit is, and write nothing.
func TestApplyLimits(t *testing.T) {
	n := startNode(t, t.TempDir())
	var b strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&b, "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: set-%05d}\nspec: {nets: [10.%d.%d.0/24]}\n", i, i/256, i%256)
	}
	file := filepath.Join(t.TempDir(), "sets.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	n.ok(t, "apply", "-f", file)
	if got := names(t, n, "globalnetworksets"); len(got) != 10000 {
		t.Fatalf("got %d sets, want 10000", len(got))
	}
	n.ok(t, "delete", "-f", file)

	// Just over the limit: padded with a comment, so that it decodes fine otherwise.
	huge := b.String() + "# " + strings.Repeat("x", maxManifestBytes-b.Len()) + "\n"
	if err := os.WriteFile(file, []byte(huge), 0o644); err != nil {
		t.Fatal(err)
	}
	assertContains(t, "too large a file", n.fails(t, "apply", "-f", file), file+": the manifests come to more than 10 MiB, tabbyctl's limit")
	_, errOut, err := n.ctl(t, huge, "apply", "-f", "-")
	if err == nil {
		t.Fatal("apply of too large a standard input succeeded")
	}
	assertContains(t, "too large a standard input", errOut, "<stdin>: the manifests come to more than 10 MiB")
	if got := names(t, n, "globalnetworksets"); len(got) != 0 {
		t.Errorf("%d sets written by refused applies", len(got))
	}
}

// TestServiceAddresses: a Service applied without clusterIP or nodePort gets both,
// keeps them when applied again, and another Service cannot take them.
func TestServiceAddresses(t *testing.T) {
	n := startNode(t, t.TempDir())
	const web = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`
	if _, errOut, err := n.ctl(t, web, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v: %s", err, errOut)
	}
	y := n.ok(t, "get", "service", "web", "-n", "shop", "-o", "yaml")
	rs, err := api.Decode([]byte(y), "get output")
	if err != nil {
		t.Fatalf("decode get -o yaml: %v\n%s", err, y)
	}
	svc := rs[0].(*api.Service)
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !netip.MustParsePrefix(api.DefaultServiceClusterIPRange).Contains(ip) || svc.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("stored Service has clusterIP %q, nodePort %d:\n%s", svc.Spec.ClusterIP, svc.Spec.Ports[0].NodePort, y)
	}
	ports := fmt.Sprintf("80:%d/TCP", svc.Spec.Ports[0].NodePort)
	wide := n.ok(t, "get", "services", "-n", "shop", "-o", "wide")
	assertContains(t, "get services -o wide", wide, "CLUSTER-IP", "PORTS", ip.String(), ports, "app=web")

	// The same manifest again changes nothing of the addresses.
	if _, errOut, err := n.ctl(t, web, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply again: %v: %s", err, errOut)
	}
	assertContains(t, "get after a second apply", n.ok(t, "get", "services", "-n", "shop", "-o", "wide"), ip.String(), ports)

	// Another Service naming the address is refused, naming the owner.
	other := strings.ReplaceAll(web, "name: web", "name: other") + "  clusterIP: " + ip.String() + "\n"
	_, errOut, err := n.ctl(t, other, "apply", "-f", "-")
	if err == nil {
		t.Fatal("apply of a Service with a taken clusterIP succeeded")
	}
	assertContains(t, "duplicate clusterIP", errOut, ip.String()+" is already allocated to Service shop/web")
}

func TestEndpointSlices(t *testing.T) {
	n := startNode(t, t.TempDir())
	const slice = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ext-1
  namespace: shop
  labels: {kubernetes.io/service-name: ext}
addressType: IPv4
endpoints:
- addresses: [192.0.2.1]
  conditions: {ready: true}
- addresses: [192.0.2.2]
  conditions: {ready: false, serving: true, terminating: true}
ports: [{name: dns, protocol: UDP, port: 5353}]
`
	if _, errOut, err := n.ctl(t, slice, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v: %s", err, errOut)
	}
	wide := n.ok(t, "get", "endpointslices", "-n", "shop", "-o", "wide")
	assertContains(t, "get endpointslices -o wide", wide, "ADDRESSTYPE", "IPv4", "5353", "192.0.2.1,192.0.2.2", "SERVICE", "ext")
	if got := names(t, n, "epslice", "-n", "shop"); strings.Join(got, ",") != "ext-1" {
		t.Errorf("get epslice -n shop = %v", got)
	}
	fqdn := strings.ReplaceAll(strings.ReplaceAll(slice, "IPv4", "FQDN"), "ext-1", "ext-2")
	_, errOut, err := n.ctl(t, fqdn, "apply", "-f", "-")
	if err == nil {
		t.Fatal("apply of an FQDN slice succeeded")
	}
	assertContains(t, "FQDN slice", errOut, "addressType: FQDN is not supported")
}

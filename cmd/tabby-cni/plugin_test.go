package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

var (
	testPoolV4 = netip.MustParsePrefix("10.244.0.0/16")
	testPoolV6 = netip.MustParsePrefix("fd00:10:244::/48")
)

// TestAddCheckDel attaches dual-stack workloads through libcni with configurations of
// each spec version the plugin answers, validates the results against the spec's types,
// checks the endpoint, the container and the host, repeats ADD, damages and repairs the
// attachment, and detaches it, twice.
func TestAddCheckDel(t *testing.T) {
	l := newLab(t, 1)
	before := l.state()
	dns := types.DNS{Nameservers: []string{"10.96.0.10"}, Search: []string{"cni.svc.cluster.local"}}
	for _, v := range []string{"1.1.0", "1.0.0", "0.4.0"} {
		t.Run(v, func(t *testing.T) {
			l := l.with(t, l.cache)
			pod := "web-" + strings.ReplaceAll(v, ".", "")
			conf := l.confList(v, map[string]any{"ipam": map[string]any{"assign_ipv6": "true"}, "dns": dns, "mtu": 1400})
			c := l.container(pod)
			r := l.mustCNI("ADD", conf, c)
			addrs := resultAddrsOf(t, r.Result)
			if len(addrs) != 2 || !testPoolV4.Contains(addrs[0]) || !testPoolV6.Contains(addrs[1]) {
				t.Fatalf("ADD gave %v, want an address of each pool", addrs)
			}
			att := &attachment{NetNS: c.NetNS, IfName: "eth0", HostVeth: hostVethName("cni", pod), Addrs: addrs}
			checkResultJSON(t, v, r.Result, att, dns)

			w := l.endpoint("cni", pod)
			if w == nil {
				t.Fatal("no workload endpoint")
			}
			if s := w.Spec; s.Node != "node1" || s.ContainerID != c.ID || s.Pod != pod || s.Orchestrator != "k8s" || s.Endpoint != "eth0" ||
				s.InterfaceName != att.HostVeth || !slices.Equal(s.IPNetworks, []string{addrs[0].String() + "/32", addrs[1].String() + "/128"}) ||
				!slices.Equal(s.Profiles, []string{"kns.cni"}) || w.Labels["projectcalico.org/namespace"] != "cni" {
				t.Errorf("workload endpoint %+v", w)
			}
			out, err := nsExec(t, c, "ip", "-o", "link", "show", "eth0")
			if err != nil || !strings.Contains(out, "mtu 1400") || !strings.Contains(out, w.Spec.MAC) {
				t.Errorf("container's eth0 (endpoint MAC %s): %v %s", w.Spec.MAC, err, out)
			}
			if out, err := nsExec(t, c, "ping", "-c1", "-W5", "172.31.1.10"); err != nil {
				t.Errorf("the workload does not reach its node: %v\n%s", err, out)
			}
			if out, err := nsExec(t, c, "ping", "-6", "-c1", "-W5", gatewayV6.String()+"%eth0"); err != nil {
				t.Errorf("the workload does not reach its IPv6 gateway: %v\n%s", err, out)
			}
			if r := l.cni("CHECK", conf, c); r.Error != nil {
				t.Errorf("CHECK after ADD: %d %s", r.Error.Code, r.Error.Msg)
			}

			// A repeated ADD returns the same attachment.
			again := l.mustCNI("ADD", conf, c)
			if !slices.Equal(resultAddrsOf(t, again.Result), addrs) || l.endpoint("cni", pod).Spec.MAC != w.Spec.MAC {
				t.Errorf("repeated ADD: %s, want %s", again.Result, r.Result)
			}

			// Damage is reported, and a repeated ADD repairs it with the same addresses.
			if out, err := nsExec(t, c, "ip", "route", "del", "default"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			wantError(t, "CHECK without a default route", l.cni("CHECK", conf, c).Error, codeCheck, "lacks route 0.0.0.0/0 via 169.254.1.1 dev eth0")
			if again := l.mustCNI("ADD", conf, c); !slices.Equal(resultAddrsOf(t, again.Result), addrs) {
				t.Errorf("repairing ADD gave %v, want %v", resultAddrsOf(t, again.Result), addrs)
			}
			if r := l.cni("CHECK", conf, c); r.Error != nil {
				t.Errorf("CHECK after repair: %d %s", r.Error.Code, r.Error.Msg)
			}

			l.mustCNI("DEL", conf, c)
			l.settle("after DEL", before)
			l.mustCNI("DEL", conf, c)
			l.settle("after a second DEL", before)
		})
	}
}

// TestExecIdempotent runs the plugin binary by hand, as a runtime does: a repeated ADD
// prints the very same result, the errors are spec-shaped JSON, and DEL for a container
// never added, or whose namespace is gone, succeeds and frees what there is.
func TestExecIdempotent(t *testing.T) {
	l := newLab(t, 1)
	before := l.state()
	conf := l.pluginConf("1.1.0", nil)
	c := l.container("raw")
	run := func(command string, c container, stdin string) *helperResponse {
		return l.helper("node1", helperRequest{Op: "exec", Env: execEnv(t, command, c), Stdin: stdin})
	}
	first := run("ADD", c, conf)
	if first.Exit != 0 {
		t.Fatalf("ADD: exit %d: %s", first.Exit, first.Stdout)
	}
	if again := run("ADD", c, conf); again.Exit != 0 || again.Stdout != first.Stdout {
		t.Errorf("repeated ADD printed\n%s\nwant\n%s", again.Stdout, first.Stdout)
	}
	addrs := resultAddrsOf(t, json.RawMessage(first.Stdout))
	checkResultJSON(t, "1.1.0", json.RawMessage(first.Stdout), &attachment{NetNS: c.NetNS, IfName: "eth0", HostVeth: hostVethName("cni", "raw"), Addrs: addrs}, types.DNS{})

	// An error on standard output: the configuration's version, the code, the message.
	bad := run("ADD", c, strings.Replace(conf, `"type"`, `"datastore_type":"kubernetes","type"`, 1))
	var e struct {
		CNIVersion string `json:"cniVersion"`
		Code       uint   `json:"code"`
		Msg        string `json:"msg"`
	}
	if err := json.Unmarshal([]byte(bad.Stdout), &e); err != nil || bad.Exit != 1 || e.CNIVersion != "1.1.0" ||
		e.Code != types.ErrUnsupportedField || !strings.Contains(e.Msg, `datastore_type (value "kubernetes")`) {
		t.Errorf("error output (exit %d): %s", bad.Exit, bad.Stdout)
	}

	for range 2 {
		if r := run("DEL", c, conf); r.Exit != 0 {
			t.Fatalf("DEL: exit %d: %s", r.Exit, r.Stdout)
		}
	}
	l.settle("after DEL", before)

	// A repeated ADD for a container whose address IPAM no longer holds for it (released
	// by hand) attaches it afresh, with a new address.
	list := l.confList("1.1.0", nil)
	rel := l.container("released")
	addr := resultAddrsOf(t, l.mustCNI("ADD", list, rel).Result)[0]
	l.OK("ctl", "ipam", "release", "--ip", addr.String(), "--force")
	if again := resultAddrsOf(t, l.mustCNI("ADD", list, rel).Result); len(again) != 1 || again[0] == addr {
		t.Errorf("ADD after the address was released: %v, want a new address", again)
	}
	if r := l.cni("CHECK", list, rel); r.Error != nil {
		t.Errorf("CHECK after ADD with a new address: %d %s", r.Error.Code, r.Error.Msg)
	}
	l.mustCNI("DEL", list, rel)
	l.settle("after DEL of the re-attached container", before)

	// A container never added: nothing to do.
	if r := run("DEL", l.container("never"), conf); r.Exit != 0 {
		t.Errorf("DEL of a container never added: %s", r.Stdout)
	}
	// A container whose namespace is gone: its endpoint and addresses still go.
	gone := l.container("gone")
	if r := run("ADD", gone, conf); r.Exit != 0 {
		t.Fatalf("ADD: %s", r.Stdout)
	}
	ip(t, "netns", "del", filepath.Base(gone.NetNS))
	if r := run("DEL", gone, conf); r.Exit != 0 {
		t.Errorf("DEL after the namespace went: %s", r.Stdout)
	}
	l.settle("after DEL of a container without namespace", before)
}

// TestFailuresLeaveNothing injects failures before and part-way through ADD: IPAM out of
// addresses, etcd unreachable or stopped, invalid configurations and environments, an
// interface name already taken in the container, and an IPv6 address the container
// refuses after the veth exists. Each is reported with the spec's (or the plugin's) code
// and a message naming the cause, and leaves no address, veth, route or endpoint.
func TestFailuresLeaveNothing(t *testing.T) {
	l := newLab(t, 1)
	before := l.state()
	conf := l.confList("1.1.0", nil)

	// IPAM exhausted: the tiny pool has four addresses.
	tiny := l.confList("1.1.0", map[string]any{"ipam": map[string]any{"ipv4_pools": []string{"tiny"}}})
	var full []container
	for i := range 4 {
		c := l.container(fmt.Sprintf("tiny%d", i))
		l.mustCNI("ADD", tiny, c)
		full = append(full, c)
	}
	withFour := l.state()
	wantError(t, "ADD with the pool exhausted", l.cni("ADD", tiny, l.container("tiny4")).Error, codeNoAddress, `no free addresses in IPPool "tiny" (10.99.0.0/30)`)
	l.settle("after ADD failed for want of addresses", withFour)
	for _, c := range full {
		l.mustCNI("DEL", tiny, c)
	}
	l.settle("after the tiny pool's workloads went", before)

	// etcd unreachable: nothing listens on the port.
	closed := l.confList("1.1.0", map[string]any{"etcd_endpoints": "http://172.31.1.1:2999"})
	c := l.container("noetcd")
	wantError(t, "ADD without etcd", l.cni("ADD", closed, c).Error, types.ErrTryAgainLater, "is etcd running, and does etcd_endpoints (http://172.31.1.1:2999) reach it")
	wantError(t, "DEL without etcd", l.cni("DEL", closed, c).Error, types.ErrTryAgainLater, "unreachable")
	// TLS to the lab's plain etcd: a setting to fix, not an etcd to start.
	tlsToPlain := l.confList("1.1.0", map[string]any{"etcd_endpoints": "https://172.31.1.1:2379"})
	wantError(t, "ADD with https:// to a plain etcd", l.cni("ADD", tlsToPlain, l.container("tlsmix")).Error, types.ErrInvalidNetworkConfig,
		"the server does not speak TLS (it closed the connection on the TLS hello): use an http:// endpoint, or serve etcd over https: check etcd_endpoints' scheme (https://172.31.1.1:2379) and etcd_ca_cert_file")

	// A node that is not registered: refused before IPAM claims a block for it.
	wantError(t, "ADD for a node that does not exist", l.cni("ADD", l.confList("1.1.0", map[string]any{"nodename": "nodez"}), l.container("nodez")).Error,
		types.ErrInvalidNetworkConfig, `node "nodez" (nodename in the network configuration) is not registered in etcd`)
	if out := l.OK("ctl", "ipam", "show", "--show-blocks"); strings.Contains(out, "nodez") {
		t.Errorf("a block was claimed for the node that does not exist:\n%s", out)
	}
	l.settle("after ADD for a node that does not exist", before)

	// etcd stopped (SIGSTOP) under a running lab: ADD gives up and changes nothing.
	etcd := l.Status().Etcd.Process.PID
	if etcd == 0 {
		t.Fatal("lab status: no etcd pid")
	}
	t.Cleanup(func() { syscall.Kill(etcd, syscall.SIGCONT) })
	if err := syscall.Kill(etcd, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	wantError(t, "ADD with etcd stopped", l.cni("ADD", conf, c).Error, types.ErrTryAgainLater, "etcd")
	if err := syscall.Kill(etcd, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	l.settle("after ADD failed with etcd stopped", before)

	// Configurations and environments the plugin refuses, run by hand.
	good := l.pluginConf("1.1.0", nil)
	for _, bc := range []struct {
		what, conf string
		env        func([]string) []string
		code       uint
		msg        string
	}{
		{"bad JSON", `{"cniVersion": "1.1.0", "name": "tabby-net",`, nil, types.ErrDecodingFailure, "unmarshal"},
		{"unknown field", strings.Replace(good, `"type"`, `"policy":{"type":"k8s"},"type"`, 1), nil, types.ErrUnsupportedField, `policy (value {"type":"k8s"})`},
		{"other IPAM", strings.Replace(good, `"type"`, `"ipam":{"type":"host-local"},"type"`, 1), nil, types.ErrInvalidNetworkConfig, `ipam.type "host-local"`},
		{"old version", strings.Replace(good, `"1.1.0"`, `"0.2.0"`, 1), nil, types.ErrIncompatibleCNIVersion, "incompatible CNI versions"},
		{"half the pod arguments", good, func(env []string) []string {
			return append(env, "CNI_ARGS=K8S_POD_NAME=web")
		}, types.ErrInvalidEnvironmentVariables, "K8S_POD_NAMESPACE and K8S_POD_NAME go together"},
		{"no such namespace", good, func(env []string) []string {
			return append(env, "CNI_NETNS=/run/netns/"+l.NS("w-cni.nosuch"))
		}, types.ErrUnknownContainer, "network namespace does not exist"},
	} {
		env := execEnv(t, "ADD", c)
		if bc.env != nil {
			env = bc.env(env)
		}
		r := l.helper("node1", helperRequest{Op: "exec", Env: env, Stdin: bc.conf})
		var e types.Error
		if err := json.Unmarshal([]byte(r.Stdout), &e); err != nil || r.Exit == 0 {
			t.Errorf("%s: exit %d, output %s", bc.what, r.Exit, r.Stdout)
			continue
		}
		wantError(t, bc.what, &e, bc.code, bc.msg)
	}
	l.settle("after refused configurations", before)

	// Part-way: the container has an eth0 already. Addresses were allocated by then.
	taken := l.container("taken")
	if out, err := nsExec(t, taken, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"); err != nil {
		t.Fatal(out)
	}
	wantError(t, "ADD into a container that has eth0", l.cni("ADD", conf, taken).Error, codeConflict, "already has an interface eth0")
	l.settle("after ADD found eth0 taken", before)

	// Part-way: the container refuses IPv6 addresses, found once the veth exists.
	noV6 := l.container("nov6")
	if out, err := nsExec(t, noV6, "sysctl", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		t.Fatal(out)
	}
	dual := l.confList("1.1.0", map[string]any{"ipam": map[string]any{"assign_ipv6": "true"}})
	wantError(t, "ADD of IPv6 into a container without IPv6", l.cni("ADD", dual, noV6).Error, codeFailed, "configure eth0 in /run/netns/"+l.NS("w-cni.nov6")+": add address fd00:10:244:")
	l.settle("after ADD failed configuring the container", before)
}

// TestGCAndStatus: STATUS says whether ADD can work and why not; GC removes the
// attachments of this network and node that are not valid any more, and only those.
func TestGCAndStatus(t *testing.T) {
	l := newLab(t, 1)
	before := l.state()
	conf := l.confList("1.1.0", nil)
	if r := l.cni("STATUS", conf, container{}); r.Error != nil {
		t.Errorf("STATUS: %d %s", r.Error.Code, r.Error.Msg)
	}
	wantError(t, "STATUS without etcd", l.cni("STATUS", l.confList("1.1.0", map[string]any{"etcd_endpoints": "172.31.1.1:2999"}), container{}).Error,
		codeUnavailable, "unreachable")
	wantError(t, "STATUS for a node without agent", l.cni("STATUS", l.confList("1.1.0", map[string]any{"nodename": "node9"}), container{}).Error,
		codeUnavailable, `node "node9" is not registered in etcd: start tabby-node on it`)
	wantError(t, "STATUS with a pool that does not exist", l.cni("STATUS", l.confList("1.1.0", map[string]any{"ipam": map[string]any{"ipv4_pools": []string{"nosuch"}}}), container{}).Error,
		codeUnavailable, "none of the IPv4 pools the configuration names (nosuch) exists")
	tiny := l.confList("1.1.0", map[string]any{"ipam": map[string]any{"ipv4_pools": []string{"tiny"}}})
	var cs []container
	for i := range 4 {
		cs = append(cs, l.container(fmt.Sprintf("gc%d", i)))
		l.mustCNI("ADD", tiny, cs[i])
	}
	wantError(t, "STATUS with the pool full", l.cni("STATUS", tiny, container{}).Error, codeUnavailable, "no IPv4 IPPool has a free address: tiny (10.99.0.0/30, 4 of 4 in use)")

	// Only cs[0] is valid. libcni DELs the others it has cached first, so GC is run
	// from a fresh cache: the plugin itself must find them.
	gc := l.with(t, t.TempDir())
	if r := gc.cni("GC", tiny, container{}, types.GCAttachment{ContainerID: cs[0].ID, IfName: "eth0"}); r.Error != nil {
		t.Fatalf("GC: %d %s", r.Error.Code, r.Error.Msg)
	}
	// The removed attachments' lock files went with them, and the valid one's (left by
	// its ADD, held by no call) went in the sweep; the CHECK below leaves it again.
	for _, c := range cs {
		if _, err := os.Stat(lockPath(lockDir, c.ID)); !os.IsNotExist(err) {
			t.Errorf("lock file of %s after GC: %v", c.ID, err)
		}
	}
	if r := l.cni("CHECK", tiny, cs[0]); r.Error != nil {
		t.Errorf("CHECK of the valid attachment after GC: %d %s", r.Error.Code, r.Error.Msg)
	}
	for _, c := range cs[1:] {
		if w := l.endpoint("cni", strings.TrimPrefix(filepath.Base(c.NetNS), l.NS("w-cni."))); w != nil {
			t.Errorf("GC left endpoint %s/%s", w.Namespace, w.Name)
		}
	}
	s := l.state()
	if len(s.Links) != 1 || s.InUse != 1 || s.Handles != 1 || s.Problems != "" || len(s.Endpoints) != 1 {
		t.Errorf("after GC: %+v", s)
	}
	l.mustCNI("DEL", tiny, cs[0])
	l.settle("after the last DEL", before)
}

// TestAddDelCycles: 100 ADD/DEL cycles through libcni leave no address, veth, route,
// endpoint or IPAM handle behind, and IPAM consistent.
func TestAddDelCycles(t *testing.T) {
	l := newLab(t, 1)
	before := l.state()
	var cs []container
	for i := range 100 {
		cs = append(cs, l.container(fmt.Sprintf("cycle%d", i)))
	}
	r := l.helper("node1", helperRequest{Op: "cycles", ConfList: l.confList("1.1.0", nil), Containers: cs})
	l.settle("after 100 ADD/DEL cycles", before)
	t.Logf("100 cycles: ADD %s, DEL %s, host route present after ADD returned %s", percentiles(r.Add), percentiles(r.Del), percentiles(r.Route))
}

// percentiles formats the median and 99th percentile of ds.
func percentiles(ds []time.Duration) string {
	s := slices.Sorted(slices.Values(ds))
	if len(s) == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s p99 %s", s[len(s)/2].Round(10*time.Microsecond), s[(len(s)*99-1)/100].Round(10*time.Microsecond))
}

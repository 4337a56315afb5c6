package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/labtest"
)

// These tests run the built plugin in labs (internal/labtest) with real agents: they need
// root, ip (iproute2) and ping (iputils-ping). They skip without root unless CI is set.
// Every lab has a unique name and is removed by t.Cleanup even when a test fails; workload
// namespaces the tests make are lab-shaped (tby-<lab>-w-cni.<name>), so down removes
// them too. Traffic stays inside the labs' namespaces.

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	labtest.Main(m)
}

const (
	labEtcd = "http://172.31.1.1:2379"
	// testPools: IPv4 and IPv6 for most tests, and "tiny", whose one /30 block holds four
	// addresses, for running out.
	testPools = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: test-v4}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: test-v6}
spec: {cidr: "fd00:10:244::/48", blockSize: 122}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 10.99.0.0/30, blockSize: 30}
`
)

// lab is one tabby-lab lab with real agents and testPools, driven through the harness
// and the helper.
type lab struct {
	*labtest.Lab
	t     testing.TB
	cache string // libcni's cache, shared by the lab's helper runs
}

func newLab(t testing.TB, nodes int) *lab {
	t.Helper()
	l := &lab{Lab: labtest.New(t), t: t, cache: t.TempDir()}
	l.OK("up", "--nodes", strconv.Itoa(nodes), "--no-default-pools") // testPools only
	if _, stderr, code := l.Run(testPools, "ctl", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply pools: %s", stderr)
	}
	return l
}

// with is the same lab for another test (a subtest), with libcni's cache at cache.
func (l *lab) with(t testing.TB, cache string) *lab {
	return &lab{Lab: l.Lab.With(t), t: t, cache: cache}
}

// endpoint reads a workload endpoint with tabbyctl; nil if it does not exist.
func (l *lab) endpoint(namespace, name string) *api.WorkloadEndpoint {
	l.t.Helper()
	stdout, stderr, code := l.Run("", "ctl", "get", "workloadendpoints", "-n", namespace, name, "-o", "json")
	if code != 0 {
		if strings.Contains(stderr, "not found") {
			return nil
		}
		l.t.Fatalf("get workloadendpoint %s/%s: %s", namespace, name, stderr)
	}
	var w api.WorkloadEndpoint
	if err := json.Unmarshal([]byte(stdout), &w); err != nil {
		l.t.Fatal(err)
	}
	return &w
}

// helper runs the test binary in helper mode inside a lab node.
func (l *lab) helper(node string, req helperRequest) *helperResponse {
	l.t.Helper()
	self, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	if req.PluginDir == "" {
		req.PluginDir = labtest.BinDir(l.t)
	}
	req.CacheDir, req.Etcd = l.cache, labEtcd
	in, err := json.Marshal(req)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.NS(node), self)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		l.t.Fatalf("helper %s in %s: %v\n%s", req.Op, node, err, stderr.String())
	}
	var resp helperResponse
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		l.t.Fatalf("helper %s: %v: %s", req.Op, err, stdout.String())
	}
	return &resp
}

// cni runs a CNI command through libcni in node1; it returns the plugin's error.
func (l *lab) cni(command string, conf json.RawMessage, c container, valid ...types.GCAttachment) *helperResponse {
	l.t.Helper()
	return l.helper("node1", helperRequest{Op: "libcni", Command: command, ConfList: conf, Container: c, Valid: valid})
}

// mustCNI is cni that fails the test on a plugin error.
func (l *lab) mustCNI(command string, conf json.RawMessage, c container) *helperResponse {
	l.t.Helper()
	r := l.cni(command, conf, c)
	if r.Error != nil {
		l.t.Fatalf("%s %s: error %d: %s", command, c.ID, r.Error.Code, r.Error.Msg)
	}
	return r
}

// wantError checks a plugin error's code and message.
func wantError(t testing.TB, what string, e *types.Error, code uint, msg string) {
	t.Helper()
	switch {
	case e == nil:
		t.Errorf("%s succeeded, want error %d (%s)", what, code, msg)
	case e.Code != code || !strings.Contains(e.Msg, msg):
		t.Errorf("%s: error %d: %s\nwant error %d containing %q", what, e.Code, e.Msg, code, msg)
	}
}

// state reads node1's attachments: links, felix's routes, endpoints and IPAM.
func (l *lab) state() nodeState {
	l.t.Helper()
	return *l.helper("node1", helperRequest{Op: "state"}).State
}

// settle waits (30 s at most) until node1's state is want; felix removes routes shortly
// after DEL. It fails the test if the state stays different.
func (l *lab) settle(what string, want nodeState) {
	l.t.Helper()
	labtest.Poll(l.t, what, 30*time.Second, func() string {
		if got := l.state(); !reflect.DeepEqual(got, want) {
			return fmt.Sprintf("node1 and the datastore are not as expected:\n got %+v\nwant %+v", got, want)
		}
		return ""
	})
}

// confList is the configuration list tabby-lab uses for node1 with spec version v, with
// plugin fields changed by extra.
func (l *lab) confList(v string, extra map[string]any) json.RawMessage {
	plugin := map[string]any{
		"type": "tabby-cni", "etcd_endpoints": labEtcd, "nodename": "node1", "log_level": "debug",
		"log_file": filepath.Join(l.StateDir(), "cni.log"),
	}
	maps.Copy(plugin, extra)
	b, err := json.Marshal(map[string]any{"cniVersion": v, "name": "tabby-net", "plugins": []any{plugin}})
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

// pluginConf is the single plugin configuration libcni would hand the plugin.
func (l *lab) pluginConf(v string, extra map[string]any) string {
	var list struct {
		CNIVersion, Name string
		Plugins          []map[string]any
	}
	if err := json.Unmarshal(l.confList(v, extra), &list); err != nil {
		l.t.Fatal(err)
	}
	p := list.Plugins[0]
	p["cniVersion"], p["name"] = list.CNIVersion, list.Name
	b, _ := json.Marshal(p)
	return string(b)
}

// container makes a workload namespace (loopback up) for pod cni/<pod> and returns its
// attachment as kubelet would describe it.
func (l *lab) container(pod string) container {
	l.t.Helper()
	ns := l.NS("w-cni." + pod)
	ip(l.t, "netns", "add", ns)
	ip(l.t, "-n", ns, "link", "set", "lo", "up")
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	b := make([]byte, 32)
	rand.Read(b)
	id := fmt.Sprintf("%x", b)
	return container{ID: id, NetNS: "/run/netns/" + ns, IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "cni"}, {"K8S_POD_NAME", pod}, {"K8S_POD_INFRA_CONTAINER_ID", id},
	}}
}

// ip runs the ip command (on the lab's namespaces) and fails the test if it fails.
func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// nsExec runs a command inside a namespace the test made and returns its output.
func nsExec(t testing.TB, c container, argv ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", filepath.Base(c.NetNS)}, argv...)...).CombinedOutput()
	return string(out), err
}

// execEnv is the environment a runtime gives the plugin for c.
func execEnv(t testing.TB, command string, c container) []string {
	t.Helper()
	var args []string
	for _, kv := range c.Args {
		args = append(args, kv[0]+"="+kv[1])
	}
	return []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + c.ID, "CNI_NETNS=" + c.NetNS, "CNI_IFNAME=" + c.IfName,
		"CNI_ARGS=" + strings.Join(args, ";"), "CNI_PATH=" + labtest.BinDir(t), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
}

// resultAddrsOf reads the addresses of an ADD result (any version).
func resultAddrsOf(t testing.TB, raw json.RawMessage) []netip.Addr {
	t.Helper()
	var r struct{ IPs []struct{ Address string } }
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, ip := range r.IPs {
		out = append(out, netip.MustParsePrefix(ip.Address).Addr())
	}
	return out
}

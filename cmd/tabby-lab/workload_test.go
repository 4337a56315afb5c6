package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tabby-net/tabby/internal/labstate"
	"github.com/tabby-net/tabby/internal/labtest"
)

// fakeCall is a call the fake CNI plugin recorded (testdata/fakecni).
type fakeCall struct {
	Command     string         `json:"command"`
	ContainerID string         `json:"containerID"`
	Netns       string         `json:"netns"`
	IfName      string         `json:"ifName"`
	Args        string         `json:"args"`
	Path        string         `json:"path"`
	OwnNetns    string         `json:"ownNetns"`
	NetnsExists bool           `json:"netnsExists"`
	Config      map[string]any `json:"config"`
}

func readCalls(t *testing.T, l *labtest.Lab) []fakeCall {
	t.Helper()
	f, err := os.Open(filepath.Join(l.StateDir(), "cni.log"))
	if err != nil {
		t.Fatalf("the fake plugin's log: %v", err)
	}
	defer f.Close()
	var calls []fakeCall
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c fakeCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("cni.log line %q: %v", sc.Text(), err)
		}
		calls = append(calls, c)
	}
	return calls
}

// netnsInode is how /proc/<pid>/ns/net names the namespace mounted at /run/netns/<ns>.
func netnsInode(t *testing.T, ns string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(netnsPath(ns), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

func cniArgs(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// TestWorkloadsThroughLibcni drives workload add/del with a fake plugin that records how
// libcni ran it: from the node's namespace, with the workload's netns, CNI_ARGS as the
// kubelet passes them, the lab's network configuration and the labels.
func TestWorkloadsThroughLibcni(t *testing.T) {
	labtest.Need(t)
	before := takeSnapshot(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "2", "--no-agents", "--cni-bin-dir", fakeCNIDir(t))

	out := l.OK("workload", "add", "node1", "default/web1", "--labels", "app=web,tier=front")
	assertContains(t, "workload add", out, "default/web1", "node1", "10.244.0.2/32")
	webNS := l.NS("w-default.web1")
	if !netnsExists(webNS) {
		t.Fatalf("namespace %s does not exist", webNS)
	}
	calls := readCalls(t, l)
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1: %+v", len(calls), calls)
	}
	c := calls[0]
	if c.Command != "ADD" || c.Netns != "/run/netns/"+webNS || !c.NetnsExists || c.IfName != "eth0" || c.Path != fakeCNIDir(t) {
		t.Errorf("ADD call: %+v", c)
	}
	if want := netnsInode(t, l.NS("node1")); c.OwnNetns != want {
		t.Errorf("the plugin ran in %s, want node1's namespace %s", c.OwnNetns, want)
	}
	args := cniArgs(c.Args)
	if args["IgnoreUnknown"] != "1" || args["K8S_POD_NAMESPACE"] != "default" || args["K8S_POD_NAME"] != "web1" ||
		args["K8S_POD_INFRA_CONTAINER_ID"] != c.ContainerID || len(c.ContainerID) != 64 || len(args["K8S_POD_UID"]) != 36 {
		t.Errorf("CNI_ARGS %q (container ID %q)", c.Args, c.ContainerID)
	}
	wantConf := map[string]any{
		"cniVersion": "1.1.0", "name": "tabby-net", "type": "tabby-cni",
		"etcd_endpoints": "http://172.31.1.1:2379", "nodename": "node1", "log_level": "debug",
		"log_file":    filepath.Join(l.StateDir(), "cni.log"),
		"cluster_dns": []any{"169.254.20.10"},
		"args": map[string]any{"cni": map[string]any{"labels": []any{
			map[string]any{"key": "app", "value": "web"},
			map[string]any{"key": "tier", "value": "front"},
		}}},
	}
	if !reflect.DeepEqual(c.Config, wantConf) {
		t.Errorf("network configuration the plugin got:\n%v\nwant\n%v", c.Config, wantConf)
	}

	// The result's dns is the workload's resolv.conf, through "ip netns exec".
	if got, want := l.OK("exec", "default/web1", "--", "cat", "/etc/resolv.conf"),
		"nameserver 169.254.20.10\nsearch default.svc.cluster.local\noptions ndots:5\n"; got != want {
		t.Errorf("the workload's resolv.conf:\n%s\nwant\n%s", got, want)
	}

	// The workload is a namespace of its own: loopback up, nothing else (the fake moves
	// no interface).
	links := l.OK("exec", "default/web1", "--", "ip", "-o", "link")
	if !strings.Contains(links, "lo: <LOOPBACK,UP") || strings.Count(strings.TrimSpace(links), "\n") != 0 {
		t.Errorf("workload links:\n%s", links)
	}

	l.OK("workload", "add", "node2", "kube-system/dns.1")
	calls = readCalls(t, l)
	if c := calls[1]; c.OwnNetns != netnsInode(t, l.NS("node2")) || c.Config["nodename"] != "node2" || c.Config["args"] != nil {
		t.Errorf("second ADD: %+v", c)
	}
	assertContains(t, "duplicate add", l.Fails("workload", "add", "node2", "default/web1"), "already has workload default/web1 (on node1)")

	s := l.Status()
	if len(s.Workloads) != 2 {
		t.Fatalf("status workloads: %+v", s.Workloads)
	}
	w := s.Workloads[0]
	if w.FullName != "default/web1" || w.Namespace != "default" || w.Pod != "web1" || w.Node != "node1" || w.Netns != webNS ||
		w.ContainerID != calls[0].ContainerID || len(w.IPs) != 1 || w.IPs[0].String() != "10.244.0.2/32" ||
		!reflect.DeepEqual(w.Labels, map[string]string{"app": "web", "tier": "front"}) {
		t.Errorf("status workload: %+v", w)
	}
	if w := s.Workloads[1]; w.FullName != "kube-system/dns.1" || w.IPs[0].String() != "10.244.0.3/32" || w.Netns != l.NS("w-kube-system.dns.1") {
		t.Errorf("status workload: %+v", w)
	}
	assertContains(t, "status", l.OK("status"), "default/web1", "10.244.0.2/32", "app=web,tier=front")

	// A failed ADD is followed by a DEL and leaves no namespace.
	stderr := l.Fails("workload", "add", "node1", "default/bad", "--labels", "fakecni-fail=add")
	assertContains(t, "failed add", stderr, "CNI ADD on node1", "fakecni: ADD failed")
	calls = readCalls(t, l)
	if n := len(calls); n != 4 || calls[2].Command != "ADD" || calls[3].Command != "DEL" || calls[3].ContainerID != calls[2].ContainerID {
		t.Errorf("calls after a failed ADD: %+v", calls[2:])
	}
	if netnsExists(l.NS("w-default.bad")) || slices.ContainsFunc(l.Status().Workloads, func(w labstate.WorkloadStatus) bool { return w.Pod == "bad" }) {
		t.Error("a failed ADD left its workload behind")
	}

	// del: DEL from the same node with the same container, namespace and arguments.
	l.OK("workload", "del", "default/web1")
	calls = readCalls(t, l)
	del := calls[len(calls)-1]
	// libcni hands DEL the ADD's result from its cache, as prevResult.
	prev, _ := del.Config["prevResult"].(map[string]any)
	delete(del.Config, "prevResult")
	if del.Command != "DEL" || del.ContainerID != calls[0].ContainerID || del.Netns != calls[0].Netns ||
		del.Args != calls[0].Args || del.OwnNetns != calls[0].OwnNetns || !reflect.DeepEqual(del.Config, calls[0].Config) {
		t.Errorf("DEL call %+v\nwant the ADD's %+v", del, calls[0])
	}
	if ips, _ := prev["ips"].([]any); len(ips) != 1 || ips[0].(map[string]any)["address"] != "10.244.0.2/32" {
		t.Errorf("DEL's prevResult = %v, want the ADD's result", prev)
	}
	if netnsExists(webNS) {
		t.Errorf("workload del left %s", webNS)
	}
	if _, err := os.Stat(netnsEtcDir(webNS)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("workload del left %s (%v)", netnsEtcDir(webNS), err)
	}
	if s := l.Status(); len(s.Workloads) != 1 || s.Workloads[0].Pod != "dns.1" {
		t.Errorf("status workloads after del: %+v", s.Workloads)
	}

	// Concurrent adds are serialized by the lab's lock: every one is recorded, each with
	// its own address.
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, stderr, code := l.Run("", "workload", "add", "node2", fmt.Sprintf("default/p%d", i)); code != 0 {
				t.Errorf("concurrent workload add p%d: exit %d: %s", i, code, stderr)
			}
		}()
	}
	wg.Wait()
	ips := map[string]bool{}
	for _, w := range l.Status().Workloads {
		ips[w.IPs[0].String()] = true
	}
	if len(ips) != 4 {
		t.Errorf("after 3 concurrent adds: %d distinct workload IPs, want 4: %v", len(ips), ips)
	}

	// down removes the workloads that are still there.
	l.OK("down")
	assertGone(t, before, l)
}

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEtcdMemberGrow grows tabby-node's embedded etcd from one member to three as the
// README says: tabbyctl etcd member add prints the settings, tabby-node starts with them
// (state existing), the next add waits until etcd takes it. Then remove shrinks it again.
func TestEtcdMemberGrow(t *testing.T) {
	dir := t.TempDir()
	url := func() string { return fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) }
	peer1 := url()
	first := startNodeWith(t, filepath.Join(dir, "m1"), url(), peer1, "--etcd-name", "m1", "--etcd-initial-cluster", "m1="+peer1)
	members := []*node{first}
	for i := 2; i <= 3; i++ {
		name, client, peer := fmt.Sprintf("m%d", i), url(), url()
		out := reconfigure(t, first, "add", name, "--peer-url", peer)
		settings := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				settings[k] = v
			}
		}
		if settings["TABBY_ETCD_NAME"] != name || settings["TABBY_ETCD_INITIAL_CLUSTER_STATE"] != "existing" ||
			!strings.Contains(settings["TABBY_ETCD_INITIAL_CLUSTER"], "m1="+peer1) || !strings.Contains(settings["TABBY_ETCD_INITIAL_CLUSTER"], name+"="+peer) {
			t.Fatalf("member add %s printed:\n%s", name, out)
		}
		members = append(members, startNodeWith(t, filepath.Join(dir, name), client, peer,
			"--etcd-name", name, "--etcd-initial-cluster", settings["TABBY_ETCD_INITIAL_CLUSTER"], "--etcd-initial-cluster-state", "existing"))
	}
	list := members[2].ok(t, "etcd", "member", "list")
	for _, name := range []string{"m1", "m2", "m3"} {
		if !strings.Contains(list, name+" ") || strings.Contains(list, "unstarted") {
			t.Fatalf("member list lacks %s started:\n%s", name, list)
		}
	}
	// Removed while it runs, the member's tabby-node exits saying why.
	reconfigure(t, first, "remove", "m3")
	exited := make(chan error, 1)
	go func() { exited <- members[2].cmd.Wait() }()
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(members[2].log.String(), "was this member removed from the cluster") {
			t.Errorf("m3's tabby-node exited with %v after its removal; log:\n%s", err, members[2].log)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("m3's tabby-node still runs 30s after its removal; log:\n%s", members[2].log)
		members[2].stop(t)
	}
	if list := first.ok(t, "etcd", "member", "list"); strings.Contains(list, "m3") {
		t.Errorf("m3 still listed after remove:\n%s", list)
	}
	if stderr := first.fails(t, "etcd", "member", "remove", "m9"); !strings.Contains(stderr, "no such member") {
		t.Errorf("remove of an unknown member: %s", stderr)
	}
}

// reconfigure runs tabbyctl etcd member args..., again while etcd refuses it for a member
// started moments ago (as the message says to), and returns its output.
func reconfigure(t *testing.T, n *node, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, stderr, err := n.ctl(t, "", append([]string{"etcd", "member"}, args...)...)
		if err == nil {
			return out
		}
		if !strings.Contains(stderr, "retry in a few seconds") || time.Now().After(deadline) {
			t.Fatalf("etcd member %s: %v: %s", strings.Join(args, " "), err, stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/internal/labtest"
)

// TestLabEtcdStopStart: etcd stop leaves the lab with its etcd stopped (tabbyctl cannot
// reach it, status says so) and a second stop changes nothing; etcd start runs it again
// with the command line up gave it, in the router namespace, on the same data; a second
// start is refused while it runs.
func TestLabEtcdStopStart(t *testing.T) {
	labtest.Need(t)
	l := labtest.New(t)
	l.OK("up", "--nodes", "1", "--no-agents")
	l.Apply(labtest.Pool)
	first := l.State().Etcd.Process
	if len(first.Argv) == 0 || !slices.Contains(first.Argv, "--datastore-only") {
		t.Fatalf("the lab records etcd's command line as %q", first.Argv)
	}

	l.OK("etcd", "stop")
	if alive(first) {
		t.Errorf("etcd (pid %d) still runs after etcd stop", first.PID)
	}
	if s := l.Status(); s.Etcd.Process.Alive || !slices.ContainsFunc(s.Problems, func(p string) bool { return strings.Contains(p, "etcd") }) {
		t.Errorf("status with etcd stopped: etcd %+v, problems %v", s.Etcd.Process, s.Problems)
	}
	l.Fails("ctl", "get", "ippools", "--dial-timeout", "1s")
	if stderr := l.Fails("ctl", "version", "--dial-timeout", "1s"); !strings.Contains(stderr, "172.31.1.1:2379") {
		t.Errorf("tabbyctl with etcd stopped: %s, want the endpoint named", stderr)
	}
	_, stderr, code := l.Run("", "etcd", "stop")
	if code != 0 || !strings.Contains(stderr, "is not running") {
		t.Errorf("a second etcd stop: exit %d, %s", code, stderr)
	}

	l.OK("etcd", "start")
	again := l.State().Etcd.Process
	if !alive(again) || again.PID == first.PID || !slices.Equal(again.Argv, first.Argv) || again.Log != first.Log {
		t.Errorf("after etcd start: %+v, first %+v", again, first)
	}
	if inNS, _ := pidsIn([]string{l.NS("router")}); !slices.Contains(inNS[l.NS("router")], again.PID) {
		t.Errorf("etcd pid %d is not in the router namespace (%v)", again.PID, inNS)
	}
	if out := l.OK("ctl", "get", "ippools"); !strings.Contains(out, "default-ipv4-ippool") {
		t.Errorf("the pool applied before the stop, after the start:\n%s", out)
	}
	if stderr := l.Fails("etcd", "start"); !strings.Contains(stderr, "is running already") {
		t.Errorf("etcd start with etcd running: %s", stderr)
	}
}

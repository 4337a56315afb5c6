package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// TestConcurrentAddDel: 20 rounds of ADD, DEL, ADD and DEL of one container started
// together (the k-th call k×stagger after the first, stagger swept over 0, 1, 2, 5 and
// 20 ms), as a runtime retrying and tearing down may overlap them. Every call succeeds,
// and after each round the node is what the last call to finish left, consistently:
// either an endpoint whose address IPAM holds for it and the container has, or nothing;
// ipam check is clean. Without the per-container lock the calls release each other's
// addresses by the handle they share.
func TestConcurrentAddDel(t *testing.T) {
	l := newLab(t, 1)
	before := l.state()
	conf := l.pluginConf("1.1.0", nil)
	c := l.container("race")
	staggers := []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}
	commands := []string{"ADD", "DEL", "ADD", "DEL"}
	for round := range 20 {
		stagger := staggers[round%len(staggers)]
		what := fmt.Sprintf("round %d (stagger %s)", round, stagger)
		r := l.helper("node1", helperRequest{Op: "race", Commands: commands, Stagger: stagger, Env: execEnv(t, "", c), Stdin: conf})
		for k, a := range r.Race {
			if a.Exit != 0 {
				t.Errorf("%s: %s (call %d): exit %d: %s", what, commands[k], k, a.Exit, a.Stdout)
			}
		}
		s := l.state()
		if s.Problems != "" {
			t.Errorf("%s: ipam check:\n%s", what, s.Problems)
		}
		w := l.endpoint("cni", "race")
		out, err := nsExec(t, c, "ip", "-o", "-4", "addr", "show")
		if err != nil {
			t.Fatalf("%s: %v: %s", what, err, out)
		}
		if w == nil {
			if s.InUse != 0 || s.Handles != 0 || len(s.Links) != 0 || strings.Contains(out, "eth0") {
				t.Errorf("%s: no endpoint, but %d addresses in use, %d handles, links %v; the container has %s", what, s.InUse, s.Handles, s.Links, out)
			}
			continue
		}
		if len(w.Spec.IPNetworks) != 1 || w.Spec.ContainerID != c.ID {
			t.Fatalf("%s: endpoint %+v", what, w.Spec)
		}
		addr := netip.MustParsePrefix(w.Spec.IPNetworks[0]).Addr()
		if s.InUse != 1 || s.Handles != 1 || len(s.Links) != 1 || !strings.Contains(out, " "+addr.String()+"/32 ") {
			t.Errorf("%s: endpoint with %s, but %d addresses in use, %d handles, links %v; the container has %s", what, addr, s.InUse, s.Handles, s.Links, out)
		}
		var added []netip.Addr
		for k, a := range r.Race {
			if commands[k] == "ADD" && a.Exit == 0 {
				added = append(added, resultAddrsOf(t, json.RawMessage(a.Stdout))...)
			}
		}
		if !slices.Contains(added, addr) {
			t.Errorf("%s: the endpoint's address %s is not one the round's ADDs returned (%v)", what, addr, added)
		}
	}
	l.mustCNI("DEL", l.confList("1.1.0", nil), c)
	l.settle("after the last DEL", before)
}

// TestCheckWaitsForLock: CHECK takes the container's lock, so it never sees an
// attachment another call is halfway through. The test holds the lock as an ADD
// repairing the attachment would, with the default route gone; CHECK then tries the lock
// (its open of the lock file, seen by inotify) before it finishes, still waits after the
// test has held the lock 0, 1, 2 or 5 s more, and once the route is back and the lock
// free, it passes. A CHECK that skipped the lock would finish first, reporting the
// missing route.
func TestCheckWaitsForLock(t *testing.T) {
	l := newLab(t, 1)
	conf := l.confList("1.1.0", nil)
	c := l.container("lockcheck")
	l.mustCNI("ADD", conf, c)
	t.Cleanup(func() { l.mustCNI("DEL", conf, c) })
	for _, hold := range []time.Duration{0, time.Second, 2 * time.Second, 5 * time.Second} {
		t.Run(hold.String(), func(t *testing.T) { checkWaitsForLock(t, l.with(t, l.cache), conf, c, hold) })
	}
}

func checkWaitsForLock(t *testing.T, l *lab, conf json.RawMessage, c container, hold time.Duration) {
	held, err := lockContainer(context.Background(), lockDir, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() { held.unlock(false) })
	defer release()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	events := os.NewFile(uintptr(fd), "inotify")
	defer events.Close()
	if _, err := unix.InotifyAddWatch(fd, lockPath(lockDir, c.ID), unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	opened := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		if n, err := events.Read(buf); err == nil && n > 0 {
			close(opened)
		}
	}()
	if out, err := nsExec(t, c, "ip", "route", "del", "default"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	restored := false
	defer func() {
		if !restored {
			nsExec(t, c, "ip", "route", "add", "default", "via", gatewayV4.String(), "dev", "eth0")
		}
	}()

	checked := make(chan *types.Error, 1)
	go func() { checked <- l.cni("CHECK", conf, c).Error }()
	select {
	case <-opened:
	case e := <-checked:
		t.Fatalf("CHECK finished while the test held the container's lock, without trying it: %v", e)
	case <-time.After(30 * time.Second):
		t.Fatal("CHECK neither tried the container's lock nor finished in 30 s")
	}
	time.Sleep(hold) // the overlap being swept, not a wait for a result
	if out, err := nsExec(t, c, "ip", "route", "add", "default", "via", gatewayV4.String(), "dev", "eth0"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	restored = true
	select {
	case e := <-checked:
		t.Fatalf("CHECK finished while the test held the container's lock: %v", e)
	default:
	}
	release()
	select {
	case e := <-checked:
		if e != nil {
			t.Errorf("CHECK after the lock was released: error %d: %s", e.Code, e.Msg)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("CHECK did not finish within 60 s of the lock's release")
	}
}

package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// TestLockSerialises: a second lock of one container waits until the first is released,
// whatever the overlap; another container's lock does not wait; a held lock past the
// deadline is error 11 naming the file and the holder's pid.
func TestLockSerialises(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for _, hold := range []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 50 * time.Millisecond} {
		first, err := lockContainer(ctx, dir, "c1")
		if err != nil {
			t.Fatal(err)
		}
		var released atomic.Bool
		got := make(chan error, 1)
		go func() {
			l, err := lockContainer(ctx, dir, "c1")
			if err == nil {
				if !released.Load() {
					err = errors.New("took the lock while the first holder had it")
				}
				l.unlock(false)
			}
			got <- err
		}()
		other, err := lockContainer(ctx, dir, "c2")
		if err != nil {
			t.Fatalf("another container's lock: %v", err)
		}
		other.unlock(true)
		time.Sleep(hold) // the overlap being swept, not a wait for a result
		released.Store(true)
		first.unlock(false)
		if err := <-got; err != nil {
			t.Errorf("hold %s: %v", hold, err)
		}
	}

	held, err := lockContainer(ctx, dir, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer held.unlock(true)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = lockContainer(short, dir, "busy")
	ce := cniError(err)
	if ce == nil || ce.Code != types.ErrTryAgainLater || !strings.Contains(ce.Msg, filepath.Join(dir, "busy.lock")) ||
		!strings.Contains(ce.Msg, "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("lock held past the deadline: %+v", ce)
	}
}

// TestLockRemovedWhileWaiting: when the holder removes the lock file (DEL), a waiting call
// takes the lock on the file now at the path, never on the removed one (which would let a
// third call in beside it); a file whose holder is gone (its flock went with it) does not
// block.
func TestLockRemovedWhileWaiting(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	path := lockPath(dir, "c1")
	first, err := lockContainer(ctx, dir, "c1")
	if err != nil {
		t.Fatal(err)
	}
	waiter := make(chan *containerLock)
	go func() {
		l, err := lockContainer(ctx, dir, "c1")
		if err != nil {
			t.Error(err)
		}
		waiter <- l
	}()
	first.unlock(true)
	second := <-waiter
	// A third caller must wait for the second: both hold the file at path.
	var st1, st2 os.FileInfo
	if st1, err = second.f.Stat(); err != nil {
		t.Fatal(err)
	}
	if st2, err = os.Stat(path); err != nil || !os.SameFile(st1, st2) {
		t.Fatalf("the waiter holds a file that is not %s any more (%v)", path, err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := lockContainer(short, dir, "c1"); cniError(err).Code != types.ErrTryAgainLater {
		t.Errorf("a third lock while the second holds it: %v", err)
	}
	second.unlock(false)
	if l, err := lockContainer(ctx, dir, "c1"); err != nil {
		t.Errorf("a lock file nobody holds blocks: %v", err)
	} else {
		l.unlock(true)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("lock file left after unlock(true): %v", err)
	}
}

func TestLockPath(t *testing.T) {
	for id, want := range map[string]string{
		"0123abcd":      "/d/0123abcd.lock",
		"a_b.c-d":       "/d/a_b.c-d.lock",
		"../etc/passwd": "/d/id-",
		".hidden":       "/d/id-",
	} {
		if got := lockPath("/d", id); !strings.HasPrefix(got, want) || strings.Count(got, "/") != 2 {
			t.Errorf("lockPath(%q) = %s, want %s…", id, got, want)
		}
	}
}

// TestSweepLocks: lock files nobody holds go, a held one stays and stays held; a missing
// directory is nothing to sweep.
func TestSweepLocks(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	held, err := lockContainer(ctx, dir, "held")
	if err != nil {
		t.Fatal(err)
	}
	defer held.unlock(true)
	for _, id := range []string{"left1", "left2"} {
		l, err := lockContainer(ctx, dir, id)
		if err != nil {
			t.Fatal(err)
		}
		l.unlock(false) // as an ADD leaves it
	}
	os.WriteFile(filepath.Join(dir, "other.txt"), nil, 0o600)
	if n, err := sweepLocks(dir); n != 2 || err != nil {
		t.Errorf("sweep removed %d (%v), want 2", n, err)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "held.lock other.txt" {
		t.Errorf("after the sweep: %v, want held.lock other.txt", left)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := lockContainer(short, dir, "held"); cniError(err).Code != types.ErrTryAgainLater {
		t.Errorf("the held lock after the sweep: %v", err)
	}
	if n, err := sweepLocks(filepath.Join(dir, "nosuch")); n != 0 || err != nil {
		t.Errorf("sweep of a missing directory: %d %v", n, err)
	}
}

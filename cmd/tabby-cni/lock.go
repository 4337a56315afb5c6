package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per container ID that an ADD, CHECK, DEL or GC is working
// on, so that overlapping calls for one container on a node (a runtime retrying, or a DEL
// sent while its ADD still runs) take turns: without that, an ADD's undo or a DEL
// releases, by the handle they share, addresses another ADD just handed out, and a CHECK
// reports the half-made attachment of an ADD in progress. DEL removes its
// container's file; GC removes every file no call holds (sweepLocks); /run is emptied at
// boot.
const lockDir = "/run/tabby/cni-locks"

// lockTimeout bounds the wait for another invocation's lock, well inside the command's
// deadline (commandTimeout) so the work still has time after it.
const lockTimeout = 30 * time.Second

// Polling for a held lock starts at lockPollMin and doubles up to lockPollMax: flock
// cannot wait with a deadline.
const (
	lockPollMin = time.Millisecond
	lockPollMax = 20 * time.Millisecond
)

// containerLock is an exclusive flock(2) on a container's lock file. The kernel drops it
// when the process dies, so a lock file left by a killed plugin holds nothing up.
type containerLock struct {
	f    *os.File
	path string
}

// safeFileName matches the container IDs used as lock file names as they are; others
// (the spec allows only these characters, but the plugin does not rely on it) are hashed.
var safeFileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$`)

// lockPath is the lock file of containerID in dir.
func lockPath(dir, containerID string) string {
	name := containerID
	if !safeFileName.MatchString(name) {
		h := fnv.New64a()
		h.Write([]byte(containerID))
		name = "id-" + strconv.FormatUint(h.Sum64(), 16)
	}
	return filepath.Join(dir, name+".lock")
}

// lockContainer takes containerID's lock in dir, waiting for another invocation that
// holds it until ctx ends or lockTimeout passes (error 11, naming the lock file and the
// holder's pid). It writes its own pid in the file for that message.
func lockContainer(ctx context.Context, dir, containerID string) (*containerLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errorf(types.ErrIOFailure, "lock directory: %v", err)
	}
	path := lockPath(dir, containerID)
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	start := time.Now()
	wait := lockPollMin
	for {
		l, err := tryLock(path)
		if err != nil {
			return nil, errorf(types.ErrIOFailure, "lock %s: %v", path, err)
		}
		if l != nil {
			return l, nil
		}
		select {
		case <-ctx.Done():
			holder := "another invocation"
			if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
				holder = "pid " + strings.TrimSpace(string(b))
			}
			return nil, errorf(types.ErrTryAgainLater, "container %s is busy: %s holds %s (another ADD, CHECK, DEL or GC of it); waited %s",
				containerID, holder, path, time.Since(start).Round(time.Millisecond))
		case <-time.After(wait):
		}
		wait = min(2*wait, lockPollMax)
	}
}

// tryLock takes the lock on path if it is free; nil, nil if another process holds it. A
// file unlinked (by a DEL) between open and flock is not the lock any more: it opens the
// new one.
func tryLock(path string) (*containerLock, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, nil
			}
			return nil, fmt.Errorf("flock: %w", err)
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, err
		}
		if err := unix.Stat(path, &now); err == nil && now.Ino == held.Ino && now.Dev == held.Dev {
			// Best effort: the pid only makes the "busy" error more helpful.
			f.Truncate(0)
			f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			return &containerLock{f: f, path: path}, nil
		}
		f.Close()
	}
}

// unlock releases the lock; with remove (the container is gone: DEL, GC) it deletes the
// lock file first, while still holding it, so no lock files pile up.
func (l *containerLock) unlock(remove bool) {
	if remove {
		os.Remove(l.path)
	}
	l.f.Close()
}

// sweepLocks removes the lock files in dir that no call holds: those of containers whose
// DEL never came (a runtime that lost them, a killed plugin), which would otherwise stay
// until the next boot. Removing a free lock file is always safe: a later call for its
// container makes a new one, and tryLock never keeps a removed file's lock. It returns
// how many it removed.
func sweepLocks(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sweep lock files: %w", err)
	}
	removed := 0
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		l, err := tryLock(filepath.Join(dir, e.Name()))
		if err != nil || l == nil {
			continue // held, or gone meanwhile
		}
		l.unlock(true)
		removed++
	}
	return removed, nil
}

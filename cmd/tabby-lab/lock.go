package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// labLock is an exclusive lock on one lab, held by every command that changes it.
type labLock struct {
	f    *os.File
	path string
}

// lockLab takes the lab's lock file <root>/<lab>.lock, waiting for another tabby-lab that
// holds it (up to 10 minutes).
func lockLab(root, lab string) (*labLock, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("lock lab %s: %w", lab, err)
	}
	path := filepath.Join(root, lab+".lock")
	deadline := time.Now().Add(10 * time.Minute)
	told := false
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock lab %s: %w", lab, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// The holder before us may have removed the file (down does): a lock on an
			// unlinked file excludes nobody, so start again on the new file.
			var held, now unix.Stat_t
			if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil &&
				held.Dev == now.Dev && held.Ino == now.Ino {
				return &labLock{f: f, path: path}, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock lab %s: %w", lab, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lock lab %s: another tabby-lab has held %s for 10 minutes", lab, path)
		}
		if !told {
			fmt.Fprintf(os.Stderr, "tabby-lab: waiting for another tabby-lab command on lab %s\n", lab)
			told = true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unlock releases the lock; with remove, it removes the lock file first (the lab is gone)
// and the state root if nothing else is in it.
func (l *labLock) unlock(remove bool) {
	if remove {
		os.Remove(l.path)
		os.Remove(filepath.Dir(l.path)) // only if empty
	}
	l.f.Close()
}

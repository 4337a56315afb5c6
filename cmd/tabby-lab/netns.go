package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const netnsDir = "/run/netns"

// createNetns creates a named network namespace with "ip netns add", which also sets up
// /run/netns as a shared mount the first time, as every other tool expects it.
func createNetns(ctx context.Context, name string) error {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("create namespace %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// deleteNetns removes a named namespace: unmounts /run/netns/<name> and removes the file.
// A file that is not (or no longer) a mount point, or is already gone, is fine: that is
// what a crash between the two steps of "ip netns add" leaves.
func deleteNetns(name string) error {
	p := netnsPath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete namespace %s: unmount: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	if err := os.RemoveAll(netnsEtcDir(name)); err != nil {
		return fmt.Errorf("delete namespace %s: its %s: %w", name, netnsEtcDir(name), err)
	}
	return nil
}

// netnsEtcDir is where "ip netns exec" finds a namespace's own files, such as the
// resolv.conf it bind-mounts over /etc/resolv.conf.
func netnsEtcDir(name string) string { return filepath.Join("/etc/netns", name) }

// writeResolvConf writes a namespace's resolv.conf from a CNI result's dns, as a runtime
// writes a pod's: "ip netns exec" (tabby-lab exec) then resolves through it. No servers:
// nothing is written, and the namespace uses the host's.
func writeResolvConf(name string, d types.DNS) error {
	if len(d.Nameservers) == 0 {
		return nil
	}
	var b strings.Builder
	for _, s := range d.Nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(d.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Search, " "))
	}
	if len(d.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.Options, " "))
	}
	if err := os.MkdirAll(netnsEtcDir(name), 0o755); err != nil {
		return fmt.Errorf("resolv.conf of %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(netnsEtcDir(name), "resolv.conf"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("resolv.conf of %s: %w", name, err)
	}
	return nil
}

// listNetns lists the named namespaces that start with prefix.
func listNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func netnsExists(name string) bool {
	_, err := os.Stat(netnsPath(name))
	return err == nil
}

type nsID struct{ dev, ino uint64 }

// idOf identifies the namespace a path refers to (a /run/netns file or /proc/<pid>/ns/net).
func idOf(path string) (nsID, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	return nsID{st.Dev, st.Ino}, true
}

// pidsIn finds the processes whose network namespace is one of the named ones, as "ip
// netns pids" does, and returns them by namespace. A /run/netns file that is not mounted
// has the tmpfs's own identity and so matches no process.
func pidsIn(names []string) (map[string][]int, error) {
	ids := map[nsID]string{}
	for _, n := range names {
		if id, ok := idOf(netnsPath(n)); ok {
			ids[id] = n
		}
	}
	found := map[string][]int{}
	if len(ids) == 0 {
		return found, nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, ok := idOf("/proc/" + e.Name() + "/ns/net")
		if !ok {
			continue // gone, or a zombie: it holds no namespace
		}
		if n, ok := ids[id]; ok {
			found[n] = append(found[n], pid)
		}
	}
	for _, pids := range found {
		slices.Sort(pids)
	}
	return found, nil
}

// withNetns runs f on an OS thread that has entered the named namespace. Files under
// /proc/sys/net opened by f are that namespace's.
func withNetns(name string, f func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is locked and never unlocked if it cannot be put back: the runtime
		// then ends it rather than let another goroutine run in the wrong namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// setSysctl writes a sysctl (as a path under /proc/sys) inside a namespace.
func setSysctl(ns, path, value string) error {
	return withNetns(ns, func() error {
		if err := os.WriteFile("/proc/sys/"+path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("namespace %s: sysctl %s=%s: %w", ns, strings.ReplaceAll(path, "/", "."), value, err)
		}
		return nil
	})
}

// nsHandle is a netlink handle working inside a named namespace, and the namespace itself
// (to move links into it).
type nsHandle struct {
	*netlink.Handle
	ns   netns.NsHandle
	name string
}

func openNetns(name string) (*nsHandle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in namespace %s: %w", name, err)
	}
	return &nsHandle{Handle: h, ns: ns, name: name}, nil
}

func (h *nsHandle) Close() {
	h.Handle.Close()
	h.ns.Close()
}

// linkUp sets the named link up.
func (h *nsHandle) linkUp(name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("namespace %s: link %s: %w", h.name, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("namespace %s: set %s up: %w", h.name, name, err)
	}
	return nil
}

package felix

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"runtime"
	"slices"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Sysctl is one kernel setting under /proc/sys.
type Sysctl struct {
	Path      string // under /proc/sys, with '/' separators: "net/ipv4/conf/<if>/proxy_arp"
	Value     string
	Interface string // the interface the setting belongs to; empty for a global setting
}

func (s Sysctl) String() string { return s.Path + "=" + s.Value }

// DesiredSysctls returns the settings the node needs for s, sorted by path:
//
//   - net.ipv4.ip_forward=1, always: the node routes for its workloads.
//   - net.ipv6.conf.all.forwarding=1, only when an IPv6 workload or block exists, because
//     it also makes the host ignore router advertisements on its own uplinks.
//   - per IPv4 workload interface, proxy_arp=1 and neigh proxy_delay=0: the workload's
//     gateway 169.254.1.1 is on no interface, so the host veth answers ARP for every
//     address, at once rather than after the default random delay of up to 0.8 s.
//   - per IPv6 workload interface, disable_ipv6=0, so that the veth has the fe80:: link-local
//     address the workload uses as its gateway (Calico's scheme), and proxy_ndp=1 as Calico
//     sets it.
//
// felix only ever sets these values, never restores earlier ones.
func DesiredSysctls(s LocalState) []Sysctl {
	want := []Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}}
	v6 := slices.ContainsFunc(s.Blocks, func(p netip.Prefix) bool { return p.Addr().Is6() })
	for _, w := range s.Workloads {
		if w.Interface == "" {
			continue
		}
		var has4, has6 bool
		for _, a := range w.Addrs {
			has4 = has4 || a.Unmap().Is4()
			has6 = has6 || (a.Is6() && !a.Is4In6())
		}
		if has4 {
			want = append(want,
				Sysctl{"net/ipv4/conf/" + w.Interface + "/proxy_arp", "1", w.Interface},
				Sysctl{"net/ipv4/neigh/" + w.Interface + "/proxy_delay", "0", w.Interface})
		}
		if has6 {
			v6 = true
			want = append(want,
				Sysctl{"net/ipv6/conf/" + w.Interface + "/disable_ipv6", "0", w.Interface},
				Sysctl{"net/ipv6/conf/" + w.Interface + "/proxy_ndp", "1", w.Interface})
		}
	}
	if v6 {
		want = append(want, Sysctl{Path: "net/ipv6/conf/all/forwarding", Value: "1"})
	}
	slices.SortFunc(want, func(a, b Sysctl) int { return strings.Compare(a.Path, b.Path) })
	return slices.CompactFunc(want, func(a, b Sysctl) bool { return a.Path == b.Path })
}

// sysctlReconciler writes sysctls in one network namespace, reading each first so that
// a correct value is never rewritten.
type sysctlReconciler struct {
	ns netns.NsHandle // a closed handle means the current namespace
	// verified holds the settings found right, with the index of the interface they were
	// checked on (0 for global ones): a veth recreated under the same name is new.
	verified map[Sysctl]int
}

// apply sets want in the namespace. A setting already verified on the same interface is
// not read again unless full is set; a setting of an interface that does not exist yet is
// left for a later pass. It returns how many values it wrote.
func (r *sysctlReconciler) apply(want []Sysctl, links linkTable, full bool) (int, error) {
	verified := make(map[Sysctl]int, len(want))
	var todo []Sysctl
	var indexes []int
	for _, s := range want {
		index := 0
		if s.Interface != "" {
			l, ok := links.byName[s.Interface]
			if !ok {
				continue
			}
			index = l.index
		}
		if i, ok := r.verified[s]; ok && i == index && !full {
			verified[s] = index
			continue
		}
		todo = append(todo, s)
		indexes = append(indexes, index)
	}
	r.verified = verified
	if len(todo) == 0 {
		return 0, nil // the usual event-driven pass: no thread to switch
	}
	written := 0
	var errs errorList
	err := inNetNS(r.ns, func() error {
		for i, s := range todo {
			wrote, err := ensureSysctl(s)
			switch {
			case err == nil:
				verified[s] = indexes[i]
				if wrote {
					written++
				}
			case s.Interface != "" && errors.Is(err, fs.ErrNotExist):
				// The interface went away since it was listed.
			default:
				errs.add(err)
			}
		}
		return nil
	})
	if err != nil {
		return written, err
	}
	return written, errs.err()
}

// ensureSysctl writes s unless it already holds its value, and reports whether it wrote.
// It uses bare system calls: a periodic pass reads 20,000 of these at 10,000 workloads, and
// os.ReadFile costs two and a half times as much (an fstat, a second read, allocations).
func ensureSysctl(s Sysctl) (bool, error) {
	path := "/proc/sys/" + s.Path
	var buf [64]byte
	n, err := readSmall(path, buf[:])
	if err != nil {
		return false, fmt.Errorf("read sysctl %s: %w", s.Path, err)
	}
	cur := bytes.TrimSpace(buf[:n])
	if string(cur) == s.Value {
		return false, nil
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		_, err = unix.Write(fd, []byte(s.Value))
		unix.Close(fd)
	}
	if err != nil {
		return false, fmt.Errorf("set sysctl %s=%s (was %s): %w", s.Path, s.Value, cur, err)
	}
	return true, nil
}

func readSmall(path string, buf []byte) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.Read(fd, buf)
}

// inNetNS runs fn in network namespace ns (in the current one if ns is closed). /proc/sys/net
// shows the namespace of the thread that opens a file, so fn runs on a locked thread that
// enters ns and returns to the original namespace before it is unlocked. It runs in a
// goroutine of its own so that if the return fails the thread stays locked and the runtime
// retires it with the goroutine, rather than let other goroutines run in ns. (Retiring is
// no cure on its own: the main thread is parked instead, still holding the namespace.)
func inNetNS(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

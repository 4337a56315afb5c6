package felix

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LoopbackLabel marks the addresses tabby puts on lo (the node-local DNS server's), so that
// it removes only its own. This kernel has no dummy links, and lo serves as well: an
// address on lo is local to the node, never answered for on the wire.
const LoopbackLabel = "lo:tby"

// WriterLoopback is the observer's name for LoopbackReconciler.Apply.
const WriterLoopback = "loopback"

// LoopbackReconciler keeps a set of IPv4 /32 addresses on lo, labelled LoopbackLabel.
type LoopbackReconciler struct {
	h *netlink.Handle
	// Observe, if set, is told of every Apply, as writer WriterLoopback.
	Observe ApplyObserver
}

// NewLoopbackReconciler returns a reconciler for the namespace of h (nil: the agent's).
func NewLoopbackReconciler(h *netlink.Handle) *LoopbackReconciler {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &LoopbackReconciler{h: h}
}

// Apply makes lo hold exactly addrs among the addresses labelled LoopbackLabel (IPv6 ones
// are refused: labels are IPv4's); others' addresses on lo are left alone. It reports how
// many writes it made.
func (r *LoopbackReconciler) Apply(addrs []netip.Addr) (n int, err error) {
	start := time.Now()
	defer func() { r.Observe.observeSince(WriterLoopback, start, err) }()
	for _, a := range addrs {
		if !a.Is4() {
			return 0, fmt.Errorf("loopback address %s: only IPv4 addresses can be labelled", a)
		}
	}
	lo, err := r.h.LinkByName("lo")
	if err != nil {
		return 0, fmt.Errorf("find lo: %w", err)
	}
	have, err := r.h.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("list lo's addresses: %w", err)
	}
	var errs []error
	present := map[netip.Addr]bool{}
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		ones, _ := a.Mask.Size()
		if a.Label != LoopbackLabel {
			present[ip] = present[ip] || ones == 32
			continue
		}
		if slices.Contains(addrs, ip) && ones == 32 {
			present[ip] = true
			continue
		}
		if err := r.h.AddrDel(lo, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from lo: %w", a.IPNet, err))
			continue
		}
		n++
	}
	for _, a := range addrs {
		if present[a] {
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: LoopbackLabel, Scope: unix.RT_SCOPE_HOST}
		if err := r.h.AddrAdd(lo, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add %s/32 to lo: %w", a, err))
			continue
		}
		present[a] = true
		n++
	}
	return n, errors.Join(errs...)
}

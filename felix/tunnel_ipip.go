package felix

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// ErrNoIPIP says the kernel has no ipip support: IPIPDevice neither exists nor can be
// created.
var ErrNoIPIP = errors.New("the kernel has no ipip support")

// IPIPReconciler keeps IPIPDevice (the kernel's fallback ipip device, which appears in
// every network namespace once the ipip module is loaded) up, with the node's IPIP
// tunnel address as its only IPv4 address (a /32) and the MTU it is given. Routes through
// it come from the dataplane (Encap). It is not safe for concurrent use.
type IPIPReconciler struct {
	// Observe, if set, is told of every Apply, as writer WriterIPIP.
	Observe ApplyObserver

	h   *netlink.Handle
	log *slog.Logger
}

// NewIPIPReconciler works through h (nil: the current network namespace).
func NewIPIPReconciler(h *netlink.Handle, log *slog.Logger) *IPIPReconciler {
	if h == nil {
		h = &netlink.Handle{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &IPIPReconciler{h: h, log: log}
}

// Apply brings IPIPDevice up with addr and mtu; an invalid addr (no IPIP pool) only
// removes its addresses (the fallback device cannot be deleted). Creating the device,
// where it is missing, loads the ipip module; an error wrapping ErrNoIPIP means the
// kernel has none. It reports how many writes it made.
func (r *IPIPReconciler) Apply(addr netip.Addr, mtu int) (int, error) {
	start := time.Now()
	n, err := r.apply(addr, mtu)
	r.Observe.observeSince(WriterIPIP, start, err)
	return n, err
}

func (r *IPIPReconciler) apply(addr netip.Addr, mtu int) (int, error) {
	l, err := r.h.LinkByName(IPIPDevice)
	var notFound netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return 0, fmt.Errorf("look up %s: %w", IPIPDevice, err)
	}
	writes := 0
	if l == nil {
		if !addr.IsValid() {
			return 0, nil
		}
		if err := r.h.LinkAdd(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: IPIPDevice}}); err != nil {
			return 0, fmt.Errorf("%w: create %s: %v", ErrNoIPIP, IPIPDevice, err)
		}
		if l, err = r.h.LinkByName(IPIPDevice); err != nil {
			return 1, fmt.Errorf("%w: %s after creating it: %v", ErrNoIPIP, IPIPDevice, err)
		}
		writes++
		r.log.Info("ipip device created", "device", IPIPDevice)
	}
	addrs, err := r.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return writes, fmt.Errorf("addresses of %s: %w", IPIPDevice, err)
	}
	have := false
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if addr.IsValid() && ip.Unmap() == addr && ones == 32 {
			have = true
			continue
		}
		if err := r.h.AddrDel(l, &a); err != nil {
			return writes, fmt.Errorf("remove %s from %s: %w", a.IPNet, IPIPDevice, err)
		}
		writes++
	}
	if !addr.IsValid() {
		return writes, nil
	}
	if l.Attrs().MTU != mtu {
		if err := r.h.LinkSetMTU(l, mtu); err != nil {
			return writes, fmt.Errorf("set %s mtu %d: %w", IPIPDevice, mtu, err)
		}
		writes++
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := r.h.LinkSetUp(l); err != nil {
			return writes, fmt.Errorf("set %s up: %w", IPIPDevice, err)
		}
		writes++
	}
	if !have {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := r.h.AddrAdd(l, a); err != nil {
			return writes, fmt.Errorf("add %s to %s: %w", addr, IPIPDevice, err)
		}
		writes++
		r.log.Info("ipip tunnel address set", "device", IPIPDevice, "addr", addr, "mtu", mtu)
	}
	return writes, nil
}

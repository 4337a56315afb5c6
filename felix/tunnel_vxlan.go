package felix

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VXLANDeviceConfig is the desired VXLANDevice (or VXLANDeviceV6): its VTEP address and
// MAC, the underlay address it sends from (the node's, of the device's family) and its MTU.
type VXLANDeviceConfig struct {
	VTEP     netip.Addr
	MAC      net.HardwareAddr
	Underlay netip.Addr
	MTU      int
}

// VXLANReconciler keeps VXLANDevice (or VXLANDeviceV6), its address, and its neighbor and
// FDB entries equal to the desired ones. It is not safe for concurrent use.
type VXLANReconciler struct {
	// Observe, if set, is told of every Apply, as writer WriterVXLAN.
	Observe ApplyObserver

	f   vxlanFamily
	h   *netlink.Handle
	log *slog.Logger
}

// NewVXLANReconciler keeps VXLANDevice, over the IPv4 underlay, through h (nil: the
// current network namespace).
func NewVXLANReconciler(h *netlink.Handle, log *slog.Logger) *VXLANReconciler {
	return newVXLANReconciler(vxlanV4, h, log)
}

// NewVXLANReconcilerV6 keeps VXLANDeviceV6, over the IPv6 underlay, with IPv6 VTEPs.
func NewVXLANReconcilerV6(h *netlink.Handle, log *slog.Logger) *VXLANReconciler {
	return newVXLANReconciler(vxlanV6, h, log)
}

func newVXLANReconciler(f vxlanFamily, h *netlink.Handle, log *slog.Logger) *VXLANReconciler {
	if h == nil {
		h = &netlink.Handle{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &VXLANReconciler{f: f, h: h, log: log}
}

// netlinkFamily is the device's address family, for its addresses and neighbors.
func (f vxlanFamily) netlinkFamily() int {
	if f.v6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// foreign says whether a is not the reconciler's to manage: what the kernel keeps on its
// own, the IPv6 link-local address and multicast neighbors (MLD's ff02::16, say).
func (f vxlanFamily) foreign(a netip.Addr) bool {
	return a.IsMulticast() || f.v6 && a.IsLinkLocalUnicast()
}

// Apply makes the device match cfg and peers; a nil cfg removes the device (no pool uses
// VXLAN). It reports how many writes it made.
func (r *VXLANReconciler) Apply(cfg *VXLANDeviceConfig, peers []VXLANPeer) (int, error) {
	start := time.Now()
	n, err := r.apply(cfg, peers)
	r.Observe.observeSince(WriterVXLAN, start, err)
	return n, err
}

func (r *VXLANReconciler) apply(cfg *VXLANDeviceConfig, peers []VXLANPeer) (int, error) {
	dev := r.f.device
	l, err := r.h.LinkByName(dev)
	var notFound netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return 0, fmt.Errorf("look up %s: %w", dev, err)
	}
	if cfg == nil {
		if l == nil {
			return 0, nil
		}
		if err := r.h.LinkDel(l); err != nil {
			return 0, fmt.Errorf("delete %s: %w", dev, err)
		}
		r.log.Info("vxlan device removed: no pool uses VXLAN over its family", "device", dev, "family", r.f)
		return 1, nil
	}
	writes := 0
	if v, ok := l.(*netlink.Vxlan); l != nil && (!ok || !vxlanMatches(v, cfg)) {
		if err := r.h.LinkDel(l); err != nil {
			return writes, fmt.Errorf("delete mismatched %s: %w", dev, err)
		}
		writes++
		l = nil
	}
	if l == nil {
		v := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: dev, MTU: cfg.MTU, HardwareAddr: cfg.MAC},
			VxlanId:   VXLANVNI,
			Port:      VXLANPort,
			Learning:  false,
			SrcAddr:   cfg.Underlay.AsSlice(),
		}
		if err := r.h.LinkAdd(v); err != nil {
			return writes, fmt.Errorf("create %s (VNI %d, port %d): %w", dev, VXLANVNI, VXLANPort, err)
		}
		writes++
		r.log.Info("vxlan device created", "device", dev, "vtep", cfg.VTEP, "mac", cfg.MAC, "mtu", cfg.MTU)
		if l, err = r.h.LinkByName(dev); err != nil {
			return writes, fmt.Errorf("look up %s: %w", dev, err)
		}
	}
	a := l.Attrs()
	if a.MTU != cfg.MTU {
		if err := r.h.LinkSetMTU(l, cfg.MTU); err != nil {
			return writes, fmt.Errorf("set %s mtu %d: %w", dev, cfg.MTU, err)
		}
		writes++
	}
	if a.HardwareAddr.String() != cfg.MAC.String() {
		if err := r.h.LinkSetHardwareAddr(l, cfg.MAC); err != nil {
			return writes, fmt.Errorf("set %s mac %s: %w", dev, cfg.MAC, err)
		}
		writes++
	}
	n, err := r.syncAddr(l, cfg.VTEP)
	writes += n
	if err != nil {
		return writes, err
	}
	if a.Flags&net.FlagUp == 0 {
		if err := r.h.LinkSetUp(l); err != nil {
			return writes, fmt.Errorf("set %s up: %w", dev, err)
		}
		writes++
	}
	n, err = r.syncPeers(a.Index, peers)
	return writes + n, err
}

func vxlanMatches(v *netlink.Vxlan, cfg *VXLANDeviceConfig) bool {
	src, _ := netip.AddrFromSlice(v.SrcAddr)
	return v.VxlanId == VXLANVNI && v.Port == VXLANPort && !v.Learning && src.Unmap() == cfg.Underlay
}

// syncAddr leaves exactly vtep/32 (vtep/128) as the device's address of its family, beside
// the IPv6 link-local address the kernel gives it.
func (r *VXLANReconciler) syncAddr(l netlink.Link, vtep netip.Addr) (int, error) {
	dev := r.f.device
	addrs, err := r.h.AddrList(l, r.f.netlinkFamily())
	if err != nil {
		return 0, fmt.Errorf("list %s addresses: %w", dev, err)
	}
	want := netip.PrefixFrom(vtep, vtep.BitLen())
	writes, found := 0, false
	for _, a := range addrs {
		have := ipNetToPrefix(a.IPNet)
		if have == want {
			found = true
			continue
		}
		if r.f.foreign(have.Addr()) {
			continue
		}
		if err := r.h.AddrDel(l, &a); err != nil {
			return writes, fmt.Errorf("delete %s from %s: %w", a.IPNet, dev, err)
		}
		writes++
	}
	if !found {
		a := &netlink.Addr{IPNet: prefixToIPNet(want)}
		if r.f.v6 {
			a.Flags = unix.IFA_F_NODAD // usable at once: no other host has a VTEP's address
		}
		if err := r.h.AddrAdd(l, a); err != nil {
			return writes, fmt.Errorf("add %s to %s: %w", want, dev, err)
		}
		writes++
	}
	return writes, nil
}

// syncPeers makes the device's permanent neighbor entries (VTEP -> MAC) and FDB entries
// (MAC -> underlay address) exactly those of peers.
func (r *VXLANReconciler) syncPeers(index int, peers []VXLANPeer) (int, error) {
	dev, family := r.f.device, r.f.netlinkFamily()
	wantNeigh := map[netip.Addr]string{}
	wantFDB := map[string]netip.Addr{}
	for _, p := range peers {
		wantNeigh[p.VTEP] = p.MAC
		wantFDB[p.MAC] = p.Underlay
	}
	writes := 0
	var errs errorList

	neighs, err := r.h.NeighList(index, family)
	if err != nil {
		return 0, fmt.Errorf("list %s neighbors: %w", dev, err)
	}
	have := map[netip.Addr]string{}
	for _, n := range neighs {
		ip, _ := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		if r.f.foreign(ip) {
			continue
		}
		if mac, ok := wantNeigh[ip]; ok && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == mac {
			have[ip] = mac
			continue
		}
		if _, ok := wantNeigh[ip]; ok {
			continue // replaced below
		}
		if err := r.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs.add(fmt.Errorf("delete neighbor %s on %s: %w", ip, dev, err))
		} else {
			writes++
		}
	}
	for ip, mac := range wantNeigh {
		if have[ip] == mac {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		n := netlink.Neigh{LinkIndex: index, Family: family, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: hw}
		if err := r.h.NeighSet(&n); err != nil {
			errs.add(fmt.Errorf("set neighbor %s lladdr %s on %s: %w", ip, mac, dev, err))
		} else {
			writes++
		}
	}

	fdb, err := r.h.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		return writes, fmt.Errorf("list %s fdb: %w", dev, err)
	}
	haveFDB := map[string]netip.Addr{}
	for _, n := range fdb {
		mac := n.HardwareAddr.String()
		dst, _ := netip.AddrFromSlice(n.IP)
		dst = dst.Unmap()
		if want, ok := wantFDB[mac]; ok && want == dst && !haveFDB[mac].IsValid() {
			haveFDB[mac] = dst
			continue
		}
		if err := r.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs.add(fmt.Errorf("delete fdb %s dst %s on %s: %w", mac, dst, dev, err))
		} else {
			writes++
		}
	}
	for mac, dst := range wantFDB {
		if haveFDB[mac] == dst {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		n := netlink.Neigh{LinkIndex: index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: dst.AsSlice(), HardwareAddr: hw}
		if err := r.h.NeighSet(&n); err != nil {
			errs.add(fmt.Errorf("set fdb %s dst %s on %s: %w", mac, dst, dev, err))
		} else {
			writes++
		}
	}
	return writes, errs.err()
}

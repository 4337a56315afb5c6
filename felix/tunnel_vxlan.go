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

// VXLANDeviceConfig is the desired VXLANDevice: its VTEP address and MAC, the underlay
// address it sends from (the node's) and its MTU.
type VXLANDeviceConfig struct {
	VTEP     netip.Addr
	MAC      net.HardwareAddr
	Underlay netip.Addr
	MTU      int
}

// VXLANReconciler keeps VXLANDevice, its address, and its neighbor and FDB entries equal
// to the desired ones. It is not safe for concurrent use.
type VXLANReconciler struct {
	// Observe, if set, is told of every Apply, as writer WriterVXLAN.
	Observe ApplyObserver

	h   *netlink.Handle
	log *slog.Logger
}

// NewVXLANReconciler works through h (nil: the current network namespace).
func NewVXLANReconciler(h *netlink.Handle, log *slog.Logger) *VXLANReconciler {
	if h == nil {
		h = &netlink.Handle{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &VXLANReconciler{h: h, log: log}
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
	l, err := r.h.LinkByName(VXLANDevice)
	var notFound netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return 0, fmt.Errorf("look up %s: %w", VXLANDevice, err)
	}
	if cfg == nil {
		if l == nil {
			return 0, nil
		}
		if err := r.h.LinkDel(l); err != nil {
			return 0, fmt.Errorf("delete %s: %w", VXLANDevice, err)
		}
		r.log.Info("vxlan device removed: no pool uses VXLAN", "device", VXLANDevice)
		return 1, nil
	}
	writes := 0
	if v, ok := l.(*netlink.Vxlan); l != nil && (!ok || !vxlanMatches(v, cfg)) {
		if err := r.h.LinkDel(l); err != nil {
			return writes, fmt.Errorf("delete mismatched %s: %w", VXLANDevice, err)
		}
		writes++
		l = nil
	}
	if l == nil {
		v := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice, MTU: cfg.MTU, HardwareAddr: cfg.MAC},
			VxlanId:   VXLANVNI,
			Port:      VXLANPort,
			Learning:  false,
			SrcAddr:   cfg.Underlay.AsSlice(),
		}
		if err := r.h.LinkAdd(v); err != nil {
			return writes, fmt.Errorf("create %s (VNI %d, port %d): %w", VXLANDevice, VXLANVNI, VXLANPort, err)
		}
		writes++
		r.log.Info("vxlan device created", "device", VXLANDevice, "vtep", cfg.VTEP, "mac", cfg.MAC, "mtu", cfg.MTU)
		if l, err = r.h.LinkByName(VXLANDevice); err != nil {
			return writes, fmt.Errorf("look up %s: %w", VXLANDevice, err)
		}
	}
	a := l.Attrs()
	if a.MTU != cfg.MTU {
		if err := r.h.LinkSetMTU(l, cfg.MTU); err != nil {
			return writes, fmt.Errorf("set %s mtu %d: %w", VXLANDevice, cfg.MTU, err)
		}
		writes++
	}
	if a.HardwareAddr.String() != cfg.MAC.String() {
		if err := r.h.LinkSetHardwareAddr(l, cfg.MAC); err != nil {
			return writes, fmt.Errorf("set %s mac %s: %w", VXLANDevice, cfg.MAC, err)
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
			return writes, fmt.Errorf("set %s up: %w", VXLANDevice, err)
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

// syncAddr leaves exactly vtep/32 as the device's IPv4 address.
func (r *VXLANReconciler) syncAddr(l netlink.Link, vtep netip.Addr) (int, error) {
	addrs, err := r.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("list %s addresses: %w", VXLANDevice, err)
	}
	want := netip.PrefixFrom(vtep, 32)
	writes, found := 0, false
	for _, a := range addrs {
		if ipNetToPrefix(a.IPNet) == want {
			found = true
			continue
		}
		if err := r.h.AddrDel(l, &a); err != nil {
			return writes, fmt.Errorf("delete %s from %s: %w", a.IPNet, VXLANDevice, err)
		}
		writes++
	}
	if !found {
		if err := r.h.AddrAdd(l, &netlink.Addr{IPNet: prefixToIPNet(want)}); err != nil {
			return writes, fmt.Errorf("add %s to %s: %w", want, VXLANDevice, err)
		}
		writes++
	}
	return writes, nil
}

// syncPeers makes the device's permanent neighbor entries (VTEP -> MAC) and FDB entries
// (MAC -> underlay address) exactly those of peers.
func (r *VXLANReconciler) syncPeers(index int, peers []VXLANPeer) (int, error) {
	wantNeigh := map[netip.Addr]string{}
	wantFDB := map[string]netip.Addr{}
	for _, p := range peers {
		wantNeigh[p.VTEP] = p.MAC
		wantFDB[p.MAC] = p.Underlay
	}
	writes := 0
	var errs errorList

	neighs, err := r.h.NeighList(index, unix.AF_INET)
	if err != nil {
		return 0, fmt.Errorf("list %s neighbors: %w", VXLANDevice, err)
	}
	have := map[netip.Addr]string{}
	for _, n := range neighs {
		ip, _ := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		if mac, ok := wantNeigh[ip]; ok && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == mac {
			have[ip] = mac
			continue
		}
		if _, ok := wantNeigh[ip]; ok {
			continue // replaced below
		}
		if err := r.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			errs.add(fmt.Errorf("delete neighbor %s on %s: %w", ip, VXLANDevice, err))
		} else {
			writes++
		}
	}
	for ip, mac := range wantNeigh {
		if have[ip] == mac {
			continue
		}
		hw, _ := net.ParseMAC(mac)
		n := netlink.Neigh{LinkIndex: index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: hw}
		if err := r.h.NeighSet(&n); err != nil {
			errs.add(fmt.Errorf("set neighbor %s lladdr %s on %s: %w", ip, mac, VXLANDevice, err))
		} else {
			writes++
		}
	}

	fdb, err := r.h.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		return writes, fmt.Errorf("list %s fdb: %w", VXLANDevice, err)
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
			errs.add(fmt.Errorf("delete fdb %s dst %s on %s: %w", mac, dst, VXLANDevice, err))
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
			errs.add(fmt.Errorf("set fdb %s dst %s on %s: %w", mac, dst, VXLANDevice, err))
		} else {
			writes++
		}
	}
	return writes, errs.err()
}

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/felix"
)

// The addresses a workload routes through, as in Calico: its IPv4 default route goes via
// 169.254.1.1, which is on no interface (the host end of the veth answers ARP for every
// address: proxy_arp), and its IPv6 default route via the host end's link-local address,
// which is fixed because that end always has MAC hostMAC and EUI-64 address generation.
var (
	hostMAC   = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	gatewayV4 = netip.AddrFrom4([4]byte{169, 254, 1, 1})
	gatewayV6 = linkLocalEUI64(hostMAC)
)

// linkLocalEUI64 is the fe80::/64 address the kernel derives from a MAC (RFC 4291
// appendix A): the MAC with ff:fe in its middle and the universal/local bit flipped.
func linkLocalEUI64(mac net.HardwareAddr) netip.Addr {
	a := [16]byte{0: 0xfe, 1: 0x80, 11: 0xff, 12: 0xfe}
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// attachment is one workload interface as ADD makes it: a veth whose container end is
// IfName inside NetNS, holding Addrs as /32 and /128 with default routes through the host
// end, HostVeth, which holds no address of its own.
type attachment struct {
	NetNS    string // path of the container's network namespace
	IfName   string
	HostVeth string
	Addrs    []netip.Addr
	MTU      int // 0: the kernel's default
}

func (a *attachment) has4() bool { return slices.ContainsFunc(a.Addrs, netip.Addr.Is4) }
func (a *attachment) has6() bool { return slices.ContainsFunc(a.Addrs, netip.Addr.Is6) }

// errNoNetNS is wrapped when the container's network namespace does not exist.
var errNoNetNS = errors.New("network namespace does not exist")

// openNetNS opens a network namespace by path.
func openNetNS(path string) (netns.NsHandle, error) {
	h, err := netns.GetFromPath(path)
	if errors.Is(err, os.ErrNotExist) {
		return h, fmt.Errorf("%s: %w", path, errNoNetNS)
	}
	if err != nil {
		return h, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	return h, nil
}

// containerHandle opens a netlink handle inside the attachment's namespace.
func (a *attachment) containerHandle() (*netlink.Handle, error) {
	ns, err := openNetNS(a.NetNS)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", a.NetNS, err)
	}
	return h, nil
}

// hostSysctls are the settings the host end needs, sorted by path: felix's per-interface
// ones for a workload with these addresses (proxy_arp and proxy_delay for IPv4;
// disable_ipv6 and proxy_ndp for IPv6), forwarding on the interface for each family, and
// for IPv6 no duplicate address detection, so that its link-local address, the workload's
// gateway, is usable at once.
func hostSysctls(veth string, addrs []netip.Addr) []felix.Sysctl {
	var out []felix.Sysctl
	for _, s := range felix.DesiredSysctls(felix.LocalState{Workloads: []felix.Workload{{Name: veth, Interface: veth, Addrs: addrs}}}) {
		if s.Interface != "" {
			out = append(out, s)
		}
	}
	conf := func(family, key string) felix.Sysctl {
		return felix.Sysctl{Path: "net/" + family + "/conf/" + veth + "/" + key, Value: "1", Interface: veth}
	}
	if slices.ContainsFunc(addrs, netip.Addr.Is4) {
		out = append(out, conf("ipv4", "forwarding"))
	}
	if slices.ContainsFunc(addrs, netip.Addr.Is6) {
		dad := conf("ipv6", "accept_dad")
		dad.Value = "0"
		out = append(out, conf("ipv6", "forwarding"), dad)
	}
	slices.SortFunc(out, func(a, b felix.Sysctl) int { return strings.Compare(a.Path, b.Path) })
	return out
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + path)
	return strings.TrimSpace(string(b)), err
}

// linkInfo is what create reports of the container end.
type linkInfo struct {
	MAC string
	MTU int
}

// create makes the attachment; the container must not have IfName yet. A link already
// named HostVeth on the host belongs to an earlier sandbox of the same workload (the name
// derives from the workload) and is deleted first. On error, what create made is removed.
func (a *attachment) create(log *slog.Logger) (li linkInfo, err error) {
	ns, err := openNetNS(a.NetNS)
	if err != nil {
		return li, err
	}
	defer ns.Close()
	ch, err := netlink.NewHandleAt(ns)
	if err != nil {
		return li, fmt.Errorf("netlink in %s: %w", a.NetNS, err)
	}
	defer ch.Close()
	if _, err := ch.LinkByName(a.IfName); err == nil {
		return li, errorf(codeConflict, "the container (%s) already has an interface %s", a.NetNS, a.IfName)
	}
	if old, err := netlink.LinkByName(a.HostVeth); err == nil {
		log.Warn("deleting a host interface left by an earlier sandbox of the workload", "interface", a.HostVeth, "index", old.Attrs().Index)
		if err := netlink.LinkDel(old); err != nil {
			return li, fmt.Errorf("delete stale host interface %s: %w", a.HostVeth, err)
		}
	}

	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr = a.HostVeth, a.MTU, hostMAC
	veth := netlink.NewVeth(la)
	veth.PeerName, veth.PeerNamespace = a.IfName, netlink.NsFd(int(ns))
	if err := netlink.LinkAdd(veth); err != nil {
		return li, fmt.Errorf("create veth %s (container end %s in %s): %w", a.HostVeth, a.IfName, a.NetNS, err)
	}
	host, err := netlink.LinkByName(a.HostVeth)
	if err != nil {
		return li, errors.Join(fmt.Errorf("find the new veth %s: %w", a.HostVeth, err), a.remove())
	}
	defer func() {
		if err != nil {
			// The container end goes with the host end.
			if derr := netlink.LinkDel(host); derr != nil && !errors.As(derr, new(netlink.LinkNotFoundError)) {
				err = errors.Join(err, fmt.Errorf("undo: delete veth %s: %w", a.HostVeth, derr))
			}
		}
	}()
	if err := a.configureHost(host); err != nil {
		return li, err
	}
	cont, err := ch.LinkByName(a.IfName)
	if err != nil {
		return li, fmt.Errorf("find %s in %s: %w", a.IfName, a.NetNS, err)
	}
	if err := a.configureContainer(ch, cont); err != nil {
		return li, fmt.Errorf("configure %s in %s: %w", a.IfName, a.NetNS, err)
	}
	return linkInfo{MAC: cont.Attrs().HardwareAddr.String(), MTU: cont.Attrs().MTU}, nil
}

// configureHost sets the host end's sysctls and brings it up. For IPv6 it also fixes
// the link-local address to the one derived from hostMAC (EUI-64), which the workload's
// default route names, whatever the host's default address generation mode.
func (a *attachment) configureHost(host netlink.Link) error {
	for _, s := range hostSysctls(a.HostVeth, a.Addrs) {
		if err := os.WriteFile("/proc/sys/"+s.Path, []byte(s.Value), 0); err != nil {
			return fmt.Errorf("set sysctl %s: %w", s, err)
		}
	}
	if a.has6() {
		if err := netlink.LinkSetIP6AddrGenMode(host, 0); err != nil { // IN6_ADDR_GEN_MODE_EUI64
			return fmt.Errorf("%s: IPv6 address generation mode: %w", a.HostVeth, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("set %s up: %w", a.HostVeth, err)
	}
	return nil
}

// configureContainer gives the container end its addresses (IPv6 without duplicate
// address detection: the link has two ends, and the other holds no global address), brings
// it up and adds its routes.
func (a *attachment) configureContainer(h *netlink.Handle, cont netlink.Link) error {
	for _, addr := range a.Addrs {
		na := &netlink.Addr{IPNet: hostPrefix(addr)}
		if addr.Is6() {
			na.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(cont, na); err != nil {
			return fmt.Errorf("add address %s: %w", na.IPNet, err)
		}
	}
	if err := h.LinkSetUp(cont); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	for _, r := range containerRoutes(a.Addrs) {
		nr := &netlink.Route{LinkIndex: cont.Attrs().Index, Dst: prefixIPNet(r.Dst)}
		if r.GW.IsValid() {
			nr.Gw = r.GW.AsSlice()
		} else {
			nr.Scope = netlink.SCOPE_LINK
		}
		if err := h.RouteAdd(nr); err != nil {
			return fmt.Errorf("add route %s: %w", r, err)
		}
	}
	return nil
}

// route is a route inside the container: a gateway route, or a link route without GW.
type route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

func (r route) String() string {
	if r.GW.IsValid() {
		return fmt.Sprintf("%s via %s", r.Dst, r.GW)
	}
	return fmt.Sprintf("%s scope link", r.Dst)
}

// containerRoutes are the routes ADD adds in the container, in order: for IPv4 a link
// route to 169.254.1.1 and the default route through it, for IPv6 the default route
// through the host end's link-local address.
func containerRoutes(addrs []netip.Addr) []route {
	var out []route
	if slices.ContainsFunc(addrs, netip.Addr.Is4) {
		out = append(out,
			route{Dst: netip.PrefixFrom(gatewayV4, 32)},
			route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), GW: gatewayV4})
	}
	if slices.ContainsFunc(addrs, netip.Addr.Is6) {
		out = append(out, route{Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0), GW: gatewayV6})
	}
	return out
}

// remove deletes the container end, and with it the host end. A namespace or interface
// that does not exist is not an error: there is nothing to remove.
func (a *attachment) remove() error {
	h, err := a.containerHandle()
	if errors.Is(err, errNoNetNS) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(a.IfName)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", a.IfName, a.NetNS, err)
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s in %s: %w", a.IfName, a.NetNS, err)
	}
	return nil
}

// observed is what inspect found of an attachment in the kernel.
type observed struct {
	Container endState
	Host      endState
	// ContainerAddrs are the container end's addresses other than IPv6 link-local ones.
	ContainerAddrs []netip.Prefix
	// ContainerRoutes are the routes through the container end, in the main table.
	ContainerRoutes []route
	// HostAddrs are the host end's addresses (link-local ones included).
	HostAddrs []netip.Prefix
	// Sysctls are the values of hostSysctls' paths; a missing file is "".
	Sysctls map[string]string
	// HostRoutes are the destinations of felix's routes (felix.RouteProtocol) through the
	// host end: what makes the workload reachable, installed by the node's agent.
	HostRoutes []netip.Prefix
}

// endState is one end of the veth.
type endState struct {
	Exists bool
	Veth   bool
	Up     bool
	Index  int
	Peer   int // the other end's index (IFLA_LINK)
	MAC    string
	MTU    int
}

func stateOf(l netlink.Link) endState {
	a := l.Attrs()
	_, isVeth := l.(*netlink.Veth)
	return endState{Exists: true, Veth: isVeth, Up: a.Flags&net.FlagUp != 0, Index: a.Index, Peer: a.ParentIndex, MAC: a.HardwareAddr.String(), MTU: a.MTU}
}

// inspect reads the attachment back from the kernel. The container's namespace must
// exist (errNoNetNS otherwise); missing interfaces are reported in observed.
func (a *attachment) inspect() (*observed, error) {
	ch, err := a.containerHandle()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	o := &observed{Sysctls: map[string]string{}}
	if l, err := ch.LinkByName(a.IfName); err == nil {
		o.Container = stateOf(l)
		addrs, err := ch.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s in %s: %w", a.IfName, a.NetNS, err)
		}
		for _, na := range addrs {
			if p := ipNetPrefix(na.IPNet); p.IsValid() && !p.Addr().IsLinkLocalUnicast() {
				o.ContainerAddrs = append(o.ContainerAddrs, p)
			}
		}
		routes, err := ch.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list routes of %s in %s: %w", a.IfName, a.NetNS, err)
		}
		for _, nr := range routes {
			r := route{Dst: ipNetPrefix(nr.Dst)}
			if !r.Dst.IsValid() { // the default route has no Dst
				r.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
				if nr.Family == netlink.FAMILY_V6 {
					r.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
				}
			}
			if gw, ok := netip.AddrFromSlice(nr.Gw); ok {
				r.GW = gw.Unmap()
			}
			o.ContainerRoutes = append(o.ContainerRoutes, r)
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("find %s in %s: %w", a.IfName, a.NetNS, err)
	}

	if l, err := netlink.LinkByName(a.HostVeth); err == nil {
		o.Host = stateOf(l)
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", a.HostVeth, err)
		}
		for _, na := range addrs {
			if p := ipNetPrefix(na.IPNet); p.IsValid() {
				o.HostAddrs = append(o.HostAddrs, p)
			}
		}
		filter := &netlink.Route{LinkIndex: o.Host.Index, Protocol: netlink.RouteProtocol(felix.RouteProtocol)}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, fmt.Errorf("list routes through %s: %w", a.HostVeth, err)
		}
		for _, nr := range routes {
			o.HostRoutes = append(o.HostRoutes, ipNetPrefix(nr.Dst))
		}
		for _, s := range hostSysctls(a.HostVeth, a.Addrs) {
			v, err := readSysctl(s.Path)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("read sysctl %s: %w", s.Path, err)
			}
			o.Sysctls[s.Path] = v
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("find %s: %w", a.HostVeth, err)
	}
	return o, nil
}

// differences lists how o differs from the attachment as ADD makes it, one sentence each;
// none means it is intact. Routes others added (a chained plugin) are allowed.
func (a *attachment) differences(o *observed) []string {
	var d []string
	add := func(format string, args ...any) { d = append(d, fmt.Sprintf(format, args...)) }
	c, h := o.Container, o.Host
	if !c.Exists {
		add("the container has no interface %s", a.IfName)
	}
	if !h.Exists {
		add("the host has no interface %s", a.HostVeth)
	}
	if !c.Exists || !h.Exists {
		return d
	}
	if !c.Veth || !h.Veth || c.Peer != h.Index || h.Peer != c.Index {
		add("%s in the container and %s on the host are not the two ends of one veth", a.IfName, a.HostVeth)
	}
	if !c.Up {
		add("%s in the container is down", a.IfName)
	}
	if !h.Up {
		add("%s on the host is down", a.HostVeth)
	}
	if a.MTU != 0 && c.MTU != a.MTU {
		add("%s has MTU %d, want %d", a.IfName, c.MTU, a.MTU)
	}
	if h.MAC != hostMAC.String() {
		add("%s has MAC %s, want %s", a.HostVeth, h.MAC, hostMAC)
	}
	var want []netip.Prefix
	for _, addr := range a.Addrs {
		want = append(want, netip.PrefixFrom(addr, addr.BitLen()))
	}
	for _, p := range want {
		if !slices.Contains(o.ContainerAddrs, p) {
			add("%s lacks address %s", a.IfName, p)
		}
	}
	for _, p := range o.ContainerAddrs {
		if !slices.Contains(want, p) {
			add("%s has address %s, which is not the workload's", a.IfName, p)
		}
	}
	for _, r := range containerRoutes(a.Addrs) {
		if !slices.Contains(o.ContainerRoutes, r) {
			add("the container lacks route %s dev %s", r, a.IfName)
		}
	}
	for _, p := range o.HostAddrs {
		if p.Addr().Is4() || !p.Addr().IsLinkLocalUnicast() {
			add("%s on the host has address %s; it should have none", a.HostVeth, p)
		}
	}
	if a.has6() && !slices.Contains(o.HostAddrs, netip.PrefixFrom(gatewayV6, 64)) {
		add("%s on the host lacks link-local address %s, the workload's IPv6 gateway", a.HostVeth, gatewayV6)
	}
	for _, s := range hostSysctls(a.HostVeth, a.Addrs) {
		if v := o.Sysctls[s.Path]; v != s.Value {
			add("sysctl %s is %q, want %q", s.Path, v, s.Value)
		}
	}
	return d
}

// missingHostRoutes lists the workload addresses the host has no felix route to through
// the host end. The node's agent installs those routes some time after ADD.
func (a *attachment) missingHostRoutes(o *observed) []string {
	var d []string
	for _, addr := range a.Addrs {
		if p := netip.PrefixFrom(addr, addr.BitLen()); !slices.Contains(o.HostRoutes, p) {
			d = append(d, fmt.Sprintf("the host has no route to %s through %s (protocol %d): is tabby-node running on this node?", p, a.HostVeth, felix.RouteProtocol))
		}
	}
	return d
}

// hostPrefix is a as a single-address net.IPNet (/32 or /128).
func hostPrefix(a netip.Addr) *net.IPNet {
	return prefixIPNet(netip.PrefixFrom(a, a.BitLen()))
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// ipNetPrefix converts at the netlink edge; nil or malformed is the zero Prefix.
func ipNetPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, ones)
}

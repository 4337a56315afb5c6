package felix

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultExcludedInterfaces are the interface names first-found and skip-interface= pass
// over: Calico's list (bridges, veths, tunnels and other virtual devices of container
// runtimes and CNI plugins) plus tabby's own. Each matches a whole name.
var DefaultExcludedInterfaces = []string{
	`docker.*`, `cbr.*`, `dummy.*`, `podman.*`, `virbr.*`, `lxcbr.*`, `veth.*`, `lo.*`,
	`cali.*`, `tunl.*`, `flannel.*`, `kube-ipvs.*`, `cni.*`, `nodelocaldns.*`,
	`vxlan\.calico.*`, `vxlan-v6\.calico.*`, `wireguard\.cali.*`, `wg-v6\.cali.*`,
	`tabby.*`, `vxlan\.tabby`, `vxlan-v6\.tabby`,
}

type methodKind uint8

const (
	methodNone methodKind = iota
	methodFirstFound
	methodInterface
	methodSkipInterface
	methodCanReach
	methodCIDR
)

const methodsWanted = "want first-found, interface=REGEX, skip-interface=REGEX, can-reach=IP, cidr=CIDR or none"

// AutodetectMethod is a parsed --ip-autodetection-method or --ip6-autodetection-method
// value, as Calico's IP_AUTODETECTION_METHOD:
//
//   - first-found: the first global address, in interface index order, on an up interface
//     whose name is not in DefaultExcludedInterfaces.
//   - interface=REGEX[,REGEX]: the first global address on an up interface whose whole name
//     matches one of the regular expressions (interface=eth.* for eth0, eth1, ...).
//   - skip-interface=REGEX[,REGEX]: first-found, also passing over these names.
//   - can-reach=IP: the source address the kernel's routing picks to reach IP (no packet
//     is sent).
//   - cidr=CIDR[,CIDR]: the first global address, on any up interface, inside one of the CIDRs.
//   - none: no address of this family.
type AutodetectMethod struct {
	kind    methodKind
	version int
	text    string
	names   []*regexp.Regexp // interface=; skip-interface= adds its own to the defaults
	reach   netip.Addr
	cidrs   []netip.Prefix
}

// ParseAutodetectMethod parses s as a method for IP version 4 or 6. Errors say what is
// wrong with s but not which flag it came from; the caller adds that:
//
//	m, err := felix.ParseAutodetectMethod(v, 4)
//	if err != nil {
//		return fmt.Errorf("--ip-autodetection-method %q: %w", v, err)
//	}
func ParseAutodetectMethod(s string, version int) (AutodetectMethod, error) {
	if version != 4 && version != 6 {
		return AutodetectMethod{}, fmt.Errorf("IP version %d: want 4 or 6", version)
	}
	m := AutodetectMethod{version: version, text: s}
	name, arg, hasArg := strings.Cut(s, "=")
	if name == "" {
		return m, errors.New("empty; " + methodsWanted)
	}
	switch name {
	case "none", "first-found":
		if hasArg {
			return m, fmt.Errorf("%s takes no value", name)
		}
		m.kind = methodNone
		if name == "first-found" {
			m.kind = methodFirstFound
			m.names = mustCompileNames(DefaultExcludedInterfaces)
		}
	case "interface", "skip-interface":
		res, err := compileNames(name, arg)
		if err != nil {
			return m, err
		}
		m.kind, m.names = methodInterface, res
		if name == "skip-interface" {
			m.kind, m.names = methodSkipInterface, append(mustCompileNames(DefaultExcludedInterfaces), res...)
		}
	case "can-reach":
		a, err := netip.ParseAddr(strings.TrimSpace(arg))
		if err != nil {
			return m, fmt.Errorf("can-reach=%s: %q is not an IP address", arg, arg)
		}
		if ipVersion(a) != version {
			return m, fmt.Errorf("can-reach=%s: not an IPv%d address", arg, version)
		}
		m.kind, m.reach = methodCanReach, a.Unmap()
	case "cidr":
		for _, c := range splitList(arg) {
			p, err := netip.ParsePrefix(c)
			switch {
			case err != nil:
				return m, fmt.Errorf("cidr=%s: %q is not a CIDR", arg, c)
			case p.Masked() != p:
				return m, fmt.Errorf("cidr=%s: %s has host bits set; did you mean %s?", arg, c, p.Masked())
			case ipVersion(p.Addr()) != version:
				return m, fmt.Errorf("cidr=%s: %s is not an IPv%d CIDR", arg, c, version)
			}
			m.cidrs = append(m.cidrs, p)
		}
		if len(m.cidrs) == 0 {
			return m, fmt.Errorf("cidr= needs at least one CIDR")
		}
		m.kind = methodCIDR
	default:
		return m, fmt.Errorf("unknown method %q; %s", name, methodsWanted)
	}
	return m, nil
}

// String returns the method as it was written.
func (m AutodetectMethod) String() string { return m.text }

// Enabled reports whether the method detects an address (it is not "none").
func (m AutodetectMethod) Enabled() bool { return m.kind != methodNone }

func compileNames(method, arg string) ([]*regexp.Regexp, error) {
	list := splitList(arg)
	if len(list) == 0 {
		return nil, fmt.Errorf("%s= needs at least one regular expression", method)
	}
	res := make([]*regexp.Regexp, len(list))
	for i, s := range list {
		re, err := regexp.Compile(`^(?:` + s + `)$`)
		if err != nil {
			return nil, fmt.Errorf("%s=%s: bad regular expression %q: %w", method, arg, s, err)
		}
		res[i] = re
	}
	return res, nil
}

func mustCompileNames(list []string) []*regexp.Regexp {
	res, err := compileNames("default", strings.Join(list, ","))
	if err != nil {
		panic(err)
	}
	return res
}

// splitList splits a comma-separated list, dropping spaces around items and empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func ipVersion(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// NodeAddress is a detected node address.
type NodeAddress struct {
	// Prefix is the address with its subnet's length, host bits kept (10.0.0.5/24), as
	// Node.spec.bgp.ipv4Address holds it.
	Prefix    netip.Prefix
	Interface string
}

// DetectNodeAddress finds the node's address by m in h's network namespace (nil h: the
// current one). For "none" it returns a zero NodeAddress and no error.
func DetectNodeAddress(h *netlink.Handle, m AutodetectMethod) (NodeAddress, error) {
	if m.kind == methodNone {
		return NodeAddress{}, nil
	}
	if h == nil {
		h = &netlink.Handle{}
	}
	ifaces, err := hostInterfaces(h, m.version)
	if err != nil {
		return NodeAddress{}, err
	}
	return m.selectAddress(ifaces, func(dst netip.Addr) (netip.Addr, error) {
		routes, err := h.RouteGet(dst.AsSlice())
		if err != nil {
			return netip.Addr{}, fmt.Errorf("route lookup: %w", err)
		}
		for _, r := range routes {
			if src, ok := netip.AddrFromSlice(r.Src); ok {
				return src.Unmap(), nil
			}
		}
		return netip.Addr{}, errors.New("the route has no source address")
	})
}

// hostInterface is an interface as autodetection sees it.
type hostInterface struct {
	Name  string
	Index int
	Up    bool
	// Addrs are the interface's global-scope addresses of one family, with prefix lengths.
	Addrs []netip.Prefix
}

func hostInterfaces(h *netlink.Handle, version int) ([]hostInterface, error) {
	links, err := listLinks(h)
	if err != nil {
		return nil, err
	}
	family := netlink.FAMILY_V4
	if version == 6 {
		family = netlink.FAMILY_V6
	}
	var addrs []netlink.Addr
	err = retryDump(func() (err error) {
		addrs, err = h.AddrList(nil, family)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list IPv%d addresses: %w", version, err)
	}
	byIndex := make(map[int]*hostInterface, len(links.byName))
	for name, l := range links.byName {
		byIndex[l.index] = &hostInterface{Name: name, Index: l.index, Up: l.up}
	}
	for _, a := range addrs {
		hi := byIndex[a.LinkIndex]
		if hi == nil || a.Scope != unix.RT_SCOPE_UNIVERSE || a.Flags&(unix.IFA_F_DADFAILED|unix.IFA_F_DEPRECATED) != 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		hi.Addrs = append(hi.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	out := make([]hostInterface, 0, len(byIndex))
	for _, hi := range byIndex {
		out = append(out, *hi)
	}
	return out, nil
}

// selectAddress applies m to ifaces; routeSource answers can-reach's route lookup.
func (m AutodetectMethod) selectAddress(ifaces []hostInterface, routeSource func(netip.Addr) (netip.Addr, error)) (NodeAddress, error) {
	ifaces = slices.Clone(ifaces)
	slices.SortFunc(ifaces, func(a, b hostInterface) int { return cmp.Compare(a.Index, b.Index) })

	if m.kind == methodCanReach {
		src, err := routeSource(m.reach)
		if err != nil {
			return NodeAddress{}, fmt.Errorf("%s: %w", m, err)
		}
		for _, hi := range ifaces {
			for _, p := range hi.Addrs {
				if p.Addr() == src {
					return NodeAddress{Prefix: p, Interface: hi.Name}, nil
				}
			}
		}
		return NodeAddress{}, fmt.Errorf("%s: the kernel reaches %s from %s, which no interface carries as a global address", m, m.reach, src)
	}

	var notes []string
	for _, hi := range ifaces {
		matched := slices.ContainsFunc(m.names, func(re *regexp.Regexp) bool { return re.MatchString(hi.Name) })
		if matched != (m.kind == methodInterface) {
			continue // excluded by name, or not included
		}
		if !hi.Up {
			notes = append(notes, hi.Name+" is down")
			continue
		}
		for _, p := range hi.Addrs {
			if ipVersion(p.Addr()) == m.version && p.Addr().IsGlobalUnicast() && m.inCIDRs(p.Addr()) {
				return NodeAddress{Prefix: p, Interface: hi.Name}, nil
			}
		}
		notes = append(notes, hi.Name+" has none")
	}
	what := fmt.Sprintf("no global IPv%d address", m.version)
	if m.kind == methodCIDR {
		what += " inside " + strings.Join(mapString(m.cidrs), " or ")
	}
	if len(notes) == 0 {
		if m.kind == methodInterface {
			return NodeAddress{}, fmt.Errorf("%s: no interface has a matching name", m)
		}
		return NodeAddress{}, fmt.Errorf("%s: %s: no interface to look at", m, what)
	}
	return NodeAddress{}, fmt.Errorf("%s: %s on an up interface (%s)", m, what, strings.Join(notes, ", "))
}

func (m AutodetectMethod) inCIDRs(a netip.Addr) bool {
	return len(m.cidrs) == 0 || slices.ContainsFunc(m.cidrs, func(p netip.Prefix) bool { return p.Contains(a) })
}

func mapString[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

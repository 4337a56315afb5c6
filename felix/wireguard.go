package felix

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuard between nodes, as Calico's wireguardEnabled: a WireGuardDevice with one peer
// per other node that published a key, allowed the addresses of that node's blocks; the
// routes to those blocks through the device in a table of their own (WireGuardTable);
// and a rule that looks that table up first for every packet but WireGuard's own
// (marked WireGuardMark), so the main table's BGP or tunnel routes stay as they are and
// apply to nodes without WireGuard.
const (
	WireGuardDevice       = "wireguard.tabby"
	WireGuardPort         = 51820
	WireGuardOverhead     = 60 // IPv4 20, UDP 8, WireGuard 32: Calico's figure
	WireGuardTable        = 51820
	WireGuardRulePriority = 99
	WireGuardMark         = 0x100000
)

// WriterWireGuard is the observer's name for WireGuardReconciler.Apply.
const WriterWireGuard = "wireguard"

// ErrNoWireGuard says the kernel has no wireguard support: WireGuardDevice cannot be
// created.
var ErrNoWireGuard = errors.New("the kernel has no wireguard support")

// WireGuardPeer is another node that published its public key.
type WireGuardPeer struct {
	Node      string
	PublicKey wgtypes.Key
	Endpoint  netip.AddrPort // its underlay address and WireGuard port
	// AllowedIPs are its blocks: what it may send from, and what is routed to it.
	AllowedIPs []netip.Prefix
}

// WireGuardConfig is a node's desired WireGuard state.
type WireGuardConfig struct {
	// Addr is the device's own address (a /32; invalid: none yet): the source of the
	// node's own traffic through it, inside one of its blocks, so peers accept it.
	Addr       netip.Addr
	PrivateKey wgtypes.Key
	ListenPort int
	MTU        int
	Peers      []WireGuardPeer
}

// WireGuardNode is what DesiredWireGuardPeers reads of a node.
type WireGuardNode struct {
	Name      string
	Addr      netip.Addr // underlay IPv4 address; invalid: none
	PublicKey string     // base64, as published; empty: no WireGuard
}

// DesiredWireGuardPeers are the peers of node self: every other node with a valid key and
// an underlay address, allowed its IPv4 blocks (blocks maps each block to its node),
// sorted by node. A key that does not parse is skipped and named in problems. Pure.
func DesiredWireGuardPeers(self string, nodes []WireGuardNode, blocks map[netip.Prefix]string, port int) (peers []WireGuardPeer, problems []string) {
	byNode := map[string][]netip.Prefix{}
	for b, n := range blocks {
		if b.Addr().Is4() {
			byNode[n] = append(byNode[n], b)
		}
	}
	for _, n := range nodes {
		if n.Name == self || n.PublicKey == "" || !n.Addr.Is4() {
			continue
		}
		key, err := wgtypes.ParseKey(n.PublicKey)
		if err != nil {
			problems = append(problems, fmt.Sprintf("node %s: wireguard public key: %v", n.Name, err))
			continue
		}
		allowed := byNode[n.Name]
		slices.SortFunc(allowed, comparePrefix)
		peers = append(peers, WireGuardPeer{Node: n.Name, PublicKey: key, Endpoint: netip.AddrPortFrom(n.Addr, uint16(port)), AllowedIPs: allowed})
	}
	slices.SortFunc(peers, func(a, b WireGuardPeer) int { return cmp.Compare(a.Node, b.Node) })
	return peers, problems
}

// WireGuardRoutes are the WireGuardTable routes of cfg: each peer's allowed prefixes
// through WireGuardDevice. Pure.
func WireGuardRoutes(cfg *WireGuardConfig) []Route {
	var out []Route
	if cfg == nil {
		return nil
	}
	for _, p := range cfg.Peers {
		for _, a := range p.AllowedIPs {
			out = append(out, Route{Dst: a, Type: RouteUnicast, Interface: WireGuardDevice})
		}
	}
	return out
}

// WireGuardReconciler keeps WireGuardDevice, its peers, its routing table and its rule
// as a WireGuardConfig says, or removes them all (nil). It is not safe for concurrent
// use.
type WireGuardReconciler struct {
	// Observe, if set, is told of every Apply, as writer WriterWireGuard.
	Observe ApplyObserver

	h      *netlink.Handle
	routes *RouteReconciler
	// newClient opens the WireGuard control client, in the reconciler's namespace: the
	// generic netlink socket belongs to the namespace it was opened in.
	newClient func() (*wgctrl.Client, error)
	wg        *wgctrl.Client
	log       *slog.Logger
}

// NewWireGuardReconciler works through h (nil: the current network namespace); newClient
// opens a wgctrl client in that namespace (nil: wgctrl.New, in the current one).
func NewWireGuardReconciler(h *netlink.Handle, newClient func() (*wgctrl.Client, error), log *slog.Logger) *WireGuardReconciler {
	if h == nil {
		h = &netlink.Handle{}
	}
	if newClient == nil {
		newClient = wgctrl.New
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &WireGuardReconciler{h: h, routes: NewRouteReconciler(h, WireGuardTable, log), newClient: newClient, log: log}
}

// Apply makes the device, its peers, the table's routes and the rule match cfg; nil
// removes them. An error wrapping ErrNoWireGuard means the kernel cannot. It reports
// how many writes it made.
func (r *WireGuardReconciler) Apply(cfg *WireGuardConfig) (int, error) {
	start := time.Now()
	n, err := r.apply(cfg)
	r.Observe.observeSince(WriterWireGuard, start, err)
	return n, err
}

// Close closes the control client.
func (r *WireGuardReconciler) Close() error {
	if r.wg == nil {
		return nil
	}
	return r.wg.Close()
}

func (r *WireGuardReconciler) apply(cfg *WireGuardConfig) (int, error) {
	if cfg == nil {
		return r.remove()
	}
	writes := 0
	l, err := r.h.LinkByName(WireGuardDevice)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = WireGuardDevice, cfg.MTU
		if err := r.h.LinkAdd(&netlink.Wireguard{LinkAttrs: la}); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				return 0, fmt.Errorf("create %s: %w (%v)", WireGuardDevice, ErrNoWireGuard, err)
			}
			return 0, fmt.Errorf("create %s: %w", WireGuardDevice, err)
		}
		writes++
		if l, err = r.h.LinkByName(WireGuardDevice); err != nil {
			return writes, fmt.Errorf("look up %s: %w", WireGuardDevice, err)
		}
	case err != nil:
		return 0, fmt.Errorf("look up %s: %w", WireGuardDevice, err)
	case l.Type() != "wireguard":
		return 0, fmt.Errorf("%s exists and is a %s device, not wireguard", WireGuardDevice, l.Type())
	}
	if l.Attrs().MTU != cfg.MTU {
		if err := r.h.LinkSetMTU(l, cfg.MTU); err != nil {
			return writes, fmt.Errorf("set %s mtu %d: %w", WireGuardDevice, cfg.MTU, err)
		}
		writes++
	}
	n, err := r.configure(cfg)
	writes += n
	if err != nil {
		return writes, err
	}
	n, err = r.setAddr(l, cfg.Addr)
	writes += n
	if err != nil {
		return writes, err
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := r.h.LinkSetUp(l); err != nil {
			return writes, fmt.Errorf("set %s up: %w", WireGuardDevice, err)
		}
		writes++
	}
	st, err := r.routes.Apply(WireGuardRoutes(cfg))
	writes += st.Added + st.Replaced + st.Deleted
	if err != nil {
		return writes, fmt.Errorf("table %d: %w", WireGuardTable, err)
	}
	if len(st.Skipped) > 0 {
		return writes, fmt.Errorf("table %d: routes not programmed: %v", WireGuardTable, st.Skipped)
	}
	n, err = r.ensureRule(true)
	return writes + n, err
}

// setAddr makes addr (a /32) the device's only IPv4 address; invalid: none.
func (r *WireGuardReconciler) setAddr(l netlink.Link, addr netip.Addr) (int, error) {
	have, err := r.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return 0, fmt.Errorf("list %s's addresses: %w", WireGuardDevice, err)
	}
	writes, found := 0, false
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP)
		if ones, _ := a.Mask.Size(); ip.Unmap() == addr && ones == 32 {
			found = true
			continue
		}
		if err := r.h.AddrDel(l, &a); err != nil {
			return writes, fmt.Errorf("remove %s from %s: %w", a.IPNet, WireGuardDevice, err)
		}
		writes++
	}
	if addr.IsValid() && !found {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := r.h.AddrAdd(l, a); err != nil {
			return writes, fmt.Errorf("add %s/32 to %s: %w", addr, WireGuardDevice, err)
		}
		writes++
	}
	return writes, nil
}

// configure sets the device's key, port, mark and peers when they differ.
func (r *WireGuardReconciler) configure(cfg *WireGuardConfig) (int, error) {
	if r.wg == nil {
		wg, err := r.newClient()
		if err != nil {
			return 0, fmt.Errorf("wireguard control: %w", err)
		}
		r.wg = wg
	}
	dev, err := r.wg.Device(WireGuardDevice)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", WireGuardDevice, err)
	}
	if sameDevice(dev, cfg) {
		return 0, nil
	}
	mark := WireGuardMark
	peers := make([]wgtypes.PeerConfig, len(cfg.Peers))
	for i, p := range cfg.Peers {
		ep := net.UDPAddrFromAddrPort(p.Endpoint)
		allowed := make([]net.IPNet, len(p.AllowedIPs))
		for j, a := range p.AllowedIPs {
			allowed[j] = net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}
		}
		peers[i] = wgtypes.PeerConfig{PublicKey: p.PublicKey, Endpoint: ep, ReplaceAllowedIPs: true, AllowedIPs: allowed}
	}
	err = r.wg.ConfigureDevice(WireGuardDevice, wgtypes.Config{PrivateKey: &cfg.PrivateKey, ListenPort: &cfg.ListenPort,
		FirewallMark: &mark, ReplacePeers: true, Peers: peers})
	if err != nil {
		return 0, fmt.Errorf("configure %s: %w", WireGuardDevice, err)
	}
	return 1, nil
}

// sameDevice reports whether dev is configured as cfg says.
func sameDevice(dev *wgtypes.Device, cfg *WireGuardConfig) bool {
	if dev.PrivateKey != cfg.PrivateKey || dev.ListenPort != cfg.ListenPort || dev.FirewallMark != WireGuardMark || len(dev.Peers) != len(cfg.Peers) {
		return false
	}
	have := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range dev.Peers {
		have[p.PublicKey] = p
	}
	for _, want := range cfg.Peers {
		p, ok := have[want.PublicKey]
		if !ok || p.Endpoint == nil || p.Endpoint.AddrPort() != want.Endpoint || len(p.AllowedIPs) != len(want.AllowedIPs) {
			return false
		}
		var allowed []netip.Prefix
		for _, a := range p.AllowedIPs {
			ip, _ := netip.AddrFromSlice(a.IP)
			ones, _ := a.Mask.Size()
			allowed = append(allowed, netip.PrefixFrom(ip.Unmap(), ones))
		}
		slices.SortFunc(allowed, comparePrefix)
		if !slices.Equal(allowed, want.AllowedIPs) {
			return false
		}
	}
	return true
}

// wireGuardRule: not fwmark WireGuardMark/WireGuardMark lookup WireGuardTable, pref
// WireGuardRulePriority.
func wireGuardRule() *netlink.Rule {
	rule := netlink.NewRule()
	rule.Family = unix.AF_INET
	rule.Priority = WireGuardRulePriority
	rule.Table = WireGuardTable
	rule.Mark = WireGuardMark
	rule.Mask = &[]uint32{WireGuardMark}[0]
	rule.Invert = true
	return rule
}

// ensureRule adds (want) or deletes the rule; it reports the writes.
func (r *WireGuardReconciler) ensureRule(want bool) (int, error) {
	rules, err := r.h.RuleListFiltered(unix.AF_INET, &netlink.Rule{Table: WireGuardTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, fmt.Errorf("list rules: %w", err)
	}
	found := false
	writes := 0
	for _, rule := range rules {
		ours := rule.Priority == WireGuardRulePriority && rule.Invert && rule.Mark == WireGuardMark && rule.Mask != nil && *rule.Mask == WireGuardMark
		if ours && want && !found {
			found = true
			continue
		}
		if err := r.h.RuleDel(&rule); err != nil && !errors.Is(err, unix.ENOENT) {
			return writes, fmt.Errorf("delete rule %s: %w", rule, err)
		}
		writes++
	}
	if want && !found {
		if err := r.h.RuleAdd(wireGuardRule()); err != nil {
			return writes, fmt.Errorf("add rule not fwmark %#x lookup %d: %w", WireGuardMark, WireGuardTable, err)
		}
		writes++
	}
	return writes, nil
}

// remove deletes the rule, the table's routes and the device, whichever exist.
func (r *WireGuardReconciler) remove() (int, error) {
	writes, err := r.ensureRule(false)
	if err != nil {
		return writes, err
	}
	l, err := r.h.LinkByName(WireGuardDevice)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		return writes, fmt.Errorf("look up %s: %w", WireGuardDevice, err)
	default:
		// Deleting the device takes its routes along.
		if err := r.h.LinkDel(l); err != nil {
			return writes, fmt.Errorf("delete %s: %w", WireGuardDevice, err)
		}
		writes++
	}
	st, err := r.routes.Apply(nil)
	return writes + st.Deleted, err
}

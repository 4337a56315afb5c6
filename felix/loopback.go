package felix

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// LoopbackLabel marks the IPv4 addresses tabby puts on lo (the node-local DNS server's), so
// that it removes only its own. This kernel has no dummy links, and lo serves as well: an
// address on lo is local to the node, never answered for on the wire.
const LoopbackLabel = "lo:tby"

// LoopbackProto marks the IPv6 ones, which have no labels: it is their address protocol
// (IFA_PROTO, Linux 5.18+), tabby's route protocol number. The kernel keeps it with the
// address, so an agent that restarts knows its own as it knows the labelled IPv4 ones;
// a flag would not do, as anyone may set nodad or the others. IPv4 addresses carry it
// too, but are told by their label, the only mark of those older agents added.
// vishvananda/netlink v1.3.1 neither sets nor reads the attribute: the reconciler writes
// its own requests.
const LoopbackProto = RouteProtocol

// ifaProto is IFA_PROTO, which golang.org/x/sys/unix does not name yet.
const ifaProto = 11

// loIndex is lo's interface index, the same in every network namespace (the kernel's
// LOOPBACK_IFINDEX).
const loIndex = 1

// WriterLoopback is the observer's name for LoopbackReconciler.Apply.
const WriterLoopback = "loopback"

// LoopbackReconciler keeps a set of addresses on lo: IPv4 /32s labelled LoopbackLabel and
// IPv6 /128s of protocol LoopbackProto.
type LoopbackReconciler struct {
	sock map[int]*nl.SocketHandle
	// Observe, if set, is told of every Apply, as writer WriterLoopback.
	Observe ApplyObserver
}

// NewLoopbackReconciler returns a reconciler for the network namespace ns (a closed handle,
// netns.None(): the caller's), with a netlink socket of its own there; Close releases it.
func NewLoopbackReconciler(ns netns.NsHandle) (*LoopbackReconciler, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket for lo's addresses: %w", err)
	}
	return &LoopbackReconciler{sock: map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}}, nil
}

// Close releases the reconciler's socket.
func (r *LoopbackReconciler) Close() { r.sock[unix.NETLINK_ROUTE].Close() }

// loAddr is one address on lo as the kernel lists it.
type loAddr struct {
	prefix netip.Prefix
	label  string
	proto  uint8
}

// ours says whether tabby put a on lo: by its label in IPv4, its protocol in IPv6.
func (a loAddr) ours() bool {
	if a.prefix.Addr().Is4() {
		return a.label == LoopbackLabel
	}
	return a.proto == LoopbackProto
}

// Apply makes lo hold exactly addrs among tabby's addresses (loAddr.ours); others'
// addresses on lo are left alone. It reports how many writes it made.
func (r *LoopbackReconciler) Apply(addrs []netip.Addr) (n int, err error) {
	start := time.Now()
	defer func() { r.Observe.observeSince(WriterLoopback, start, err) }()
	have, err := r.list()
	if err != nil {
		return 0, fmt.Errorf("list lo's addresses: %w", err)
	}
	var errs []error
	present := map[netip.Addr]bool{}
	for _, a := range have {
		ip, host := a.prefix.Addr(), a.prefix.IsSingleIP()
		if !a.ours() {
			present[ip] = present[ip] || host
			continue
		}
		if slices.Contains(addrs, ip) && host {
			present[ip] = true
			continue
		}
		if err := r.write(unix.RTM_DELADDR, 0, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove %s from lo: %w", a.prefix, err))
			continue
		}
		n++
	}
	for _, a := range addrs {
		if present[a] {
			continue
		}
		add := loAddr{prefix: netip.PrefixFrom(a, a.BitLen()), label: LoopbackLabel, proto: LoopbackProto}
		if err := r.write(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, add); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add %s to lo: %w", add.prefix, err))
			continue
		}
		present[a] = true
		n++
	}
	return n, errors.Join(errs...)
}

// list dumps lo's addresses of both families.
func (r *LoopbackReconciler) list() ([]loAddr, error) {
	req := r.request(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfAddrmsg(unix.AF_UNSPEC))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWADDR)
	if err != nil {
		return nil, err
	}
	var out []loAddr
	for _, m := range msgs {
		msg := nl.DeserializeIfAddrmsg(m)
		if msg.Index != loIndex {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[msg.Len():])
		if err != nil {
			return nil, fmt.Errorf("parse an address message: %w", err)
		}
		var a loAddr
		var local, address netip.Addr
		for _, at := range attrs {
			switch at.Attr.Type {
			case unix.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(at.Value)
			case unix.IFA_ADDRESS:
				address, _ = netip.AddrFromSlice(at.Value)
			case unix.IFA_LABEL:
				a.label = nl.BytesToString(at.Value)
			case ifaProto:
				if len(at.Value) == 1 {
					a.proto = at.Value[0]
				}
			}
		}
		// IPv4 names the address IFA_LOCAL; IPv6 only when it has a peer.
		ip := local
		if !ip.IsValid() {
			ip = address
		}
		if !ip.IsValid() {
			continue
		}
		a.prefix = netip.PrefixFrom(ip, int(msg.Prefixlen))
		out = append(out, a)
	}
	return out, nil
}

// write sends an RTM_NEWADDR or RTM_DELADDR of a on lo and waits for the kernel's answer.
// A new IPv6 address skips duplicate address detection (nodad): on lo there is nothing to
// detect, and a tentative address cannot be bound.
func (r *LoopbackReconciler) write(op, flags int, a loAddr) error {
	req := r.request(op, flags|unix.NLM_F_ACK)
	ip := a.prefix.Addr()
	msg := nl.NewIfAddrmsg(unix.AF_INET)
	msg.Scope = unix.RT_SCOPE_HOST
	if ip.Is6() {
		msg.Family, msg.Scope = unix.AF_INET6, unix.RT_SCOPE_UNIVERSE
		msg.Flags = unix.IFA_F_NODAD
	}
	msg.Prefixlen = uint8(a.prefix.Bits())
	msg.Index = loIndex
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFA_LOCAL, ip.AsSlice()))
	req.AddData(nl.NewRtAttr(unix.IFA_ADDRESS, ip.AsSlice()))
	if ip.Is4() && a.label != "" {
		req.AddData(nl.NewRtAttr(unix.IFA_LABEL, nl.ZeroTerminated(a.label)))
	}
	if op == unix.RTM_NEWADDR {
		req.AddData(nl.NewRtAttr(ifaProto, []byte{a.proto}))
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// request is a netlink request of type op on the reconciler's socket.
func (r *LoopbackReconciler) request(op, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(op, flags)
	req.Sockets = r.sock
	return req
}

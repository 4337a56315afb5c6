package felix

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/proxy"
)

// DeleteStaleUDP deletes the conntrack entries of flows (proxy.StaleUDP) from the kernel,
// in the ServiceProxy's namespace: UDP entries whose original destination is a flow's
// frontend and port (a NodePort's flow: any address on its node port) and whose reply
// comes from its backend address and port. A client's
// next datagram then goes through the Service's rules again and finds a live endpoint.
// It is kube-proxy's cleanup, by netlink: one dump of the UDP entries of each family that
// has flows, and one delete per matching entry. It returns how many entries went.
func (p *ServiceProxy) DeleteStaleUDP(flows []proxy.StaleFlow) (uint, error) {
	return deleteStaleUDP(p.netNS, flows)
}

// deleteStaleUDP is DeleteStaleUDP in the network namespace named netNS ("": the agent's),
// for both proxy modes.
func deleteStaleUDP(netNS string, flows []proxy.StaleFlow) (uint, error) {
	v4, v6 := staleUDPFilter{}, staleUDPFilter{}
	for _, f := range flows {
		if f.Backend.Addr.Is6() {
			v6[f] = true
		} else {
			v4[f] = true
		}
	}
	// A family without flows is not dumped.
	byFamily := map[netlink.InetFamily]udpMatcher{}
	if len(v4) > 0 {
		byFamily[unix.AF_INET] = v4
	}
	if len(v6) > 0 {
		byFamily[unix.AF_INET6] = v6
	}
	return deleteUDPEntries(netNS, byFamily)
}

// DeleteUDPNotServing deletes the conntrack entries of UDP flows the proxy DNATed from a
// frontend or node port of st to a backend no longer behind it (proxy.UDPServing), in
// the ServiceProxy's namespace: kube-proxy's full cleanup, for the changes an agent
// started after (DeleteStaleUDP covers those it saw). One dump of the UDP entries of each
// family in which st serves UDP, none without UDP Services.
func (p *ServiceProxy) DeleteUDPNotServing(st *proxy.LBState) (uint, error) {
	return deleteUDPNotServing(p.netNS, st)
}

// deleteUDPNotServing is DeleteUDPNotServing in the namespace named netNS, for both modes.
// A family in which nothing could be stale (no UDP frontend of it, no UDP node port) is
// not dumped: without UDP Services, nothing is.
func deleteUDPNotServing(netNS string, st *proxy.LBState) (uint, error) {
	serving := proxy.ServingUDP(st)
	fams := serving.Families()
	byFamily := map[netlink.InetFamily]udpMatcher{}
	if fams[0] {
		byFamily[unix.AF_INET] = notServingFilter{serving}
	}
	if fams[1] {
		byFamily[unix.AF_INET6] = notServingFilter{serving}
	}
	return deleteUDPEntries(netNS, byFamily)
}

// deleteUDPEntries deletes, in the namespace named netNS, the UDP conntrack entries each
// family's matcher matches, and returns how many went.
func deleteUDPEntries(netNS string, byFamily map[netlink.InetFamily]udpMatcher) (uint, error) {
	if len(byFamily) == 0 {
		return 0, nil
	}
	var deleted uint
	err := inNamedNetNS(netNS, func() error {
		for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
			m := byFamily[fam]
			if m == nil {
				continue
			}
			n, err := deleteUDPConntrack(fam, m)
			deleted += n
			if err != nil {
				return fmt.Errorf("delete stale UDP conntrack entries: %w", err)
			}
		}
		return nil
	})
	return deleted, err
}

// ctnetlink's dump filter (linux/netfilter/nfnetlink_conntrack.h, kernels 5.9 and
// later): CTA_FILTER holds the flags saying which fields of CTA_TUPLE_ORIG an entry
// must match.
const (
	ctaFilter             = 25 // CTA_FILTER
	ctaFilterOrigFlags    = 1  // CTA_FILTER_ORIG_FLAGS
	ctaFilterFlagProtoNum = 1 << 3
)

// deleteUDPConntrack deletes the UDP conntrack entries of family fam that m matches, in
// the current namespace, and returns how many went. The kernel is asked for UDP entries
// only, so a table of mostly TCP connections costs it a walk and the agent nothing per
// TCP entry (a kernel without the dump filter ignores it and sends every entry: the
// protocol is checked here too). Entries are read in place, without a copy per entry;
// each match is deleted once the dump is done, by its full attributes (its CTA_ID too:
// an entry that went and came back since is not deleted), as vishvananda/netlink's
// ConntrackDeleteFilters does: an entry already gone counts as deleted, other failures
// are counted and reported after the rest went. An interrupted dump (the table changed
// under it) still deletes what it matched, and is reported.
func deleteUDPConntrack(fam netlink.InetFamily, m udpMatcher) (uint, error) {
	var stale [][]byte
	dumpErr := dumpUDPConntrack(fam, func(msg []byte) {
		if e, ok := parseUDPEntry(msg); ok && m.match(e) {
			stale = append(stale, slices.Clone(msg))
		}
	})
	if dumpErr != nil && !errors.Is(dumpErr, netlink.ErrDumpInterrupted) {
		return 0, dumpErr
	}
	var deleted uint
	var failed int
	var firstErr error
	for _, msg := range stale {
		del := nl.NewNetlinkRequest(netlink.ConntrackTable<<8|nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
		del.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(fam), Version: nl.NFNETLINK_V0})
		del.AddRawData(msg[nfgenmsgLen:])
		if _, err := del.Execute(unix.NETLINK_NETFILTER, 0); err == nil || errors.Is(err, fs.ErrNotExist) {
			deleted++
		} else {
			failed++
			firstErr = cmp.Or(firstErr, err)
		}
	}
	if failed > 0 {
		dumpErr = errors.Join(dumpErr, fmt.Errorf("failed to delete %d of %d matched conntrack entries (the first: %w)", failed, len(stale), firstErr))
	}
	return deleted, dumpErr
}

// dumpUDPConntrack calls fn with each message of a dump of the UDP conntrack entries of
// family fam in the current namespace: its netfilter header, then attributes. msg is
// valid during the call only. The error may be netlink.ErrDumpInterrupted: the table
// changed during the dump, which may have missed entries.
func dumpUDPConntrack(fam netlink.InetFamily, fn func(msg []byte)) error {
	req := nl.NewNetlinkRequest(netlink.ConntrackTable<<8|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(fam), Version: nl.NFNETLINK_V0})
	orig := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
	orig.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil).AddRtAttr(nl.CTA_PROTO_NUM, []byte{unix.IPPROTO_UDP})
	req.AddData(orig)
	filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
	filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(ctaFilterFlagProtoNum))
	req.AddData(filter)
	err := req.ExecuteIter(unix.NETLINK_NETFILTER, 0, func(msg []byte) bool {
		fn(msg)
		return true
	})
	if err != nil {
		return fmt.Errorf("dump UDP conntrack entries: %w", err)
	}
	return nil
}

// nfgenmsgLen is the length of the netfilter header that starts a conntrack message.
const nfgenmsgLen = 4

// udpEntry is what the cleanups read of a UDP conntrack entry: its original destination
// and the source of its replies (the backend, when the entry was DNATed).
type udpEntry struct{ dst, replySrc netip.AddrPort }

// backend is the source of the entry's replies, as the proxy names a backend.
func (e udpEntry) backend() proxy.Backend {
	return proxy.Backend{Addr: e.replySrc.Addr(), Port: e.replySrc.Port()}
}

// udpMatcher says which UDP entries a cleanup deletes.
type udpMatcher interface{ match(udpEntry) bool }

// parseUDPEntry reads a UDP entry from a conntrack dump message (its netfilter header,
// then attributes) without allocating; false for another protocol or a message without
// both tuples' addresses.
func parseUDPEntry(msg []byte) (udpEntry, bool) {
	if len(msg) < nfgenmsgLen {
		return udpEntry{}, false
	}
	var orig, reply ctTuple
	for a := (nlAttrs{b: msg[nfgenmsgLen:]}); a.next(); {
		switch a.typ {
		case nl.CTA_TUPLE_ORIG:
			orig = parseCTTuple(a.val)
		case nl.CTA_TUPLE_REPLY:
			reply = parseCTTuple(a.val)
		}
	}
	if orig.proto != unix.IPPROTO_UDP || !orig.dst.IsValid() || !reply.src.IsValid() {
		return udpEntry{}, false
	}
	return udpEntry{
		dst:      netip.AddrPortFrom(orig.dst.Unmap(), orig.dstPort),
		replySrc: netip.AddrPortFrom(reply.src.Unmap(), reply.srcPort),
	}, true
}

// ctTuple is what parseCTTuple reads of a CTA_TUPLE_ORIG or CTA_TUPLE_REPLY.
type ctTuple struct {
	proto            uint8
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

func parseCTTuple(b []byte) ctTuple {
	var t ctTuple
	for a := (nlAttrs{b: b}); a.next(); {
		switch a.typ {
		case nl.CTA_TUPLE_IP:
			for ip := (nlAttrs{b: a.val}); ip.next(); {
				addr, _ := netip.AddrFromSlice(ip.val) // 4 or 16 bytes; otherwise invalid
				switch ip.typ {
				case nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC:
					t.src = addr
				case nl.CTA_IP_V4_DST, nl.CTA_IP_V6_DST:
					t.dst = addr
				}
			}
		case nl.CTA_TUPLE_PROTO:
			for p := (nlAttrs{b: a.val}); p.next(); {
				switch {
				case p.typ == nl.CTA_PROTO_NUM && len(p.val) == 1:
					t.proto = p.val[0]
				case p.typ == nl.CTA_PROTO_SRC_PORT && len(p.val) == 2:
					t.srcPort = binary.BigEndian.Uint16(p.val)
				case p.typ == nl.CTA_PROTO_DST_PORT && len(p.val) == 2:
					t.dstPort = binary.BigEndian.Uint16(p.val)
				}
			}
		}
	}
	return t
}

// nlAttrs walks netlink attributes in place: after each next that returns true, typ
// (its flags masked off) and val are the attribute's. A truncated attribute ends the walk.
type nlAttrs struct {
	b   []byte
	typ uint16
	val []byte
}

func (a *nlAttrs) next() bool {
	if len(a.b) < unix.SizeofNlAttr {
		return false
	}
	l := int(binary.NativeEndian.Uint16(a.b))
	if l < unix.SizeofNlAttr || l > len(a.b) {
		a.b = nil
		return false
	}
	a.typ = binary.NativeEndian.Uint16(a.b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	a.val = a.b[unix.SizeofNlAttr:l]
	a.b = a.b[min(len(a.b), (l+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1)):]
	return true
}

// notServingFilter matches the UDP entries that were DNATed (the reply comes from another
// address or port than the original destination) to a backend no longer serving their
// destination.
type notServingFilter struct{ serving proxy.UDPServing }

func (f notServingFilter) match(e udpEntry) bool {
	if e.replySrc == e.dst {
		return false // not DNATed: not the proxy's
	}
	return f.serving.Stale(e.dst, e.backend())
}

// staleUDPFilter matches the conntrack entries of a set of stale flows.
type staleUDPFilter map[proxy.StaleFlow]bool

func (f staleUDPFilter) match(e udpEntry) bool {
	b := e.backend()
	// A NodePort's flow matches the node port on any address: kube-proxy's
	// "conntrack -D -p udp --dport <nodePort>" for the endpoint.
	return f[proxy.StaleFlow{Frontend: e.dst.Addr(), Port: e.dst.Port(), Backend: b}] ||
		f[proxy.StaleFlow{Port: e.dst.Port(), Backend: b}]
}

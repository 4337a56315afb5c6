package felix

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/proxy"
)

// ctMessage is a conntrack dump message as the kernel sends it: the netfilter header,
// the original and reply tuples, then a status attribute.
func ctMessage(proto uint8, orig, reply [2]netip.AddrPort) []byte {
	tuple := func(typ int, t [2]netip.AddrPort) *nl.RtAttr {
		src, dst := nl.CTA_IP_V4_SRC, nl.CTA_IP_V4_DST
		if t[0].Addr().Is6() {
			src, dst = nl.CTA_IP_V6_SRC, nl.CTA_IP_V6_DST
		}
		a := nl.NewRtAttr(unix.NLA_F_NESTED|typ, nil)
		ip := a.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
		ip.AddRtAttr(src, t[0].Addr().AsSlice())
		ip.AddRtAttr(dst, t[1].Addr().AsSlice())
		p := a.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
		p.AddRtAttr(nl.CTA_PROTO_NUM, []byte{proto})
		p.AddRtAttr(nl.CTA_PROTO_SRC_PORT, nl.BEUint16Attr(t[0].Port()))
		p.AddRtAttr(nl.CTA_PROTO_DST_PORT, nl.BEUint16Attr(t[1].Port()))
		return a
	}
	msg := []byte{unix.AF_INET, nl.NFNETLINK_V0, 0, 0}
	msg = append(msg, tuple(nl.CTA_TUPLE_ORIG, orig).Serialize()...)
	msg = append(msg, tuple(nl.CTA_TUPLE_REPLY, reply).Serialize()...)
	return append(msg, nl.NewRtAttr(nl.CTA_STATUS, nl.BEUint32Attr(0x18e)).Serialize()...)
}

// TestParseUDPEntry: a UDP entry reads as its original destination and its reply's
// source, in either family; another protocol does not read; and a message cut anywhere
// reads as nothing or, once both tuples are whole, as the entry, never as another.
func TestParseUDPEntry(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		name        string
		proto       uint8
		orig, reply [2]netip.AddrPort
		want        udpEntry
		ok          bool
	}{
		{"DNATed IPv4", unix.IPPROTO_UDP, [2]netip.AddrPort{ap("10.1.0.1:40000"), ap("10.96.0.10:53")}, [2]netip.AddrPort{ap("10.200.0.2:5353"), ap("10.1.0.1:40000")},
			udpEntry{dst: ap("10.96.0.10:53"), replySrc: ap("10.200.0.2:5353")}, true},
		{"IPv6", unix.IPPROTO_UDP, [2]netip.AddrPort{ap("[fd00::1]:40000"), ap("[fd00:96::10]:53")}, [2]netip.AddrPort{ap("[fd00:200::2]:5353"), ap("[fd00::1]:40000")},
			udpEntry{dst: ap("[fd00:96::10]:53"), replySrc: ap("[fd00:200::2]:5353")}, true},
		{"TCP", unix.IPPROTO_TCP, [2]netip.AddrPort{ap("10.1.0.1:40000"), ap("10.96.0.10:53")}, [2]netip.AddrPort{ap("10.200.0.2:5353"), ap("10.1.0.1:40000")},
			udpEntry{}, false},
	} {
		msg := ctMessage(c.proto, c.orig, c.reply)
		if got, ok := parseUDPEntry(msg); got != c.want || ok != c.ok {
			t.Errorf("%s: parseUDPEntry = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
		for n := range len(msg) {
			if got, ok := parseUDPEntry(msg[:n]); ok && got != c.want {
				t.Errorf("%s cut to %d of %d bytes: parseUDPEntry = %v, want nothing or %v", c.name, n, len(msg), got, c.want)
			}
		}
	}
}

// TestDeleteUDPNotServingWithoutUDP: without UDP Services the full pass does no kernel
// work: it does not even open its namespace (here one that does not exist), where with
// a UDP Service it must.
func TestDeleteUDPNotServingWithoutUDP(t *testing.T) {
	const ns = "tby-test-no-such-namespace"
	tcpOnly := &proxy.LBState{Ports: []proxy.PortLB{lbPort("shop", "web", "TCP", "10.96.0.80", 80, 8080, "10.200.0.2")}}
	for _, st := range []*proxy.LBState{nil, tcpOnly} {
		if n, err := deleteUDPNotServing(ns, st); n != 0 || err != nil {
			t.Errorf("pass over %v = %d, %v; want nothing done", st, n, err)
		}
	}
	udp := &proxy.LBState{Ports: []proxy.PortLB{lbPort("kube-system", "dns", "UDP", "10.96.0.10", 53, 5353, "10.200.0.2")}}
	if _, err := deleteUDPNotServing(ns, udp); err == nil || !strings.Contains(err.Error(), ns) {
		t.Errorf("pass with a UDP Service in a missing namespace: %v, want an error naming %s", err, ns)
	}
}

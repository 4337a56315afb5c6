package felix

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/internal/testenv"
	"github.com/tabby-net/tabby/proxy"
)

const ctMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"

// raiseConntrackMax raises the machine's nf_conntrack_max (one limit for every
// namespace, set in the initial one) to at least n until the benchmark ends.
func raiseConntrackMax(b *testing.B, n int) {
	b.Helper()
	old, err := os.ReadFile(ctMaxPath)
	if err != nil {
		b.Fatalf("read nf_conntrack_max: %v", err)
	}
	was, err := strconv.Atoi(strings.TrimSpace(string(old)))
	if err != nil {
		b.Fatalf("nf_conntrack_max %q: %v", old, err)
	}
	if was >= n {
		return
	}
	if err := os.WriteFile(ctMaxPath, []byte(strconv.Itoa(n)), 0o644); err != nil {
		b.Fatalf("raise nf_conntrack_max to %d: %v", n, err)
	}
	b.Cleanup(func() {
		if err := os.WriteFile(ctMaxPath, old, 0o644); err != nil {
			b.Errorf("restore nf_conntrack_max to %s: %v", old, err)
		}
	})
}

// fillConntrack creates the conntrack entries from to to (exclusive) of a busy node's
// table: one in 20 is UDP, half of those DNATed from the benchmark's frontend to one of
// its backends (serving: the pass keeps them), half not DNATed; the rest are
// established TCP connections.
func fillConntrack(b *testing.B, h *netlink.Handle, from, to int) {
	b.Helper()
	for i := from; i < to; i++ {
		src := net.IPv4(10, byte(64+i>>16), byte(i>>8), byte(i)).To4()
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 3600}
		f.Forward = netlink.IPTuple{Protocol: unix.IPPROTO_TCP, SrcIP: src, SrcPort: 40000, DstIP: net.IPv4(10, 2, 0, 1).To4(), DstPort: 80}
		f.Reverse = netlink.IPTuple{Protocol: unix.IPPROTO_TCP, SrcIP: f.Forward.DstIP, SrcPort: 80, DstIP: src, DstPort: 40000}
		f.ProtoInfo = &netlink.ProtoInfoTCP{State: 3} // ESTABLISHED
		switch i % 40 {
		case 0: // DNATed to a serving backend
			f.ProtoInfo = nil
			f.Forward = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: src, SrcPort: 40000, DstIP: net.IPv4(10, 96, 0, 10).To4(), DstPort: 53}
			f.Reverse = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.IPv4(10, 200, 0, byte(2+i%4)).To4(), SrcPort: 5353, DstIP: src, DstPort: 40000}
		case 20: // not DNATed
			f.ProtoInfo = nil
			f.Forward = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: src, SrcPort: 40000, DstIP: net.IPv4(10, 2, 0, 1).To4(), DstPort: 123}
			f.Reverse = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: f.Forward.DstIP, SrcPort: 123, DstIP: src, DstPort: 40000}
		}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			b.Fatalf("conntrack entry %d: %v", i, err)
		}
	}
}

// libraryFilter is a matcher over vishvananda/netlink's parsed flows, as the pass was
// before it asked the kernel for UDP entries and read them in place.
type libraryFilter struct{ udpMatcher }

func (f libraryFilter) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	e, ok := libraryUDPEntry(fl)
	return ok && f.match(e)
}

// BenchmarkConntrackFullPass times the Service proxy's full pass over the conntrack table
// (DeleteUDPNotServing: the first apply after start and every full pass) in a namespace
// holding 10k, 100k and 300k entries, 95% TCP, against baselines in the same run: the
// same matching through vishvananda/netlink's ConntrackDeleteFilters, which parses every
// entry (the pass before it asked the kernel for UDP entries only), the library's plain
// dump (ConntrackTableList of both families), the same dump unparsed (what the kernel
// and the socket cost alone) and `conntrack -L -p udp | wc -l`. Nothing
// is stale, as on most passes: every one walks the table and deletes nothing.
func BenchmarkConntrackFullPass(b *testing.B) {
	testenv.RequireTools(b, testenv.Tool{Cmd: "conntrack", Package: "conntrack"})
	ns := newTestNS(b)
	sizes := []int{10_000, 100_000, 300_000}
	raiseConntrackMax(b, sizes[len(sizes)-1]+10_000)
	nsh, err := netns.GetFromName(ns.name)
	if err != nil {
		b.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_NETFILTER)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	st := &proxy.LBState{Ports: []proxy.PortLB{
		lbPort("kube-system", "dns", "UDP", "10.96.0.10", 53, 5353, "10.200.0.2", "10.200.0.3", "10.200.0.4", "10.200.0.5"),
		lbPort("shop", "web", "TCP", "10.96.0.80", 80, 8080, "10.200.0.2"),
	}}
	filled := 0
	for _, n := range sizes {
		fillConntrack(b, h, filled, n)
		filled = n
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			b.Run("pass", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if n, err := deleteUDPNotServing(ns.name, st); n != 0 || err != nil {
						b.Fatalf("pass deleted %d, %v; want nothing stale", n, err)
					}
				}
			})
			b.Run("library-filter", func(b *testing.B) {
				b.ReportAllocs()
				f := libraryFilter{notServingFilter{proxy.ServingUDP(st)}}
				for b.Loop() {
					for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
						if n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f); n != 0 || err != nil {
							b.Fatalf("library pass deleted %d, %v; want nothing stale", n, err)
						}
					}
				}
			})
			// dump times count over both families, which must find the n entries.
			dump := func(name string, count func(fam netlink.InetFamily) (int, error)) {
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						got := 0
						for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
							c, err := count(fam)
							if err != nil {
								b.Fatal(err)
							}
							got += c
						}
						if got != n {
							b.Fatalf("%s found %d entries, want %d", name, got, n)
						}
					}
				})
			}
			dump("library-list", func(fam netlink.InetFamily) (int, error) {
				flows, err := h.ConntrackTableList(netlink.ConntrackTable, fam)
				return len(flows), err
			})
			dump("raw-dump", func(fam netlink.InetFamily) (int, error) {
				req := nl.NewNetlinkRequest(netlink.ConntrackTable<<8|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
				req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(fam), Version: nl.NFNETLINK_V0})
				got := 0
				err := inNamedNetNS(ns.name, func() error {
					return req.ExecuteIter(unix.NETLINK_NETFILTER, 0, func([]byte) bool { got++; return true })
				})
				return got, err
			})
			b.Run("conntrack-L-udp", func(b *testing.B) {
				for b.Loop() {
					out, err := exec.Command("ip", "netns", "exec", ns.name, "sh", "-c", "conntrack -L -p udp 2>/dev/null | wc -l").Output()
					if err != nil {
						b.Fatal(err)
					}
					if got, want := strings.TrimSpace(string(out)), strconv.Itoa((n+39)/40+(n+19)/40); got != want {
						b.Fatalf("conntrack -L -p udp listed %s entries, want %s", got, want)
					}
				}
			})
		})
	}
}

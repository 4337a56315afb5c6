package felix

import "time"

// Writers, as an ApplyObserver is told them.
const (
	WriterIPTables = "iptables" // PolicySyncer: iptables-restore and ip6tables-restore, filter and nat
	WriterIPSets   = "ipsets"   // PolicySyncer: ipset restore
	WriterRoutes   = "routes"   // Dataplane: one pass over routes and sysctls
	WriterVXLAN    = "vxlan"    // VXLANReconciler.Apply
	WriterIPIP     = "ipip"     // IPIPReconciler.Apply
	WriterNFTables = "nftables" // ServiceProxy: the tabby nftables tables (Service load balancing)
	// WriterIPTablesProxy is ServiceProxyIPTables: the tby-k- chains (Service load
	// balancing, iptables mode).
	WriterIPTablesProxy = "iptables-proxy"
)

// ApplyObserver is told of every apply of every felix writer: which writer (WriterIPTables,
// ...), how long it took and how it ended. The agent turns these into metrics; felix
// exports none itself. It is called on the writer's goroutine, so it must be quick and
// safe for concurrent use by several writers. A nil ApplyObserver observes nothing.
type ApplyObserver func(writer string, d time.Duration, err error)

func (o ApplyObserver) observe(writer string, d time.Duration, err error) {
	if o != nil {
		o(writer, d, err)
	}
}

// observeSince observes writer's apply that began at start.
func (o ApplyObserver) observeSince(writer string, start time.Time, err error) {
	if o != nil {
		o(writer, time.Since(start), err)
	}
}

package felix

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tabby-net/tabby/proxy"
)

// LargeIPTablesNFT is how many Services the iptables mode holds on the nft backend before
// it warns: iptables-nft loads kube-proxy's shape slowly (DESIGN.md measured about 8
// minutes for 10k Services; legacy 2.6 s).
const LargeIPTablesNFT = 1000

// ServiceProxyIPTables is the Service proxy's iptables mode: it owns the tby-k- chains
// of the nat and filter tables (IPv4, and IPv6 with ServiceProxyConfig.IPv6) and their
// hooks, and makes them match the proxy's load balancing (proxy.RenderIPTables) through
// iptables-restore --noflush of the backend policy uses. Like ServiceProxy, Apply reads
// the tables and rewrites what differs, and ApplyCached writes only the ports that
// changed since the last apply, trusting its cache.
type ServiceProxyIPTables struct {
	// Observe, if set, is told of every apply as WriterIPTablesProxy.
	Observe ApplyObserver

	run     CommandRunner
	backend Backend
	netNS   string
	log     *slog.Logger

	mu     sync.Mutex // one apply at a time; guards the rest
	fams   []iptFamily
	last   *proxy.LBState
	warned bool // the warning about many Services on nft was given
}

type iptFamily struct {
	cfg           proxy.RenderConfig
	save, restore string
	applied       *proxy.IPTables // what the tables hold as far as we know; nil: unknown
}

// NewServiceProxyIPTables returns the iptables mode's writer on backend (DetectBackend's
// choice, the one policy uses), running iptables-save and iptables-restore through run,
// in cfg.NetNS (which run must also name: it is where conntrack entries are deleted).
// It has written nothing yet.
func NewServiceProxyIPTables(cfg ServiceProxyConfig, backend Backend, run CommandRunner) *ServiceProxyIPTables {
	p := &ServiceProxyIPTables{run: run, backend: backend, netNS: cfg.NetNS, log: cfg.Log}
	if p.log == nil {
		p.log = slog.Default()
	}
	rc := proxy.RenderConfig{MasqueradeMark: cfg.MasqueradeMark, PodCIDRs: slices.Clone(cfg.PodCIDRs)}
	p.fams = append(p.fams, iptFamily{cfg: rc, save: backend.Save, restore: backend.Restore})
	if cfg.IPv6 {
		rc.IPv6, rc.PodCIDRs = true, slices.Clone(cfg.PodCIDRs)
		p.fams = append(p.fams, iptFamily{cfg: rc, save: backend.Save6, restore: backend.Restore6})
	}
	return p
}

// Backend is the iptables backend the writer uses.
func (p *ServiceProxyIPTables) Backend() Backend { return p.backend }

// SetPodCIDRs changes the pod CIDRs; when they differ, the next apply is a full pass.
func (p *ServiceProxyIPTables) SetPodCIDRs(cidrs []netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	setPodCIDRs(p.fams, cidrs)
}

func (f *iptFamily) renderConfig() *proxy.RenderConfig { return &f.cfg }
func (f *iptFamily) cached() bool                      { return f.applied != nil }
func (f *iptFamily) forget()                           { f.applied = nil }

// Apply is a full pass: it reads the tables (one iptables-save per family) and rewrites
// every tby-k- chain that differs from st, deletes those not wanted and puts the hooks
// first in their kernel chains, in one iptables-restore --noflush per family.
func (p *ServiceProxyIPTables) Apply(ctx context.Context, st *proxy.LBState) error {
	return p.apply(ctx, st, true)
}

// ApplyCached writes only the chains and list lines of the Service ports that changed
// since the last apply, rendering only those ports; a family with no cache gets a full
// pass.
func (p *ServiceProxyIPTables) ApplyCached(ctx context.Context, st *proxy.LBState) error {
	return p.apply(ctx, st, false)
}

func (p *ServiceProxyIPTables) apply(ctx context.Context, st *proxy.LBState, full bool) (err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	defer func() { p.Observe.observeSince(WriterIPTablesProxy, start, err) }()
	if st == nil {
		st = &proxy.LBState{}
	}
	st = st.Clone() // kept as p.last; sorted, as IPTablesChangeOf needs
	p.warnLarge(st)
	err = applyFamilies(ctx, p.fams, st, p.last, full, p.applyFull, p.applyChange)
	p.last = st
	return err
}

// warnLarge warns once when st holds more than LargeIPTablesNFT Services on the nft
// backend.
func (p *ServiceProxyIPTables) warnLarge(st *proxy.LBState) {
	if p.warned || p.backend.Name != BackendNFT.Name {
		return
	}
	n, prev := 0, proxy.PortKey{}
	for i, port := range st.Ports {
		if i == 0 || port.Key.Namespace != prev.Namespace || port.Key.Name != prev.Name {
			n++
		}
		prev = port.Key
	}
	if n > LargeIPTablesNFT {
		p.warned = true
		p.log.Warn("the iptables proxy mode on the nft backend loads slowly at this size (minutes at 10k Services); use --proxy-mode nftables, or the legacy backend",
			"services", n, "backend", p.backend.Name)
	}
}

// iptStates turns t into the desired state of each table for PlanTable: each rule with
// its hash comment (proxyRule), and the hooks of the table.
func iptStates(t *proxy.IPTables) map[string]*FilterState {
	out := map[string]*FilterState{}
	for table, chains := range t.Tables() {
		fs := &FilterState{Chains: make(map[string][]string, len(chains))}
		for name, rules := range chains {
			fs.Chains[name] = proxyRules(name, rules)
		}
		for _, h := range proxy.IPTablesHooks {
			if h.Table == table {
				fs.Hooks = append(fs.Hooks, Hook{Chain: h.Chain, Target: h.Target})
			}
		}
		out[table] = fs
	}
	return out
}

// proxyRule is a rule of the proxy's chain with the hash comment PlanTable compares: a
// hash of the chain and the rule alone, not of the rules before it, so that a line of a
// list chain keeps its text wherever it stands (it is deleted by that text).
func proxyRule(chain, rule string) string {
	return "-m comment --comment " + hashCommentPrefix + shortHash(chain+"\x00"+rule, hashLen) + " " + rule
}

func proxyRules(chain string, rules []string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = proxyRule(chain, r)
	}
	return out
}

// proxyTables are the tables the iptables mode writes, in the order of a restore.
var proxyTables = []string{"nat", "filter"}

// applyFull reads f's tables and rewrites what differs from st.
func (p *ServiceProxyIPTables) applyFull(ctx context.Context, f *iptFamily, st *proxy.LBState) error {
	t := proxy.RenderIPTables(st, f.cfg)
	if err := p.restoreFull(ctx, f, iptStates(t)); err != nil {
		return err
	}
	f.applied = t
	return nil
}

// restoreFull makes f's nat and filter tables hold exactly want's tby-k- chains and
// hooks (none: want empty), in one save and one restore.
func (p *ServiceProxyIPTables) restoreFull(ctx context.Context, f *iptFamily, want map[string]*FilterState) error {
	hookMu.Lock()
	defer hookMu.Unlock()
	save, err := p.run.Run(ctx, nil, f.save)
	if err != nil {
		return fmt.Errorf("read iptables (%s): %w", f.save, err)
	}
	var restore []byte
	for _, table := range proxyTables {
		w := want[table]
		if w == nil {
			w = &FilterState{Chains: map[string][]string{}}
		}
		fp := PlanTable(ParseTableOf(save, table, OwnerProxy), w, table)
		restore = append(restore, fp.Restore...)
	}
	return p.restore(ctx, f, restore)
}

func (p *ServiceProxyIPTables) restore(ctx context.Context, f *iptFamily, in []byte) error {
	if len(in) == 0 {
		return nil
	}
	if _, err := p.run.Run(ctx, in, f.restore, "--noflush", "-w", "5"); err != nil {
		return fmt.Errorf("service chains (%d lines): %w", bytes.Count(in, []byte("\n")), err)
	}
	return nil
}

// applyChange writes the difference between p.last and st, planned against f.applied.
func (p *ServiceProxyIPTables) applyChange(ctx context.Context, f *iptFamily, st *proxy.LBState) error {
	in := PlanIPTablesChange(f.applied, proxy.IPTablesChangeOf(p.last, st, f.cfg))
	return p.restore(ctx, f, in)
}

// PlanIPTablesChange returns the iptables-restore --noflush input that applies ch to the
// tables applied describes, and folds ch into applied. The chains of the changed ports
// are declared (which flushes an existing one) and filled, or flushed and deleted when
// gone. A list chain keeps its other lines: the change deletes its old lines by their
// text and inserts its new ones where they belong in text order, so the list stays as a
// full render orders it. Pure; nil when nothing changes.
func PlanIPTablesChange(applied *proxy.IPTables, ch proxy.IPTablesChange) []byte {
	var out bytes.Buffer
	for _, table := range proxyTables {
		var b bytes.Buffer
		before, after := ch.Before.Chains[table], ch.After.Chains[table]
		var written, gone []string
		for _, name := range slices.Sorted(maps.Keys(after)) {
			if old, ok := before[name]; !ok || !slices.Equal(old, after[name]) {
				written = append(written, name)
				fmt.Fprintf(&b, ":%s - [0:0]\n", name)
			}
		}
		for _, name := range written {
			for _, r := range after[name] {
				fmt.Fprintf(&b, "-A %s %s\n", name, proxyRule(name, r))
			}
			applied.Chains[table][name] = after[name]
		}
		for _, l := range slices.SortedFunc(maps.Keys(applied.Lists), func(a, b proxy.IPTList) int {
			return cmp.Or(cmp.Compare(a.Table, b.Table), cmp.Compare(a.Chain, b.Chain))
		}) {
			if l.Table == table {
				planList(&b, applied, l, ch.Before.Lists[l], ch.After.Lists[l])
			}
		}
		for _, name := range slices.Sorted(maps.Keys(before)) {
			if _, ok := after[name]; !ok {
				gone = append(gone, name)
				delete(applied.Chains[table], name)
			}
		}
		for _, name := range gone {
			fmt.Fprintf(&b, "-F %s\n", name)
		}
		for _, name := range gone {
			fmt.Fprintf(&b, "-X %s\n", name)
		}
		if b.Len() > 0 {
			out.WriteString("*" + table + "\n")
			out.Write(b.Bytes())
			out.WriteString("COMMIT\n")
		}
	}
	if out.Len() == 0 {
		return nil
	}
	return out.Bytes()
}

// planList deletes from list l the lines of old that new lacks and inserts those of new
// that old lacks (both sorted), in applied and as restore lines: each insert goes to its
// place in the sorted list, after the list's head.
func planList(b *bytes.Buffer, applied *proxy.IPTables, l proxy.IPTList, old, new []string) {
	list := applied.Lists[l]
	for _, r := range old {
		if _, found := slices.BinarySearch(new, r); found {
			continue
		}
		if i, found := slices.BinarySearch(list, r); found {
			list = slices.Delete(list, i, i+1)
		}
		fmt.Fprintf(b, "-D %s %s\n", l.Chain, proxyRule(l.Chain, r))
	}
	head := len(applied.Head[l])
	for _, r := range new {
		if _, found := slices.BinarySearch(old, r); found {
			continue
		}
		i, _ := slices.BinarySearch(list, r)
		list = slices.Insert(list, i, r)
		fmt.Fprintf(b, "-I %s %d %s\n", l.Chain, head+i+1, proxyRule(l.Chain, r))
	}
	applied.Lists[l] = list
}

// Remove deletes every tby-k- chain of the nat and filter tables, and the hooks into
// them, in each family the writer has.
func (p *ServiceProxyIPTables) Remove(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs error
	for i := range p.fams {
		f := &p.fams[i]
		f.applied = nil
		if err := p.restoreFull(ctx, f, nil); err != nil {
			errs = errors.Join(errs, err)
		}
	}
	p.last = nil
	return errs
}

// DeleteStaleUDP deletes the conntrack entries of flows, as ServiceProxy.DeleteStaleUDP.
func (p *ServiceProxyIPTables) DeleteStaleUDP(flows []proxy.StaleFlow) (uint, error) {
	return deleteStaleUDP(p.netNS, flows)
}

// DeleteUDPNotServing deletes the conntrack entries of UDP flows to backends no longer
// behind their frontend in st, as ServiceProxy.DeleteUDPNotServing.
func (p *ServiceProxyIPTables) DeleteUDPNotServing(st *proxy.LBState) (uint, error) {
	return deleteUDPNotServing(p.netNS, st)
}

package felix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/tabby-net/tabby/proxy"
)

// ServiceProxyConfig configures a ServiceProxy.
type ServiceProxyConfig struct {
	// NetNS, when set, runs nft in the network namespace of that name (/run/netns/NetNS).
	NetNS string
	// IPv6 also programs the ip6 tabby table (IPv6 frontends and backends).
	IPv6 bool
	// MasqueradeMark is the masquerade mark bit (0: proxy.DefaultMasqueradeMark).
	MasqueradeMark uint32
	// PodCIDRs are the pod CIDRs: traffic to a Service from elsewhere is masqueraded
	// (proxy.RenderConfig.PodCIDRs). SetPodCIDRs changes them.
	PodCIDRs []netip.Prefix
	Log      *slog.Logger
}

// ServiceProxy owns the nftables tables "ip tabby" (and "ip6 tabby" with IPv6) and makes
// them match the proxy's load balancing, through knftables (the nft binary). It trusts
// what it wrote, as the PolicySyncer does: ApplyCached writes only the difference from
// the Ruleset it applied last; Apply re-reads the table and rewrites all of it, which
// repairs any drift.
type ServiceProxy struct {
	// Observe, if set, is told of every apply as WriterNFTables.
	Observe ApplyObserver

	netNS string
	log   *slog.Logger
	fams  []spFamily

	mu   sync.Mutex     // one apply at a time; guards last and fams[].applied
	last *proxy.LBState // a copy of the state last applied
}

type spFamily struct {
	cfg     proxy.RenderConfig
	nft     knftables.Interface
	applied *proxy.Ruleset // what the table holds as far as we know; nil: unknown
}

// NewServiceProxy checks that nft works (in cfg.NetNS) and returns a ServiceProxy that
// has written nothing yet.
func NewServiceProxy(cfg ServiceProxyConfig) (*ServiceProxy, error) {
	fams := []knftables.Family{knftables.IPv4Family}
	if cfg.IPv6 {
		fams = append(fams, knftables.IPv6Family)
	}
	var nfts []knftables.Interface
	for _, f := range fams {
		var nft knftables.Interface
		err := inNamedNetNS(cfg.NetNS, func() error {
			var err error
			nft, err = knftables.New(f, proxy.TableName)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("nftables %s %s: %w", f, proxy.TableName, err)
		}
		nfts = append(nfts, nft)
	}
	return newServiceProxy(cfg, nfts...), nil
}

// newServiceProxy returns a ServiceProxy over the given knftables interfaces, IPv4's
// first: tests pass knftables.Fake.
func newServiceProxy(cfg ServiceProxyConfig, nfts ...knftables.Interface) *ServiceProxy {
	p := &ServiceProxy{netNS: cfg.NetNS, log: cfg.Log}
	if p.log == nil {
		p.log = slog.Default()
	}
	for i, nft := range nfts {
		p.fams = append(p.fams, spFamily{cfg: proxy.RenderConfig{IPv6: i == 1, MasqueradeMark: cfg.MasqueradeMark, PodCIDRs: slices.Clone(cfg.PodCIDRs)}, nft: nft})
	}
	return p
}

// SetPodCIDRs changes the pod CIDRs (ServiceProxyConfig.PodCIDRs). When they differ, the
// next apply is a full pass, since the rules that mark traffic from outside them change.
func (p *ServiceProxy) SetPodCIDRs(cidrs []netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	setPodCIDRs(p.fams, cidrs)
}

// proxyFamily is what both proxy writers (ServiceProxy, ServiceProxyIPTables) keep per
// address family: how it renders, and a cache of what the kernel holds.
type proxyFamily interface {
	renderConfig() *proxy.RenderConfig
	cached() bool
	forget() // the kernel may hold anything: the next apply of the family is full
}

func (f *spFamily) renderConfig() *proxy.RenderConfig { return &f.cfg }
func (f *spFamily) cached() bool                      { return f.applied != nil }
func (f *spFamily) forget()                           { f.applied = nil }

// setPodCIDRs changes the pod CIDRs of every family; a family whose CIDRs differ forgets
// its cache, since the rules that mark traffic from outside them change.
func setPodCIDRs[T any, F interface {
	*T
	proxyFamily
}](fams []T, cidrs []netip.Prefix) {
	for i := range fams {
		f := F(&fams[i])
		if c := f.renderConfig(); !slices.Equal(c.PodCIDRs, cidrs) {
			c.PodCIDRs = slices.Clone(cidrs)
			f.forget()
		}
	}
}

// applyFamilies applies st to every family: a full pass when full, when the family has
// no cache or when nothing was applied before (last nil), else only the change from
// last. A family that fails forgets its cache; the errors are joined.
func applyFamilies[T any, F interface {
	*T
	proxyFamily
}](ctx context.Context, fams []T, st, last *proxy.LBState, full bool, applyFull, applyChange func(context.Context, F, *proxy.LBState) error) error {
	var err error
	for i := range fams {
		f := F(&fams[i])
		var ferr error
		if full || !f.cached() || last == nil {
			ferr = applyFull(ctx, f, st)
		} else {
			ferr = applyChange(ctx, f, st)
		}
		if ferr != nil {
			f.forget()
			err = errors.Join(err, ferr)
		}
	}
	return err
}

// Apply is a full pass: it lists what each table holds and rewrites all of it to st
// (every chain flushed and refilled, the maps refilled, leftovers deleted), in one nft
// transaction per family. Affinity entries of sets that stay are kept, and conntrack is
// untouched, so established connections keep their endpoint.
func (p *ServiceProxy) Apply(ctx context.Context, st *proxy.LBState) error {
	return p.apply(ctx, st, true)
}

// ApplyCached writes only what changed since the last apply: the chains and map
// elements of the Service ports that changed, rendering only those ports. A family with
// no cache (the first apply, or after a failure) gets a full pass.
func (p *ServiceProxy) ApplyCached(ctx context.Context, st *proxy.LBState) error {
	return p.apply(ctx, st, false)
}

func (p *ServiceProxy) apply(ctx context.Context, st *proxy.LBState, full bool) (err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	defer func() { p.Observe.observeSince(WriterNFTables, start, err) }()
	if st == nil {
		st = &proxy.LBState{}
	}
	st = st.Clone() // kept as p.last: the caller may change st; sorted, as PlanChange needs
	err = applyFamilies(ctx, p.fams, st, p.last, full, p.applyFull, p.applyChange)
	p.last = st
	return err
}

// applyFull lists what f's table holds and rewrites all of it.
func (p *ServiceProxy) applyFull(ctx context.Context, f *spFamily, st *proxy.LBState) error {
	rs := proxy.Render(st, f.cfg)
	var existing map[string][]string
	err := inNamedNetNS(p.netNS, func() error {
		var err error
		existing, err = f.nft.ListAll(ctx)
		if knftables.IsNotFound(err) {
			existing, err = nil, nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("list nftables %s %s: %w", rs.Family, proxy.TableName, err)
	}
	tx := f.nft.NewTransaction()
	rs.PlanFull(tx, existing)
	err = p.run(ctx, f, tx)
	if err != nil && existing != nil {
		// The table holds something a rewrite cannot change, such as a map of another
		// type (another version's layout). Replace the whole table in one transaction:
		// no packet sees it missing, and conntrack keeps established connections; only
		// affinity entries are lost.
		p.log.Warn("rewriting the nftables table failed: replacing it", "family", rs.Family, "table", proxy.TableName, "err", err)
		tx = f.nft.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		rs.PlanFull(tx, nil)
		err = p.run(ctx, f, tx)
	}
	if err != nil {
		return err
	}
	f.applied = rs
	return nil
}

// applyChange writes the difference between p.last and st, planned against f.applied.
func (p *ServiceProxy) applyChange(ctx context.Context, f *spFamily, st *proxy.LBState) error {
	tx := f.nft.NewTransaction()
	ch := proxy.PlanChange(tx, f.applied, p.last, st, f.cfg)
	if tx.NumOperations() == 0 {
		return nil
	}
	if err := p.run(ctx, f, tx); err != nil {
		return err
	}
	ch.Apply(f.applied)
	return nil
}

func (p *ServiceProxy) run(ctx context.Context, f *spFamily, tx *knftables.Transaction) error {
	if err := inNamedNetNS(p.netNS, func() error { return f.nft.Run(ctx, tx) }); err != nil {
		fam := knftables.IPv4Family
		if f.cfg.IPv6 {
			fam = knftables.IPv6Family
		}
		return fmt.Errorf("nft transaction on %s %s (%d operations): %w", fam, proxy.TableName, tx.NumOperations(), err)
	}
	return nil
}

// Remove deletes the tabby tables: every Service rule the proxy wrote. A missing table
// is not an error.
func (p *ServiceProxy) Remove(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs error
	for i := range p.fams {
		f := &p.fams[i]
		f.applied = nil
		tx := f.nft.NewTransaction()
		// nft 1.0.6 has no "destroy": add then delete removes the table whether or not
		// it exists.
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		if err := inNamedNetNS(p.netNS, func() error { return f.nft.Run(ctx, tx) }); err != nil {
			errs = errors.Join(errs, fmt.Errorf("delete nftables table %s: %w", proxy.TableName, err))
		}
	}
	return errs
}

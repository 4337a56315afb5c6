package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// DefaultGracePeriod is how long the garbage collector must see an allocation's owner
// gone before it releases the allocation.
const DefaultGracePeriod = 15 * time.Minute

// GCOptions tune the garbage collector.
type GCOptions struct {
	// GracePeriod: a candidate must be seen leaked this long, across passes, before it
	// is released; 0 means DefaultGracePeriod. It also ages pending affinities.
	GracePeriod time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// GCReport says what one pass did.
type GCReport struct {
	// Released are the addresses released, with why their owner was found gone.
	Released []Leak `json:"released,omitempty"`
	// AffinitiesReleased are the claims removed: of deleted nodes, and pending ones
	// that never finished.
	AffinitiesReleased []AffinityProblem `json:"affinitiesReleased,omitempty"`
	// BlocksDeleted are blocks deleted after staying empty for two passes.
	BlocksDeleted []netip.Prefix `json:"blocksDeleted,omitempty"`
	// Waiting counts candidates seen but still within their grace period.
	Waiting int `json:"waiting"`
}

// GarbageCollector releases what nobody owns any more. It remembers, between passes,
// since when it has seen each candidate; run one at a time per cluster
// (RunGarbageCollector elects one).
type GarbageCollector struct {
	c    *Client
	opts GCOptions
	// fence holds compares every write of the collector must pass: under
	// RunGarbageCollector, that it still leads.
	fence     []clientv3.Cmp
	firstSeen map[string]time.Time    // candidate → first pass that saw it
	emptySeen map[netip.Prefix]uint64 // block → its sequence number when last seen empty
}

// NewGarbageCollector returns a collector whose memory starts empty: nothing is
// released before a grace period has passed since its first pass.
func (c *Client) NewGarbageCollector(opts GCOptions) *GarbageCollector {
	if opts.GracePeriod <= 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &GarbageCollector{c: c, opts: opts, firstSeen: map[string]time.Time{}, emptySeen: map[netip.Prefix]uint64{}}
}

// leakGroup is the leaked allocations of one block with one owner.
type leakGroup struct {
	cidr  netip.Prefix
	owner owner
	opts  []ReleaseOptions
	why   string
}

// GarbageCollect runs one pass: it releases allocations whose owner (workload
// endpoint, or node) has been gone for the grace period, removes the affinities of
// nodes gone that long and pending affinities older than it, and deletes blocks that
// were empty at this pass and the previous one with no allocation in between. Each
// release re-reads the owner and commits only if it is still gone and the allocation
// still has the sequence number seen, so nothing re-allocated meanwhile is freed.
func (g *GarbageCollector) GarbageCollect(ctx context.Context) (GCReport, error) {
	var rep GCReport
	now := g.opts.Now()
	s, err := g.c.readState(ctx)
	if err != nil {
		return rep, fmt.Errorf("ipam gc: %w", err)
	}
	seen := map[string]time.Time{}
	due := func(key string) bool {
		first, ok := g.firstSeen[key]
		if !ok {
			first = now
		}
		seen[key] = first
		if now.Sub(first) >= g.opts.GracePeriod {
			return true
		}
		rep.Waiting++
		return false
	}

	var leaks []*leakGroup
	emptyNow := map[netip.Prefix]uint64{}
	var empties []*storedBlock
	for _, cidr := range slices.SortedFunc(maps.Keys(s.blocks), comparePrefix) {
		sb := s.blocks[cidr]
		if sb.b.inUse() == 0 {
			if seq, ok := g.emptySeen[cidr]; ok && seq == sb.b.SequenceNumber {
				empties = append(empties, sb)
			} else {
				emptyNow[cidr] = sb.b.SequenceNumber
			}
			continue
		}
		groups := map[owner]*leakGroup{}
		for ord := range sb.b.Allocations {
			h := sb.b.holder(ord)
			if h == nil {
				continue
			}
			o := ownerOf(h)
			gone, why := s.gone(o)
			seq := sb.b.seqOf(ord)
			if !gone || !due(fmt.Sprintf("alloc %s %d", sb.b.addr(ord), seq)) {
				continue
			}
			if groups[o] == nil {
				groups[o] = &leakGroup{cidr: cidr, owner: o, why: why}
				leaks = append(leaks, groups[o])
			}
			groups[o].opts = append(groups[o].opts, ReleaseOptions{Addr: sb.b.addr(ord), Handle: h.Handle, SequenceNumber: &seq})
		}
	}
	var goneNodes, stalePending []affinityRef
	for ref, sa := range s.affinities {
		switch {
		case !s.nodes[ref.node]:
			if due("node " + ref.node) {
				goneNodes = append(goneNodes, ref)
			}
		case sa.a.State == affinityPending && now.Sub(sa.a.Time) >= g.opts.GracePeriod:
			stalePending = append(stalePending, ref)
		}
	}
	g.firstSeen, g.emptySeen = seen, emptyNow

	var errs []error
	for _, lg := range leaks {
		errs = append(errs, g.releaseLeaks(ctx, lg, &rep))
	}
	for _, ref := range goneNodes {
		errs = append(errs, g.releaseAffinity(ctx, ref, &rep))
	}
	for _, ref := range stalePending {
		errs = append(errs, g.dropPending(ctx, ref, s, &rep))
	}
	for _, sb := range empties {
		errs = append(errs, g.deleteEmpty(ctx, sb, &rep))
	}
	return rep, errors.Join(errs...)
}

// errOwnerBack: the owner of a leak candidate exists again; leave it.
var errOwnerBack = errors.New("owner exists again")

// releaseLeaks releases one group, as releaseGroup, under the collector's fence.
func (g *GarbageCollector) releaseLeaks(ctx context.Context, lg *leakGroup, rep *GCReport) error {
	leaks, err := g.c.releaseGroup(ctx, "gc", lg, g.fence)
	rep.Released = append(rep.Released, leaks...)
	return err
}

// releaseGroup releases one group after re-reading its owner, in transactions that also
// require the owner still gone, the allocations unchanged and the fence, and returns
// what it released. An owner back, or a block gone, leaves the rest alone.
func (c *Client) releaseGroup(ctx context.Context, who string, lg *leakGroup, fence []clientv3.Cmp) ([]Leak, error) {
	var out []Leak
	for chunk := range slices.Chunk(lg.opts, maxReleasePerTxn) {
		err := c.retry(ctx, fmt.Sprintf("%s: release from block %s", who, lg.cidr), func() error {
			cmps, err := c.ownerStillGone(ctx, lg.owner)
			if err != nil {
				return err
			}
			rel, _, err := c.releaseOnce(ctx, lg.cidr, pickUnchanged(chunk), append(cmps, fence...))
			if err != nil {
				return err
			}
			for _, r := range rel {
				c.log.Info("released address", "by", who, "addr", r.addr, "handle", r.handle, "reason", lg.why)
				out = append(out, Leak{Addr: r.addr, Block: lg.cidr, Handle: r.handle, Reason: lg.why})
			}
			return nil
		})
		if err != nil && !errors.Is(err, errOwnerBack) && !errors.Is(err, errNoBlock) {
			return out, err
		}
	}
	return out, nil
}

// ownerStillGone re-reads an owner and returns compares that hold only while it stays
// gone; errOwnerBack if it exists.
func (c *Client) ownerStillGone(ctx context.Context, o owner) ([]clientv3.Cmp, error) {
	if o.workload == (workloadRef{}) {
		key := resourceKey(nodeKind, "", o.node)
		resp, err := c.etcd.Get(ctx, key, clientv3.WithCountOnly())
		if err != nil {
			return nil, err
		}
		if resp.Count > 0 {
			return nil, errOwnerBack
		}
		return []clientv3.Cmp{unchanged(key, 0)}, nil
	}
	weps, rev, err := datastore.ListAs[*api.WorkloadEndpoint](ctx, c.ds, o.workload.namespace)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(weps, func(w *api.WorkloadEndpoint) bool { return w.Spec.ContainerID == o.workload.containerID }) {
		return nil, errOwnerBack
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(resourceKey(wepKind, o.workload.namespace, "")), "<", rev+1).WithPrefix()}, nil
}

// pickUnchanged picks the addresses still held with the handle and sequence number
// seen; the others were released or re-allocated meanwhile and are left alone.
func pickUnchanged(opts []ReleaseOptions) picker {
	return func(b *block) ([]int, []netip.Addr, error) {
		var ords []int
		for _, o := range opts {
			ord, _ := b.ordinal(o.Addr)
			if h := b.holder(ord); h != nil && h.Handle == o.Handle && b.seqOf(ord) == *o.SequenceNumber {
				ords = append(ords, ord)
			}
		}
		return ords, nil, nil
	}
}

// releaseAffinity removes a deleted node's claim, as dropAffinity, under the
// collector's fence.
func (g *GarbageCollector) releaseAffinity(ctx context.Context, ref affinityRef, rep *GCReport) error {
	err := g.c.dropAffinity(ctx, "gc", ref, g.fence)
	if err == nil {
		rep.AffinitiesReleased = append(rep.AffinitiesReleased, AffinityProblem{ref.node, ref.cidr, "the node does not exist"})
	}
	return err
}

// dropAffinity removes a deleted node's claim, in a transaction that requires the node
// still absent and the fence: its empty block is deleted with it, a block still holding
// addresses (borrowed by other nodes, or within their grace period) loses its affinity
// and stays until empty.
func (c *Client) dropAffinity(ctx context.Context, who string, ref affinityRef, fence []clientv3.Cmp) error {
	aKey, bKey, nKey := affinityKey(ref.node, ref.cidr), blockKey(ref.cidr), resourceKey(nodeKind, "", ref.node)
	err := c.retry(ctx, fmt.Sprintf("%s: release affinity of node %q for %s", who, ref.node, ref.cidr), func() error {
		resp, err := c.etcd.Txn(ctx).Then(clientv3.OpGet(aKey), clientv3.OpGet(bKey)).Commit()
		if err != nil {
			return err
		}
		akv, bkv := firstKV(resp, 0), firstKV(resp, 1)
		if akv == nil {
			return nil
		}
		cmps := append([]clientv3.Cmp{unchanged(aKey, akv.ModRevision), unchanged(bKey, modRev(bkv)), unchanged(nKey, 0)}, fence...)
		ops := []clientv3.Op{clientv3.OpDelete(aKey)}
		if bkv != nil {
			b, err := decodeJSON[block](bkv)
			if err != nil {
				return err
			}
			switch {
			case b.node() != ref.node:
			case b.inUse() == 0:
				ops = append(ops, clientv3.OpDelete(bKey))
			default:
				b.Affinity = ""
				ops = append(ops, putJSON(bKey, b))
			}
		}
		return c.commit(ctx, cmps, ops)
	})
	if err == nil {
		c.log.Info("released the block affinity of a deleted node", "by", who, "node", ref.node, "block", ref.cidr)
	}
	return err
}

// dropPending deletes a pending affinity older than the grace period, as read.
func (g *GarbageCollector) dropPending(ctx context.Context, ref affinityRef, s *state, rep *GCReport) error {
	aKey, bKey := affinityKey(ref.node, ref.cidr), blockKey(ref.cidr)
	var bRev int64
	if sb := s.blocks[ref.cidr]; sb != nil {
		if sb.b.node() == ref.node {
			return nil // the block is the node's after all; Check reports the record
		}
		bRev = sb.rev
	}
	err := g.c.commit(ctx, append([]clientv3.Cmp{unchanged(aKey, s.affinities[ref].rev), unchanged(bKey, bRev)}, g.fence...),
		[]clientv3.Op{clientv3.OpDelete(aKey)})
	if errors.Is(err, errRetry) {
		return nil // changed since the pass read it: the next pass decides
	}
	if err == nil {
		rep.AffinitiesReleased = append(rep.AffinitiesReleased, AffinityProblem{ref.node, ref.cidr, "pending claim that never finished"})
	}
	return err
}

// deleteEmpty deletes a block that stayed empty, and its affinity, if unchanged since read.
func (g *GarbageCollector) deleteEmpty(ctx context.Context, sb *storedBlock, rep *GCReport) error {
	ops := []clientv3.Op{clientv3.OpDelete(blockKey(sb.b.CIDR))}
	if node := sb.b.node(); node != "" {
		ops = append(ops, clientv3.OpDelete(affinityKey(node, sb.b.CIDR)))
	}
	err := g.c.commit(ctx, append([]clientv3.Cmp{unchanged(blockKey(sb.b.CIDR), sb.rev)}, g.fence...), ops)
	if errors.Is(err, errRetry) {
		return nil
	}
	if err == nil {
		g.c.log.Info("deleted a block that stayed empty", "block", sb.b.CIDR, "node", sb.b.node())
		rep.BlocksDeleted = append(rep.BlocksDeleted, sb.b.CIDR)
	}
	return err
}

// gcLeaseTTL is how long a garbage collector that died keeps its leadership.
const gcLeaseTTL = 15 // seconds

// gcStepDownTimeout bounds each step of giving up leadership (resign, revoke the lease)
// when the agent stops; past it, the lease simply expires.
const gcStepDownTimeout = 2 * time.Second

// RunGarbageCollector campaigns, as node, to be the cluster's one garbage collector,
// and while it leads runs a pass every interval. Each leadership starts a fresh
// collector, so a new leader waits a full grace period before releasing (the safe
// direction). It returns when ctx ends, resigning so another agent takes over at once.
func (c *Client) RunGarbageCollector(ctx context.Context, node string, interval time.Duration, opts GCOptions) error {
	if err := checkName("node", node); err != nil {
		return fmt.Errorf("ipam gc: %w", err)
	}
	for {
		err := c.leadGC(ctx, node, interval, opts)
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("IPAM garbage collector lost or could not seek leadership; campaigning again", "node", node, "err", err)
		if err := backoff(ctx, 10); err != nil {
			return nil
		}
	}
}

func (c *Client) leadGC(ctx context.Context, node string, interval time.Duration, opts GCOptions) error {
	// Not ctx itself: Close must still revoke the lease after ctx ends. But bounded: with
	// etcd gone, the revoke would wait out the lease's TTL and hold up the agent's exit.
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	defer scancel()
	sess, err := concurrency.NewSession(c.etcd, concurrency.WithTTL(gcLeaseTTL), concurrency.WithContext(sctx))
	if err != nil {
		return err
	}
	defer func() {
		bound := time.AfterFunc(gcStepDownTimeout, scancel)
		defer bound.Stop()
		sess.Close()
	}()
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done(): // lease lost
			cancel()
		case <-lctx.Done():
		}
	}()
	el := concurrency.NewElection(sess, gcLeaderPrefix)
	if err := el.Campaign(lctx, node); err != nil {
		return err
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), gcStepDownTimeout)
		defer rcancel()
		if err := el.Resign(rctx); err != nil {
			c.log.Warn("resigning IPAM gc leadership", "err", err)
		}
	}()
	c.log.Info("leading IPAM garbage collection", "node", node)
	g := c.NewGarbageCollector(opts)
	g.fence = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		rep, err := g.GarbageCollect(lctx)
		switch {
		case err != nil && lctx.Err() == nil:
			c.log.Error("IPAM garbage collection pass", "err", err)
		case len(rep.Released)+len(rep.AffinitiesReleased)+len(rep.BlocksDeleted) > 0:
			c.log.Info("IPAM garbage collection pass", "released", len(rep.Released), "affinities", len(rep.AffinitiesReleased),
				"blocksDeleted", len(rep.BlocksDeleted), "waiting", rep.Waiting)
		}
		select {
		case <-lctx.Done():
			return lctx.Err()
		case <-tick.C:
		}
	}
}

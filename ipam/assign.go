package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// Attribute keys an allocation records, and the handle of a workload's addresses.
const (
	AttrNamespace   = "namespace"
	AttrWorkload    = "workload" // the pod or workload name
	AttrNode        = "node"
	AttrContainerID = "containerID"
)

// WorkloadHandle is the handle tabby-cni gives a container's addresses on a CNI network:
// "<network>.<containerID>".
func WorkloadHandle(network, containerID string) string { return network + "." + containerID }

// WorkloadOf says whether an allocation belongs to a workload, and which: one whose
// handle is a WorkloadHandle of the containerID attribute, with a namespace attribute.
// Check and GC tie such an allocation to the WorkloadEndpoint in that namespace whose
// spec.containerID matches; every other allocation is tied to its node (attribute node).
func WorkloadOf(handle string, attrs map[string]string) (namespace, containerID string, ok bool) {
	namespace, containerID = attrs[AttrNamespace], attrs[AttrContainerID]
	ok = namespace != "" && containerID != "" && strings.HasSuffix(handle, "."+containerID)
	return namespace, containerID, ok
}

// AutoAssignArgs asks for Num4 IPv4 and Num6 IPv6 addresses for one handle on a node.
type AutoAssignArgs struct {
	Num4, Num6 int
	// Handle names the allocation for ReleaseByHandle, e.g. WorkloadHandle(id) or
	// "ipip-tunnel-addr-<node>". Required, without '/'.
	Handle string
	// Attrs are recorded with each address; AttrNode is set to Node.
	Attrs map[string]string
	// Node is the node the addresses are for: its blocks are used first.
	Node string
	// IPv4Pools and IPv6Pools restrict the pools (names or CIDRs, in order of
	// preference); empty means every enabled pool that selects the node.
	IPv4Pools, IPv6Pools []string
	// MaxBlocksPerHost, when above 0, overrides the configured cap for this request.
	MaxBlocksPerHost int
	// Use is what the addresses are for; pools must allow it. Empty means Workload.
	Use api.IPPoolAllowedUse
}

// Assignment is one address AutoAssign or AssignIP allocated. Callers give a workload
// Addr as a /32 or /128; SequenceNumber makes a later release safe against the address
// having been released and given to someone else meanwhile (ReleaseOptions).
type Assignment struct {
	Addr           netip.Addr
	Block          netip.Prefix
	Pool           string
	SequenceNumber uint64
}

// AutoAssignResult holds the addresses of each family, in allocation order.
type AutoAssignResult struct {
	IPv4, IPv6 []Assignment
}

// AutoAssign allocates args.Num4 IPv4 and args.Num6 IPv6 addresses. It is all or
// nothing: if either family cannot be satisfied, what was allocated is released and
// the error (wrapping ErrNoFreeAddresses when space ran out) says why.
func (c *Client) AutoAssign(ctx context.Context, args AutoAssignArgs) (*AutoAssignResult, error) {
	what := fmt.Sprintf("auto-assign %d IPv4 and %d IPv6 for handle %q on node %q", args.Num4, args.Num6, args.Handle, args.Node)
	if err := checkName("handle", args.Handle); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := checkName("node", args.Node); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if args.Num4 < 0 || args.Num6 < 0 || args.Num4+args.Num6 == 0 {
		return nil, fmt.Errorf("%s: ask for at least one address, and no negative number", what)
	}
	if args.Use == "" {
		args.Use = api.IPPoolAllowedUseWorkload
	}
	req := &assignRequest{handle: args.Handle, node: args.Node, attrs: nodeAttrs(args.Attrs, args.Node)}
	res := &AutoAssignResult{}
	var err error
	var r *round // the round the last allocation was made in, still current
	if args.Num4 > 0 {
		res.IPv4, r, err = c.assignFamily(ctx, req, &args, false, nil)
	}
	if err == nil && args.Num6 > 0 {
		res.IPv6, _, err = c.assignFamily(ctx, req, &args, true, r)
	}
	if err != nil {
		c.rollback(ctx, args.Handle, append(res.IPv4, res.IPv6...))
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return res, nil
}

type assignRequest struct {
	handle, node string
	attrs        map[string]string
}

func nodeAttrs(attrs map[string]string, node string) map[string]string {
	out := maps.Clone(attrs)
	if out == nil {
		out = map[string]string{}
	}
	out[AttrNode] = node
	return out
}

// rollback releases what a failed AutoAssign allocated, even if ctx has ended.
func (c *Client) rollback(ctx context.Context, handle string, got []Assignment) {
	if len(got) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	opts := make([]ReleaseOptions, len(got))
	for i, a := range got {
		opts[i] = ReleaseOptions{Addr: a.Addr, Handle: handle, SequenceNumber: &a.SequenceNumber}
	}
	if _, err := c.ReleaseIPs(ctx, opts...); err != nil {
		c.log.Error("releasing the addresses of a failed auto-assign", "handle", handle, "addresses", len(got), "err", err)
	}
}

// storedBlock is a block with the mod revision it was read at.
type storedBlock struct {
	b   *block
	rev int64
}

// round is one consistent read of what an allocation on a node depends on.
type round struct {
	pools      []*poolInfo
	node       *api.Node // nil: no Node resource
	cfg        Config
	affinities map[netip.Prefix]*affinity // the node's
	handle     *handleRecord
	handleRev  int64
}

func (c *Client) readRound(ctx context.Context, node, handle string) (*round, error) {
	resp, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(poolsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(resourceKey(nodeKind, "", node)),
		clientv3.OpGet(configKey),
		clientv3.OpGet(nodeAffinitiesPrefix(node), clientv3.WithPrefix()),
		clientv3.OpGet(handleKey(handle)),
	).Commit()
	if err != nil {
		return nil, err
	}
	r := &round{affinities: map[netip.Prefix]*affinity{}}
	if r.pools, err = poolsFromKVs(rangeKVs(resp, 0)); err != nil {
		return nil, err
	}
	if kv := firstKV(resp, 1); kv != nil {
		if r.node, err = decodeJSON[api.Node](kv); err != nil {
			return nil, err
		}
	}
	if r.cfg, err = decodeConfig(firstKV(resp, 2)); err != nil {
		return nil, err
	}
	for _, kv := range rangeKVs(resp, 3) {
		_, cidr, err := parseAffinityKey(string(kv.Key))
		if err != nil {
			return nil, err
		}
		if r.affinities[cidr], err = decodeJSON[affinity](kv); err != nil {
			return nil, err
		}
	}
	r.handle = &handleRecord{Handle: handle, Blocks: map[string]int{}}
	if kv := firstKV(resp, 4); kv != nil {
		if r.handle, err = decodeJSON[handleRecord](kv); err != nil {
			return nil, err
		}
		r.handleRev = kv.ModRevision
	}
	return r, nil
}

// ownCount counts the node's claims of one IP version.
func (r *round) ownCount(v6 bool) int {
	n := 0
	for cidr := range r.affinities {
		if cidr.Addr().Is6() == v6 {
			n++
		}
	}
	return n
}

// getBlocks reads the given blocks in one transaction; absent ones are left out.
func (c *Client) getBlocks(ctx context.Context, cidrs []netip.Prefix) (map[netip.Prefix]*storedBlock, error) {
	out := map[netip.Prefix]*storedBlock{}
	if len(cidrs) == 0 {
		return out, nil
	}
	ops := make([]clientv3.Op, len(cidrs))
	for i, cidr := range cidrs {
		ops[i] = clientv3.OpGet(blockKey(cidr))
	}
	resp, err := c.etcd.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	for i, cidr := range cidrs {
		if kv := firstKV(resp, i); kv != nil {
			b, err := decodeJSON[block](kv)
			if err != nil {
				return nil, err
			}
			out[cidr] = &storedBlock{b, kv.ModRevision}
		}
	}
	return out, nil
}

// poolBlocks reads every block of the given pools.
func (c *Client) poolBlocks(ctx context.Context, pools []*poolInfo) (map[netip.Prefix]*storedBlock, error) {
	resp, err := c.etcd.Get(ctx, blocksPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[netip.Prefix]*storedBlock{}
	for _, kv := range resp.Kvs {
		cidr, err := parseCIDRKey(string(kv.Key[len(blocksPrefix):]))
		if err != nil {
			return nil, err
		}
		if poolHolding(pools, cidr) == nil {
			continue
		}
		b, err := decodeJSON[block](kv)
		if err != nil {
			return nil, err
		}
		out[cidr] = &storedBlock{b, kv.ModRevision}
	}
	return out, nil
}

func view(sb *storedBlock) blockView {
	return blockView{cidr: sb.b.CIDR, node: sb.b.node(), free: sb.b.free()}
}

// assignFamily allocates the Num4 or Num6 addresses of one IP version, round by round:
// read, choose (nextStep), act, until enough or exhausted. What it returns was
// allocated even when it also returns an error. A first round the caller has (the one
// the other IP version's last allocation was made in: allocateFrom keeps its handle
// current) saves reading one; it returns the round of its own last allocation.
func (c *Client) assignFamily(ctx context.Context, req *assignRequest, args *AutoAssignArgs, v6 bool, first *round) ([]Assignment, *round, error) {
	want, requested := args.Num4, args.IPv4Pools
	if v6 {
		want, requested = args.Num6, args.IPv6Pools
	}
	var out []Assignment
	var all map[netip.Prefix]*storedBlock // every block of the pools, read when needed
	conflicts, idle := 0, 0
	r := first
	for len(out) < want {
		// A round that allocates nothing loads blocks or claims one; a few in a row
		// are normal, hundreds would be a bug looping.
		if idle++; idle > 3*maxAttempts {
			return out, nil, fmt.Errorf("allocator made no progress in %d rounds", idle)
		}
		var err error
		if r == nil {
			if r, err = c.readRound(ctx, req.node, req.handle); err != nil {
				return out, nil, err
			}
		}
		cur, allocated := r, false
		r = nil // the next round reads afresh, unless this one allocates
		pools, err := selectPools(cur.pools, v6, requested, args.Use, req.node, cur.node)
		if err != nil {
			return out, nil, err
		}
		var ownCIDRs []netip.Prefix
		for cidr := range cur.affinities {
			if poolHolding(pools, cidr) != nil {
				ownCIDRs = append(ownCIDRs, cidr)
			}
		}
		own, err := c.getBlocks(ctx, ownCIDRs)
		if err != nil {
			return out, nil, err
		}
		st := &allocState{node: req.node, cfg: cur.cfg, pools: pools, ownCount: cur.ownCount(v6)}
		if args.MaxBlocksPerHost > 0 {
			st.cfg.MaxBlocksPerHost = args.MaxBlocksPerHost
		}
		for _, p := range pools {
			for _, sb := range own {
				if p.holdsBlock(sb.b.CIDR) && sb.b.node() == req.node {
					st.own = append(st.own, view(sb))
				}
			}
		}
		sortViews(st.own, pools)
		if all != nil {
			st.all = map[netip.Prefix]blockView{}
			for cidr, sb := range all {
				if poolHolding(pools, cidr) != nil {
					st.all[cidr] = view(sb)
				}
			}
		}

		s := nextStep(st)
		switch s.kind {
		case stepLoadAll:
			all, err = c.poolBlocks(ctx, pools)
		case stepClaim:
			err = c.claimBlock(ctx, req.node, s.block, s.pool)
			all = nil // the claim changed the blocks
		case stepAllocate:
			sb := own[s.block]
			if sb == nil {
				sb = all[s.block]
			}
			var got []Assignment
			got, err = c.allocateFrom(ctx, sb, s.pool, cur, req, want-len(out))
			out = append(out, got...)
			if len(got) > 0 {
				idle = 0
			}
			allocated = err == nil
		case stepExhausted:
			return out, nil, s.err
		}
		if errors.Is(err, errRetry) {
			conflicts++
			if conflicts == maxAttempts {
				return out, nil, fmt.Errorf("%w: other writers kept changing the same blocks (%d attempts)", datastore.ErrConflict, conflicts)
			}
			all = nil // stale: read afresh when needed
			if err := backoff(ctx, conflicts); err != nil {
				return out, nil, err
			}
			continue
		}
		if err != nil {
			return out, nil, err
		}
		if allocated {
			r = cur // allocateFrom kept its handle current; nothing else changed
		}
	}
	return out, r, nil
}

// sortViews orders blocks by pool preference, then address.
func sortViews(vs []blockView, pools []*poolInfo) {
	rank := func(b blockView) int {
		for i, p := range pools {
			if p.holdsBlock(b.cidr) {
				return i
			}
		}
		return len(pools)
	}
	slices.SortFunc(vs, func(a, b blockView) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return a.cidr.Addr().Compare(b.cidr.Addr())
	})
}

// allocateFrom takes up to n free addresses of one block for the request, writing the
// block and the handle record in one compare-and-swap transaction that also requires
// the pool unchanged. sb and r.handle are updated in place (the caller reads afresh
// after errRetry).
func (c *Client) allocateFrom(ctx context.Context, sb *storedBlock, pool *poolInfo, r *round, req *assignRequest, n int) ([]Assignment, error) {
	b := sb.b
	ords := b.autoAssign(n, req.handle, req.attrs)
	r.handle.Blocks[b.CIDR.String()] += len(ords)
	rev, err := c.commitRev(ctx,
		[]clientv3.Cmp{unchanged(blockKey(b.CIDR), sb.rev), unchanged(handleKey(req.handle), r.handleRev), unchanged(pool.key, pool.rev)},
		[]clientv3.Op{putJSON(blockKey(b.CIDR), b), putJSON(handleKey(req.handle), r.handle)})
	if err != nil {
		return nil, err
	}
	sb.rev, r.handleRev = rev, rev
	out := make([]Assignment, len(ords))
	for i, ord := range ords {
		out[i] = Assignment{Addr: b.addr(ord), Block: b.CIDR, Pool: pool.Name, SequenceNumber: b.seqOf(ord)}
	}
	if node := b.node(); node != req.node {
		c.log.Debug("borrowed addresses from another node's block", "node", req.node, "block", b.CIDR, "owner", node, "count", len(ords))
	}
	return out, nil
}

// claimBlock claims a block for a node in two steps: it writes the node's affinity
// as pending, then creates the block (which fails if it exists: the race's arbiter)
// and confirms the affinity in one transaction. A node that loses the race deletes its
// pending affinity and gets errRetry; one that finds the block already its own (another
// process on the node won) succeeds.
func (c *Client) claimBlock(ctx context.Context, node string, cidr netip.Prefix, pool *poolInfo) error {
	affKey, bKey := affinityKey(node, cidr), blockKey(cidr)
	now := time.Now().UTC()
	resp, err := c.etcd.Txn(ctx).If(unchanged(affKey, 0)).
		Then(putJSON(affKey, affinity{State: affinityPending, Time: now})).
		Else(clientv3.OpGet(affKey)).Commit()
	if err != nil {
		return fmt.Errorf("claim block %s: %w", cidr, err)
	}
	pendingRev := resp.Header.Revision
	if !resp.Succeeded {
		// A claim of ours from before (a process that died between the steps, or one
		// racing us on this node): carry it on.
		kv := firstKV(resp, 0)
		if kv == nil {
			return errRetry
		}
		pendingRev = kv.ModRevision
	}
	b := newBlock(cidr, node, uint64(now.UnixNano()))
	resp, err = c.etcd.Txn(ctx).
		If(unchanged(bKey, 0), unchanged(affKey, pendingRev), unchanged(pool.key, pool.rev)).
		Then(putJSON(bKey, b), putJSON(affKey, affinity{State: affinityConfirmed, Time: now})).
		Else(clientv3.OpGet(bKey)).Commit()
	if err != nil {
		return fmt.Errorf("claim block %s: %w", cidr, err)
	}
	if resp.Succeeded {
		c.log.Info("claimed block", "node", node, "block", cidr, "pool", pool.Name)
		return nil
	}
	if kv := firstKV(resp, 0); kv != nil {
		if won, err := decodeJSON[block](kv); err == nil && won.node() == node {
			return nil
		}
	}
	// Lost (or the pool changed): withdraw the pending claim unless it moved on.
	if _, err := c.etcd.Txn(ctx).If(unchanged(affKey, pendingRev)).Then(clientv3.OpDelete(affKey)).Commit(); err != nil {
		return fmt.Errorf("claim block %s: withdraw pending affinity: %w", cidr, err)
	}
	c.log.Debug("lost the race for a block", "node", node, "block", cidr)
	return errRetry
}

// AssignIPArgs asks for one given address.
type AssignIPArgs struct {
	Addr   netip.Addr
	Handle string
	Attrs  map[string]string // AttrNode is set to Node
	Node   string
}

// AssignIP allocates one given address, which must lie in an IPPool (enabled or not:
// asking for an address is deliberate). If its block does not exist yet, the node
// claims it (as AutoAssign would, within autoAllocateBlocks and maxBlocksPerHost); a
// block of another node is used unless strict affinity is on.
func (c *Client) AssignIP(ctx context.Context, args AssignIPArgs) (Assignment, error) {
	var out Assignment
	what := fmt.Sprintf("assign %s to handle %q on node %q", args.Addr, args.Handle, args.Node)
	if err := checkName("handle", args.Handle); err != nil {
		return out, fmt.Errorf("%s: %w", what, err)
	}
	if err := checkName("node", args.Node); err != nil {
		return out, fmt.Errorf("%s: %w", what, err)
	}
	req := &assignRequest{handle: args.Handle, node: args.Node, attrs: nodeAttrs(args.Attrs, args.Node)}
	err := c.retry(ctx, what, func() error {
		r, err := c.readRound(ctx, req.node, req.handle)
		if err != nil {
			return err
		}
		pool := poolContaining(r.pools, args.Addr)
		if pool == nil {
			return fmt.Errorf("%s is not in any IPPool", args.Addr)
		}
		cidr := blockOf(args.Addr, pool.Spec.BlockSize)
		blocks, err := c.getBlocks(ctx, []netip.Prefix{cidr})
		if err != nil {
			return err
		}
		sb := blocks[cidr]
		if sb == nil {
			st := &allocState{node: req.node, cfg: r.cfg, ownCount: r.ownCount(args.Addr.Is6())}
			if !st.mayClaim() {
				return fmt.Errorf("block %s is unclaimed and node %q may not claim another (autoAllocateBlocks %t, maxBlocksPerHost %d)",
					cidr, req.node, r.cfg.AutoAllocateBlocks, r.cfg.MaxBlocksPerHost)
			}
			if err := c.claimBlock(ctx, req.node, cidr, pool); err != nil {
				return err
			}
			return errRetry // claimed: read it and assign
		}
		if owner := sb.b.node(); r.cfg.StrictAffinity && owner != req.node {
			return fmt.Errorf("block %s belongs to node %q and strictAffinity forbids borrowing", cidr, owner)
		}
		ord, _ := sb.b.ordinal(args.Addr)
		if err := sb.b.assign(ord, req.handle, req.attrs); err != nil {
			return fmt.Errorf("%w (handle %q)", err, sb.b.holder(ord).Handle)
		}
		r.handle.Blocks[cidr.String()]++
		err = c.commit(ctx,
			[]clientv3.Cmp{unchanged(blockKey(cidr), sb.rev), unchanged(handleKey(req.handle), r.handleRev), unchanged(pool.key, pool.rev)},
			[]clientv3.Op{putJSON(blockKey(cidr), sb.b), putJSON(handleKey(req.handle), r.handle)})
		if err != nil {
			return err
		}
		out = Assignment{Addr: args.Addr, Block: cidr, Pool: pool.Name, SequenceNumber: sb.b.seqOf(ord)}
		return nil
	})
	return out, err
}

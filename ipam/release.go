package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrStaleRelease is wrapped by a release whose handle or sequence number does not
// match the allocation: the caller's information is out of date (the address was
// released and allocated again), so nothing in that block is released.
var ErrStaleRelease = errors.New("stale release")

// ErrNotAllocated is wrapped by GetAllocation for an address nobody holds.
var ErrNotAllocated = errors.New("not allocated")

// ReleaseOptions names one address to release, and optionally what the caller knows of
// its allocation.
type ReleaseOptions struct {
	Addr netip.Addr
	// Handle, when set, must be the address's handle.
	Handle string
	// SequenceNumber, when set, must be the allocation's (Assignment.SequenceNumber,
	// Allocation.SequenceNumber).
	SequenceNumber *uint64
}

// maxReleasePerTxn bounds the addresses, hence the handles, one release transaction
// touches: an external etcd allows 128 operations per transaction by default.
const maxReleasePerTxn = 100

// errNoBlock: the block to release from does not exist.
var errNoBlock = errors.New("no such block")

// released is one address a release freed, and the handle that held it.
type released struct {
	addr   netip.Addr
	handle string
}

// ReleaseIPs releases addresses and returns those that were not allocated. Each
// block's addresses are released in one transaction, so an error (ErrStaleRelease for
// a mismatched handle or sequence number) leaves that block's addresses allocated; the
// other blocks' releases stand.
func (c *Client) ReleaseIPs(ctx context.Context, opts ...ReleaseOptions) ([]netip.Addr, error) {
	cidrs, err := c.blockCIDRs(ctx)
	if err != nil {
		return nil, fmt.Errorf("release addresses: %w", err)
	}
	var notAllocated []netip.Addr
	byBlock := map[netip.Prefix][]ReleaseOptions{}
	for _, o := range opts {
		if cidr, ok := containingBlock(cidrs, o.Addr); ok {
			byBlock[cidr] = append(byBlock[cidr], o)
		} else {
			notAllocated = append(notAllocated, o.Addr)
		}
	}
	var errs []error
	for _, cidr := range slices.SortedFunc(maps.Keys(byBlock), comparePrefix) {
		for chunk := range slices.Chunk(byBlock[cidr], maxReleasePerTxn) {
			var missing []netip.Addr
			err := c.retry(ctx, fmt.Sprintf("release from block %s", cidr), func() error {
				var err error
				_, missing, err = c.releaseOnce(ctx, cidr, pickAddrs(chunk), nil)
				if errors.Is(err, errNoBlock) {
					missing, err = addrsOf(chunk), nil
				}
				return err
			})
			notAllocated = append(notAllocated, missing...)
			errs = append(errs, err)
		}
	}
	return notAllocated, errors.Join(errs...)
}

func addrsOf(opts []ReleaseOptions) []netip.Addr {
	out := make([]netip.Addr, len(opts))
	for i, o := range opts {
		out[i] = o.Addr
	}
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// blockCIDRs lists the existing blocks (keys only).
func (c *Client) blockCIDRs(ctx context.Context) (map[netip.Prefix]bool, error) {
	resp, err := c.etcd.Get(ctx, blocksPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Prefix]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		cidr, err := parseCIDRKey(string(kv.Key[len(blocksPrefix):]))
		if err != nil {
			return nil, err
		}
		out[cidr] = true
	}
	return out, nil
}

// containingBlock finds the block that holds a, whatever its size.
func containingBlock(cidrs map[netip.Prefix]bool, a netip.Addr) (netip.Prefix, bool) {
	for bits := a.BitLen(); bits >= 0; bits-- {
		if p := blockOf(a, bits); cidrs[p] {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// picker chooses the ordinals a release frees in block b, and reports the requested
// addresses that are not allocated.
type picker func(b *block) (ords []int, notAllocated []netip.Addr, err error)

// pickAddrs picks given addresses, refusing the lot if one is stale.
func pickAddrs(opts []ReleaseOptions) picker {
	return func(b *block) ([]int, []netip.Addr, error) {
		var ords []int
		var missing []netip.Addr
		for _, o := range opts {
			ord, _ := b.ordinal(o.Addr)
			h := b.holder(ord)
			switch {
			case h == nil:
				missing = append(missing, o.Addr)
			case o.Handle != "" && h.Handle != o.Handle:
				return nil, nil, fmt.Errorf("%w: %s is held by handle %q, not %q", ErrStaleRelease, o.Addr, h.Handle, o.Handle)
			case o.SequenceNumber != nil && *o.SequenceNumber != b.seqOf(ord):
				return nil, nil, fmt.Errorf("%w: %s was allocated with sequence number %d, not %d (it was released and allocated again)",
					ErrStaleRelease, o.Addr, b.seqOf(ord), *o.SequenceNumber)
			case !slices.Contains(ords, ord):
				ords = append(ords, ord)
			}
		}
		return ords, missing, nil
	}
}

// pickHandle picks every address of a handle.
func pickHandle(handle string) picker {
	return func(b *block) ([]int, []netip.Addr, error) {
		var ords []int
		for ord := range b.Allocations {
			if h := b.holder(ord); h != nil && h.Handle == handle {
				ords = append(ords, ord)
			}
		}
		return ords, nil, nil
	}
}

// releaseOnce reads a block and the handles of the addresses pick chooses, and frees
// them in one compare-and-swap transaction that also updates the handle records and
// holds the extra compares: errRetry if anything changed since the read, errNoBlock if
// the block does not exist.
func (c *Client) releaseOnce(ctx context.Context, cidr netip.Prefix, pick picker, extra []clientv3.Cmp) ([]released, []netip.Addr, error) {
	bKey := blockKey(cidr)
	resp, err := c.etcd.Get(ctx, bKey)
	if err != nil {
		return nil, nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil, errNoBlock
	}
	b, err := decodeJSON[block](resp.Kvs[0])
	if err != nil {
		return nil, nil, err
	}
	bRev := resp.Kvs[0].ModRevision
	ords, missing, err := pick(b)
	if err != nil || len(ords) == 0 {
		return nil, missing, err
	}
	out := make([]released, len(ords))
	perHandle := map[string]int{}
	for i, ord := range ords {
		h := b.holder(ord).Handle
		out[i] = released{b.addr(ord), h}
		perHandle[h]++
	}
	handles := slices.Sorted(maps.Keys(perHandle))
	gets := make([]clientv3.Op, len(handles))
	for i, h := range handles {
		gets[i] = clientv3.OpGet(handleKey(h))
	}
	hresp, err := c.etcd.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, nil, err
	}
	b.release(ords)
	cmps := append([]clientv3.Cmp{unchanged(bKey, bRev)}, extra...)
	ops := []clientv3.Op{putJSON(bKey, b)}
	for i, h := range handles {
		kv := firstKV(hresp, i)
		cmps = append(cmps, unchanged(handleKey(h), modRev(kv)))
		if kv == nil {
			continue // no record to count down (Check reports such an allocation)
		}
		rec, err := decodeJSON[handleRecord](kv)
		if err != nil {
			return nil, nil, err
		}
		if rec.Blocks[cidr.String()] -= perHandle[h]; rec.Blocks[cidr.String()] <= 0 {
			delete(rec.Blocks, cidr.String())
		}
		if len(rec.Blocks) == 0 {
			ops = append(ops, clientv3.OpDelete(handleKey(h)))
		} else {
			ops = append(ops, putJSON(handleKey(h), rec))
		}
	}
	if err := c.commit(ctx, cmps, ops); err != nil {
		return nil, nil, err
	}
	return out, missing, nil
}

// ReleaseByHandle releases every address of a handle and returns them; a handle that
// does not exist has nothing to release. Each block's share goes in one transaction
// with the handle record, so the record always matches the blocks.
func (c *Client) ReleaseByHandle(ctx context.Context, handle string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := c.retry(ctx, fmt.Sprintf("release handle %q", handle), func() error {
		resp, err := c.etcd.Get(ctx, handleKey(handle))
		if err != nil || len(resp.Kvs) == 0 {
			return err
		}
		rec, err := decodeJSON[handleRecord](resp.Kvs[0])
		if err != nil {
			return err
		}
		for _, s := range slices.Sorted(maps.Keys(rec.Blocks)) {
			cidr, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("handle %q names block %q: %w", handle, s, err)
			}
			rel, _, err := c.releaseOnce(ctx, cidr, pickHandle(handle), nil)
			if errors.Is(err, errNoBlock) {
				err = c.forgetBlock(ctx, handle, cidr)
			}
			if err != nil {
				return err
			}
			for _, r := range rel {
				out = append(out, r.addr)
			}
		}
		return nil
	})
	return out, err
}

// forgetBlock drops a block that does not exist from a handle record.
func (c *Client) forgetBlock(ctx context.Context, handle string, cidr netip.Prefix) error {
	key := handleKey(handle)
	resp, err := c.etcd.Txn(ctx).Then(clientv3.OpGet(key), clientv3.OpGet(blockKey(cidr), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return err
	}
	kv := firstKV(resp, 0)
	if kv == nil || resp.Responses[1].GetResponseRange().Count > 0 {
		return errRetry
	}
	rec, err := decodeJSON[handleRecord](kv)
	if err != nil {
		return err
	}
	delete(rec.Blocks, cidr.String())
	op := putJSON(key, rec)
	if len(rec.Blocks) == 0 {
		op = clientv3.OpDelete(key)
	}
	c.log.Warn("handle named a block that does not exist; dropped it from the handle", "handle", handle, "block", cidr)
	return c.commit(ctx, []clientv3.Cmp{unchanged(key, kv.ModRevision), unchanged(blockKey(cidr), 0)}, []clientv3.Op{op})
}

package ipam

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// PoolInUseCheck is the datastore write check that refuses to delete an IPPool, or to
// change its CIDR or block size, while addresses are allocated in blocks the pool would
// no longer hold. Register it on every datastore client that writes pools
// (Client.AddWriteCheck); tabbyctl and tabby-node do. The check reads the blocks in the
// same snapshot as the pool write, and allocations compare the pool's revision, so an
// allocation and a pool deletion racing each other cannot both succeed. Empty blocks of
// a deleted pool, and their affinities, are left to the garbage collector.
func PoolInUseCheck() datastore.WriteCheck {
	return datastore.WriteCheck{Kind: poolKind, Prefixes: []string{blocksPrefix}, Check: checkPoolInUse}
}

func checkPoolInUse(old, new api.Resource, read map[string][]*mvccpb.KeyValue) error {
	if old == nil {
		return nil
	}
	was := old.(*api.IPPool)
	wasPrefix, err := was.Prefix()
	if err != nil {
		return nil // a stored pool that does not parse holds no blocks we could tell apart
	}
	var next *poolInfo
	if new != nil {
		p := new.(*api.IPPool)
		prefix, err := p.Prefix()
		if err != nil {
			return err
		}
		if prefix == wasPrefix && p.Spec.BlockSize == was.Spec.BlockSize {
			return nil
		}
		next = &poolInfo{IPPool: p, prefix: prefix}
	}
	addrs, blocks := 0, 0
	for _, kv := range read[blocksPrefix] {
		cidr, err := parseCIDRKey(string(kv.Key[len(blocksPrefix):]))
		if err != nil || !wasPrefix.Contains(cidr.Addr()) || (next != nil && next.holdsBlock(cidr)) {
			continue
		}
		b, err := decodeJSON[block](kv)
		if err != nil {
			return fmt.Errorf("IPPool %q: cannot tell whether it is in use: %w", was.Name, err)
		}
		if n := b.inUse(); n > 0 {
			addrs += n
			blocks++
		}
	}
	if addrs == 0 {
		return nil
	}
	const hint = "release them first (tabbyctl ipam show --show-blocks)"
	if next == nil {
		return fmt.Errorf("IPPool %q (%s) still has %d allocated addresses in %d blocks: %s", was.Name, wasPrefix, addrs, blocks, hint)
	}
	return fmt.Errorf("IPPool %q: changing cidr %s/blockSize %d to %s/blockSize %d would leave %d allocated addresses in %d blocks outside it: %s",
		was.Name, wasPrefix, was.Spec.BlockSize, next.prefix, next.Spec.BlockSize, addrs, blocks, hint)
}

package ipam

import (
	"context"
	"encoding/json"
	"maps"
	"net/netip"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchAffineBlocks streams the blocks whose affinity to node is confirmed: the whole set
// after the first read and after every change, sorted. A pending claim is left out until
// it is confirmed: its block may still go to another node. A slow reader sees only the
// latest set. The watch re-reads after a broken stream or a compaction, so the set it
// sends is always exact; the channel closes when ctx ends.
func (c *Client) WatchAffineBlocks(ctx context.Context, node string) <-chan []netip.Prefix {
	out := make(chan []netip.Prefix, 1)
	go func() {
		defer close(out)
		prefix := nodeAffinitiesPrefix(node)
		for attempt := 1; ctx.Err() == nil; attempt++ {
			resp, err := c.etcd.Get(ctx, prefix, clientv3.WithPrefix())
			if err != nil {
				c.log.Warn("read block affinities; retrying", "node", node, "err", err)
				_ = backoff(ctx, attempt)
				continue
			}
			blocks := map[string]netip.Prefix{}
			for _, kv := range resp.Kvs {
				c.noteAffinity(blocks, string(kv.Key), kv.Value)
			}
			sendLatest(out, blocks)
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range c.etcd.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
				if err := wr.Err(); err != nil {
					c.log.Warn("block affinity watch broke; re-reading", "node", node, "err", err)
					break
				}
				for _, ev := range wr.Events {
					key := string(ev.Kv.Key)
					if ev.Type == clientv3.EventTypeDelete {
						delete(blocks, key)
					} else {
						c.noteAffinity(blocks, key, ev.Kv.Value)
					}
				}
				sendLatest(out, blocks)
				attempt = 0
			}
			cancel()
			_ = backoff(ctx, attempt)
		}
	}()
	return out
}

// noteAffinity records the affinity at key in blocks if it is confirmed, and drops it
// otherwise.
func (c *Client) noteAffinity(blocks map[string]netip.Prefix, key string, value []byte) {
	delete(blocks, key)
	_, cidr, err := parseAffinityKey(key)
	var a affinity
	if err == nil {
		err = json.Unmarshal(value, &a)
	}
	if err != nil {
		c.log.Warn("ignoring unreadable block affinity", "key", key, "err", err)
		return
	}
	if a.State == affinityConfirmed {
		blocks[key] = cidr
	}
}

// sendLatest replaces whatever set is waiting in out with the current one.
func sendLatest(out chan []netip.Prefix, blocks map[string]netip.Prefix) {
	set := slices.SortedFunc(maps.Values(blocks), func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	select {
	case <-out:
	default:
	}
	out <- set
}

package ipam

import (
	"context"
	"encoding/json"
	"maps"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchAllAffinities streams every confirmed block affinity of every node, block -> node:
// the whole map after the first read and after every change (a slow reader sees only the
// latest). It re-reads after a broken stream; the channel closes when ctx ends. VXLAN
// routes come from it, so they need no BGP.
func (c *Client) WatchAllAffinities(ctx context.Context) <-chan map[netip.Prefix]string {
	out := make(chan map[netip.Prefix]string, 1)
	send := func(byKey map[string]netip.Prefix) {
		m := make(map[netip.Prefix]string, len(byKey))
		for k, p := range byKey {
			if node, _, err := parseAffinityKey(k); err == nil {
				m[p] = node
			}
		}
		select {
		case <-out:
		default:
		}
		out <- maps.Clone(m)
	}
	go func() {
		defer close(out)
		for attempt := 1; ctx.Err() == nil; attempt++ {
			resp, err := c.etcd.Get(ctx, affinitiesPrefix, clientv3.WithPrefix())
			if err != nil {
				c.log.Warn("read block affinities; retrying", "err", err)
				_ = backoff(ctx, attempt)
				continue
			}
			byKey := map[string]netip.Prefix{}
			for _, kv := range resp.Kvs {
				c.noteAffinity(byKey, string(kv.Key), kv.Value)
			}
			send(byKey)
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range c.etcd.Watch(wctx, affinitiesPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
				if err := wr.Err(); err != nil {
					c.log.Warn("block affinity watch broke; re-reading", "err", err)
					break
				}
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						delete(byKey, string(ev.Kv.Key))
					} else {
						c.noteAffinity(byKey, string(ev.Kv.Key), ev.Kv.Value)
					}
				}
				send(byKey)
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

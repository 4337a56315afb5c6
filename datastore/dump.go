package datastore

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
)

// Dump is the datastore at one revision: every resource, and the keys under the
// prefixes asked for. Keys under a lease (records of a running agent, which go with it)
// are left out: they are state of the processes, not of the cluster.
type Dump struct {
	Revision  int64
	Resources []api.Resource // in key order: by kind's plural, namespace, name
	Raw       map[string][]*mvccpb.KeyValue
}

// Dump reads every resource and every key under rawPrefixes in one transaction. A
// stored value that does not decode is an error naming its key.
func (c *Client) Dump(ctx context.Context, rawPrefixes ...string) (*Dump, error) {
	ops := []clientv3.Op{clientv3.OpGet(ResourcePrefix, clientv3.WithPrefix())}
	for _, p := range rawPrefixes {
		ops = append(ops, clientv3.OpGet(p, clientv3.WithPrefix()))
	}
	resp, err := c.etcd.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read the datastore: %w", err)
	}
	d := &Dump{Revision: resp.Header.Revision, Raw: map[string][]*mvccpb.KeyValue{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if kv.Lease != 0 {
			continue
		}
		plural, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), ResourcePrefix), "/")
		kind, err := api.LookupKind(plural)
		if err != nil || kind.Plural != plural {
			return nil, fmt.Errorf("key %s: not a resource kind tabby knows", kv.Key)
		}
		r, err := decode(kind, kv)
		if err != nil {
			return nil, err
		}
		d.Resources = append(d.Resources, r)
	}
	for i, p := range rawPrefixes {
		for _, kv := range resp.Responses[i+1].GetResponseRange().Kvs {
			if kv.Lease == 0 {
				d.Raw[p] = append(d.Raw[p], kv)
			}
		}
	}
	return d, nil
}

// Keys counts the keys under prefix that are not under a lease, and returns the first
// of them: "is this datastore empty" for an import.
func (c *Client) Keys(ctx context.Context, prefix string) (int, string, error) {
	resp, err := c.etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, "", fmt.Errorf("read keys under %s: %w", prefix, err)
	}
	n, first := 0, ""
	for _, kv := range resp.Kvs {
		if kv.Lease != 0 {
			continue
		}
		if n == 0 {
			first = string(kv.Key)
		}
		n++
	}
	return n, first, nil
}

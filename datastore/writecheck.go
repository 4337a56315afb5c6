package datastore

import (
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
)

// WriteCheck vets writes of one kind against other keys, atomically with the write: a
// transaction that writes a resource of Kind also reads every key under Prefixes in the
// same snapshot as its own keys, calls Check once per op of that kind, and commits only
// if none of those keys changed since the read (otherwise it re-reads and checks again).
// Only keys added or changed under Prefixes invalidate the read, not keys deleted (etcd
// compares the keys that exist), unless Present is set. IPAM uses it to refuse deleting
// an IPPool whose addresses are still allocated.
type WriteCheck struct {
	Kind *api.Kind
	// Prefixes are etcd key prefixes (any, not only resources) the check reads.
	Prefixes []string
	// Present says Check relies on keys being there ("refuse unless the tier exists"):
	// the commit is then also valid only while every key read under Prefixes exists as
	// read, so a delete of one meanwhile makes the write check again. Leave it unset for
	// checks that fewer keys cannot make fail ("refuse while something is still there"):
	// it costs a compare per key.
	Present bool
	// Check returns an error to refuse the op. old is the stored resource (nil if there
	// is none, or it does not decode), new the resource to be stored (defaulted and
	// validated; nil for a delete); read holds the key-values under each prefix as the
	// same transaction leaves them: less the keys it deletes (deleting a thing and its
	// users together is no use of it), with the resources of other kinds than Kind it
	// writes (a policy and the tier it names may come in one manifest; a check that looks
	// for others of its own kind, "no second pool of a family", does not see the one it
	// vets). The error is wrapped with the op, as in "delete ippools/pool-a: <err>".
	Check func(old, new api.Resource, read map[string][]*mvccpb.KeyValue) error
}

// AddWriteCheck registers wc for every later write through c (Create, Update, Apply,
// Delete and Txn). Writes through other clients are not checked.
func (c *Client) AddWriteCheck(wc WriteCheck) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks = append(c.checks, wc)
}

// writeChecksFor returns the checks that apply to some op of ps and the distinct
// prefixes they read, in registration order.
func (c *Client) writeChecksFor(ps []*pending) ([]WriteCheck, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var checks []WriteCheck
	var prefixes []string
	for _, wc := range c.checks {
		if !slices.ContainsFunc(ps, func(p *pending) bool { return p.ref.kind == wc.Kind }) {
			continue
		}
		checks = append(checks, wc)
		for _, prefix := range wc.Prefixes {
			if !slices.Contains(prefixes, prefix) {
				prefixes = append(prefixes, prefix)
			}
		}
	}
	return checks, prefixes
}

// runWriteChecks calls each check for the ops of its kind and returns the compares that
// keep the commit valid only while the prefixes read are unchanged.
func runWriteChecks(ps []*pending, snap *snapshot, checks []WriteCheck) ([]clientv3.Cmp, error) {
	var cmps []clientv3.Cmp
	guarded := map[string]bool{}
	for _, wc := range checks {
		read := make(map[string][]*mvccpb.KeyValue, len(wc.Prefixes))
		for _, prefix := range wc.Prefixes {
			kvs, err := asWritten(snap.prefixes[prefix], prefix, ps, wc.Kind)
			if err != nil {
				return nil, err
			}
			read[prefix] = kvs
		}
		for i, p := range ps {
			if p.ref.kind != wc.Kind {
				continue
			}
			var old, cur api.Resource
			if kv := snap.cur[i]; kv != nil {
				old, _ = decode(p.ref.kind, kv)
			}
			if p.action != OpDelete {
				cur = p.obj
			}
			if err := wc.Check(old, cur, read); err != nil {
				return nil, fmt.Errorf("%s: %w", p.desc, err)
			}
		}
		for _, prefix := range wc.Prefixes {
			if !guarded[prefix] {
				guarded[prefix] = true
				// Every key under prefix is at most as new as the snapshot.
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(prefix), "<", snap.rev+1).WithPrefix())
			}
			if wc.Present {
				// Every key read is still there: a deleted key's ModRevision is 0.
				for _, kv := range snap.prefixes[prefix] {
					cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
				}
			}
		}
	}
	return cmps, nil
}

// asWritten is kvs, the key-values under prefix, as ps would leave them: less the keys
// they delete, with the resources they write under prefix (in place of the stored
// ones), except those of kind checked.
func asWritten(kvs []*mvccpb.KeyValue, prefix string, ps []*pending, checked *api.Kind) ([]*mvccpb.KeyValue, error) {
	touched := map[string]bool{}
	var written []*mvccpb.KeyValue
	for _, p := range ps {
		if !strings.HasPrefix(p.ref.key, prefix) || (p.action != OpDelete && p.ref.kind == checked) {
			continue
		}
		touched[p.ref.key] = true
		if p.action == OpDelete {
			continue
		}
		val, err := encode(p.obj)
		if err != nil {
			return nil, fmt.Errorf("%s: encode: %w", p.desc, err)
		}
		written = append(written, &mvccpb.KeyValue{Key: []byte(p.ref.key), Value: []byte(val)})
	}
	if len(touched) == 0 {
		return kvs, nil
	}
	out := slices.DeleteFunc(slices.Clone(kvs), func(kv *mvccpb.KeyValue) bool { return touched[string(kv.Key)] })
	return append(out, written...), nil
}

// hasKey says whether kvs (a check's read) holds key: for checks that need a key there.
func hasKey(kvs []*mvccpb.KeyValue, key string) bool {
	return slices.ContainsFunc(kvs, func(kv *mvccpb.KeyValue) bool { return string(kv.Key) == key })
}

// WithWriteCheck returns a client on c's connection whose writes run c's checks and wc:
// a check for the writes of one caller only (a precondition of one write), where
// AddWriteCheck is for every write through c. Close c, not the returned client.
func (c *Client) WithWriteCheck(wc WriteCheck) *Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &Client{etcd: c.etcd, log: c.log, hooks: c.hooks, checks: append(slices.Clone(c.checks), wc)}
}

package datastore

import (
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
)

// WriteCheck vets writes of one kind against other keys, atomically with the write: a
// transaction that writes a resource of Kind also reads every key under Prefixes in the
// same snapshot as its own keys, calls Check once per op of that kind, and commits only
// if none of those keys changed since the read (otherwise it re-reads and checks again).
// Only keys added or changed under Prefixes invalidate the read, not keys deleted (etcd
// compares the keys that exist), so a check must be one that fewer keys cannot make
// fail, such as "refuse while something is still there". IPAM uses it to refuse deleting an IPPool whose addresses are still allocated.
type WriteCheck struct {
	Kind *api.Kind
	// Prefixes are etcd key prefixes (any, not only resources) the check reads.
	Prefixes []string
	// Check returns an error to refuse the op. old is the stored resource (nil if there
	// is none, or it does not decode), new the resource to be stored (defaulted and
	// validated; nil for a delete); read holds the key-values under each prefix, less
	// the keys the same transaction deletes (deleting a thing and its users together is
	// no use of it). The
	// error is wrapped with the op, as in "delete ippools/pool-a: <err>".
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
			read[prefix] = withoutDeleted(snap.prefixes[prefix], ps)
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
		}
	}
	return cmps, nil
}

// withoutDeleted is kvs less the keys ps delete.
func withoutDeleted(kvs []*mvccpb.KeyValue, ps []*pending) []*mvccpb.KeyValue {
	deleted := map[string]bool{}
	for _, p := range ps {
		if p.action == OpDelete {
			deleted[p.ref.key] = true
		}
	}
	if len(deleted) == 0 {
		return kvs
	}
	return slices.DeleteFunc(slices.Clone(kvs), func(kv *mvccpb.KeyValue) bool { return deleted[string(kv.Key)] })
}

// WithWriteCheck returns a client on c's connection whose writes run c's checks and wc:
// a check for the writes of one caller only (a precondition of one write), where
// AddWriteCheck is for every write through c. Close c, not the returned client.
func (c *Client) WithWriteCheck(wc WriteCheck) *Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &Client{etcd: c.etcd, log: c.log, hooks: c.hooks, checks: append(slices.Clone(c.checks), wc)}
}

package datastore

import (
	"fmt"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
)

// writeHook extends the writes of one kind with keys of its own, in the same
// transaction: it reads the keys under prefixes in the transaction's snapshot, may
// change each resource about to be stored, and adds compares and writes. Unlike a
// WriteCheck's prefixes, a hook's do not guard the commit as a whole: the hook's own
// compares say which keys must be as it read them (so writers that touch other keys
// under the same prefix do not make each other retry).
//
// Hooks are built into the client for the kinds whose stored form depends on other keys
// (Services: their cluster IPs and node ports), so that no writer can forget one.
type writeHook struct {
	kind     *api.Kind
	prefixes []string
	// plan is called once per transaction attempt with every op of kind, in op order,
	// and read, the key-values under each prefix. It may change ops[i].new; it returns
	// the compares and writes to add. An error refuses the whole transaction; it should
	// name the op (hookOp.desc).
	plan func(ops []*hookOp, read map[string][]*mvccpb.KeyValue) ([]clientv3.Cmp, []clientv3.Op, error)
}

// hookOp is one op a writeHook sees.
type hookOp struct {
	desc            string // "create services/shop/web", with "txn op N: " in a Txn
	action          Action
	namespace, name string
	old             api.Resource // as stored; nil if absent or undecodable
	new             api.Resource // to be stored (defaulted, validated); nil for a delete
}

// builtinHooks are the hooks every client runs.
func builtinHooks() []writeHook {
	return []writeHook{serviceAddressHook()}
}

// hooksFor returns the hooks that apply to some op of ps.
func hooksFor(hooks []writeHook, ps []*pending) []writeHook {
	var out []writeHook
	for _, h := range hooks {
		if slices.ContainsFunc(ps, func(p *pending) bool { return p.ref.kind == h.kind }) {
			out = append(out, h)
		}
	}
	return out
}

// runWriteHooks resets each hooked op's resource to its prepared form (a retry must not
// see what the last attempt's hooks chose), calls the hooks, and checks that what they
// stored still validates.
func runWriteHooks(ps []*pending, snap *snapshot, hooks []writeHook) ([]clientv3.Cmp, []clientv3.Op, error) {
	hooked := map[*api.Kind]bool{}
	for _, h := range hooks {
		hooked[h.kind] = true
	}
	for _, p := range ps {
		if p.action == OpDelete || !hooked[p.ref.kind] {
			continue
		}
		obj, err := clone(p.ref.kind, p.base)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p.desc, err)
		}
		p.obj = obj
	}
	var cmps []clientv3.Cmp
	var writes []clientv3.Op
	for _, h := range hooks {
		read := make(map[string][]*mvccpb.KeyValue, len(h.prefixes))
		for _, prefix := range h.prefixes {
			read[prefix] = snap.prefixes[prefix]
		}
		var ops []*hookOp
		for i, p := range ps {
			if p.ref.kind != h.kind {
				continue
			}
			m := p.obj.GetObjectMeta()
			op := &hookOp{desc: p.desc, action: p.action, namespace: m.Namespace, name: m.Name}
			if kv := snap.cur[i]; kv != nil {
				op.old, _ = decode(p.ref.kind, kv)
			}
			if p.action != OpDelete {
				op.new = p.obj
			}
			ops = append(ops, op)
		}
		c, w, err := h.plan(ops, read)
		if err != nil {
			return nil, nil, err
		}
		cmps, writes = append(cmps, c...), append(writes, w...)
	}
	for _, p := range ps {
		if p.action != OpDelete && hooked[p.ref.kind] {
			if err := api.Validate(p.obj); err != nil {
				return nil, nil, fmt.Errorf("%s: invalid after allocation: %w", p.desc, err)
			}
		}
	}
	return cmps, writes, nil
}

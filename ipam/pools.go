package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/policy/selector"
)

var (
	poolKind = mustKind("ippools")
	nodeKind = mustKind("nodes")
	wepKind  = mustKind("workloadendpoints")
)

func mustKind(name string) *api.Kind {
	k, err := api.LookupKind(name)
	if err != nil {
		panic(err)
	}
	return k
}

// resourceKey is the etcd key of a resource (namespace "" for cluster-wide kinds), or
// with name "" the prefix of a namespace's resources.
func resourceKey(kind *api.Kind, ns, name string) string {
	return datastore.ResourcePrefix + kind.Key(ns, name)
}

var poolsPrefix = datastore.ResourcePrefix + poolKind.Plural + "/"

// poolInfo is an IPPool as read, with its parsed CIDR and its key's revision, which
// allocations compare so that none lands in a pool deleted or changed meanwhile.
type poolInfo struct {
	*api.IPPool
	prefix netip.Prefix
	key    string
	rev    int64
}

func (p *poolInfo) String() string { return fmt.Sprintf("IPPool %q (%s)", p.Name, p.prefix) }

// poolsFromKVs decodes the stored pools, in key order, which is name order.
func poolsFromKVs(kvs []*mvccpb.KeyValue) ([]*poolInfo, error) {
	var out []*poolInfo
	for _, kv := range kvs {
		var p api.IPPool
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		prefix, err := p.Prefix()
		if err != nil {
			return nil, err
		}
		out = append(out, &poolInfo{IPPool: &p, prefix: prefix, key: string(kv.Key), rev: kv.ModRevision})
	}
	return out, nil
}

// poolContaining is the pool whose CIDR holds a, or nil.
func poolContaining(pools []*poolInfo, a netip.Addr) *poolInfo {
	for _, p := range pools {
		if p.prefix.Contains(a) {
			return p
		}
	}
	return nil
}

// holdsBlock says whether b is one of the pool's blocks (inside it, of its block size).
func (p *poolInfo) holdsBlock(b netip.Prefix) bool {
	return b.Bits() == p.Spec.BlockSize && p.prefix.Contains(b.Addr())
}

// selectsNode says whether the pool's nodeSelector matches the node. A node without a
// Node resource (tabby-cni may run before its agent registers it) has no labels and
// matches only all(): a selector such as "!has(x)" would otherwise match every node
// that has not registered yet.
func (p *poolInfo) selectsNode(node *api.Node) (bool, error) {
	sel, err := selector.Parse(p.Spec.NodeSelector)
	if err != nil {
		return false, fmt.Errorf("%s: nodeSelector: %w", p, err)
	}
	if node == nil {
		return sel.String() == "all()", nil
	}
	return sel.Evaluate(node.Labels), nil
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// selectPools picks the pools an allocation of one IP version may use, in preference
// order. Requested pools (names or CIDRs) are used in the order given and need not
// select the node (a request names them on purpose), but must exist, be of the right
// version, be enabled and allow use. With none requested, every enabled pool of the
// version that allows use and selects the node is a candidate, ordered by name.
func selectPools(pools []*poolInfo, v6 bool, requested []string, use api.IPPoolAllowedUse, nodeName string, node *api.Node) ([]*poolInfo, error) {
	var out []*poolInfo
	if len(requested) > 0 {
		for _, r := range requested {
			i := slices.IndexFunc(pools, func(p *poolInfo) bool { return p.Name == r || p.Spec.CIDR == r || p.prefix.String() == r })
			if i < 0 {
				return nil, fmt.Errorf("requested IPPool %q does not exist", r)
			}
			p := pools[i]
			switch {
			case p.prefix.Addr().Is6() != v6:
				return nil, fmt.Errorf("requested %s is not an %s pool", p, family(v6))
			case p.Spec.Disabled:
				return nil, fmt.Errorf("requested %s is disabled", p)
			case !p.Allows(use):
				return nil, fmt.Errorf("requested %s does not allow use %s", p, use)
			}
			out = append(out, p)
		}
		return out, nil
	}
	var why []string
	for _, p := range pools {
		if p.prefix.Addr().Is6() != v6 {
			continue
		}
		ok, err := p.selectsNode(node)
		switch {
		case err != nil:
			return nil, err
		case p.Spec.Disabled:
			why = append(why, fmt.Sprintf("%q is disabled", p.Name))
		case !p.Allows(use):
			why = append(why, fmt.Sprintf("%q does not allow use %s", p.Name, use))
		case !ok && node == nil:
			why = append(why, fmt.Sprintf("%q has nodeSelector %q and node %q has no Node resource", p.Name, p.Spec.NodeSelector, nodeName))
		case !ok:
			why = append(why, fmt.Sprintf("%q has nodeSelector %q, which node %q does not match", p.Name, p.Spec.NodeSelector, nodeName))
		default:
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		if len(why) == 0 {
			return nil, fmt.Errorf("no %s IPPool exists", family(v6))
		}
		return nil, fmt.Errorf("no %s IPPool for node %q: %s", family(v6), nodeName, strings.Join(why, "; "))
	}
	return out, nil
}

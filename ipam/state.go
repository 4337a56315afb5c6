package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// state is everything Check and the garbage collector look at, read in one etcd
// transaction, so at one revision.
type state struct {
	rev        int64
	blocks     map[netip.Prefix]*storedBlock
	handles    map[string]*storedHandle
	affinities map[affinityRef]*storedAffinity
	pools      []*poolInfo
	nodes      map[string]bool
	weps       []*api.WorkloadEndpoint
	// workloads indexes the endpoints by namespace and container ID.
	workloads map[workloadRef]*api.WorkloadEndpoint
	// corrupt are IPAM keys whose values do not decode: key → error.
	corrupt map[string]error
}

type storedHandle struct {
	rec *handleRecord
	rev int64
}

type affinityRef struct {
	node string
	cidr netip.Prefix
}

type storedAffinity struct {
	a   *affinity
	rev int64
}

type workloadRef struct{ namespace, containerID string }

func (c *Client) readState(ctx context.Context) (*state, error) {
	resp, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(blocksPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(handlesPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(affinitiesPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(poolsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(resourceKey(nodeKind, "", ""), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(datastore.ResourcePrefix+wepKind.Plural+"/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read IPAM state: %w", err)
	}
	s := &state{
		rev:        resp.Header.Revision,
		blocks:     map[netip.Prefix]*storedBlock{},
		handles:    map[string]*storedHandle{},
		affinities: map[affinityRef]*storedAffinity{},
		nodes:      map[string]bool{},
		workloads:  map[workloadRef]*api.WorkloadEndpoint{},
		corrupt:    map[string]error{},
	}
	for _, kv := range rangeKVs(resp, 0) {
		cidr, err := parseCIDRKey(string(kv.Key[len(blocksPrefix):]))
		var b *block
		if err == nil {
			b, err = decodeJSON[block](kv)
		}
		if err == nil && b.CIDR != cidr {
			err = fmt.Errorf("block %s stored under key %s", b.CIDR, kv.Key)
		}
		if err == nil {
			err = b.validate()
		}
		if err != nil {
			s.corrupt[string(kv.Key)] = err
			continue
		}
		s.blocks[cidr] = &storedBlock{b, kv.ModRevision}
	}
	for _, kv := range rangeKVs(resp, 1) {
		h, err := decodeJSON[handleRecord](kv)
		if err != nil {
			s.corrupt[string(kv.Key)] = err
			continue
		}
		s.handles[string(kv.Key[len(handlesPrefix):])] = &storedHandle{h, kv.ModRevision}
	}
	for _, kv := range rangeKVs(resp, 2) {
		node, cidr, err := parseAffinityKey(string(kv.Key))
		var a *affinity
		if err == nil {
			a, err = decodeJSON[affinity](kv)
		}
		if err != nil {
			s.corrupt[string(kv.Key)] = err
			continue
		}
		s.affinities[affinityRef{node, cidr}] = &storedAffinity{a, kv.ModRevision}
	}
	if s.pools, err = poolsFromKVs(rangeKVs(resp, 3)); err != nil {
		return nil, err
	}
	nodesPrefix := resourceKey(nodeKind, "", "")
	for _, kv := range rangeKVs(resp, 4) {
		s.nodes[strings.TrimPrefix(string(kv.Key), nodesPrefix)] = true
	}
	for _, kv := range rangeKVs(resp, 5) {
		w, err := decodeJSON[api.WorkloadEndpoint](kv)
		if err != nil {
			return nil, err
		}
		s.weps = append(s.weps, w)
		if w.Spec.ContainerID != "" {
			s.workloads[workloadRef{w.Namespace, w.Spec.ContainerID}] = w
		}
	}
	return s, nil
}

// owner is what keeps an allocation alive: a workload endpoint (for a workload
// handle with namespace and container ID attributes) or else a node.
type owner struct {
	workload workloadRef // set for workloads
	node     string      // set otherwise; both empty: nothing to check against
}

func ownerOf(a *attribute) owner {
	if ns, cid, ok := WorkloadOf(a.Handle, a.Secondary); ok {
		return owner{workload: workloadRef{ns, cid}}
	}
	return owner{node: a.Secondary[AttrNode]}
}

// gone says whether the owner no longer exists, and how so.
func (s *state) gone(o owner) (bool, string) {
	switch {
	case o.workload != (workloadRef{}):
		if s.workloads[o.workload] == nil {
			return true, fmt.Sprintf("no workload endpoint in namespace %q has container ID %q", o.workload.namespace, o.workload.containerID)
		}
	case o.node != "":
		if !s.nodes[o.node] {
			return true, fmt.Sprintf("node %q does not exist", o.node)
		}
	}
	return false, ""
}

// allocated finds who holds a, if anyone.
func (s *state) allocated(a netip.Addr) (*storedBlock, int, *attribute) {
	for bits := a.BitLen(); bits >= 0; bits-- {
		if sb := s.blocks[blockOf(a, bits)]; sb != nil {
			ord, _ := sb.b.ordinal(a)
			return sb, ord, sb.b.holder(ord)
		}
	}
	return nil, 0, nil
}

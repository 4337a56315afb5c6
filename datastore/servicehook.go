package datastore

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
)

// Every cluster IP and node port a Service holds is a key of its own whose value is the
// owner, "<namespace>/<name>". The keys are written in the same transaction as the
// Service: a new one only if absent (so two writers cannot take one address), a released
// one deleted only if unchanged since read.
const (
	// ServiceClusterIPsPrefix + "<ip>" (netip's form) is a held cluster IP.
	ServiceClusterIPsPrefix = "/tabby/services/v1/clusterips/"
	// ServiceNodePortsPrefix + "<tcp|udp|sctp>/<port>" is a held node port.
	ServiceNodePortsPrefix = "/tabby/services/v1/nodeports/"
)

var (
	servicesKind = mustKindFor[*api.Service]()
	// The cluster's service CIDRs are BGPConfiguration default's serviceClusterIPs.
	bgpDefaultKey = ResourcePrefix + mustKindFor[*api.BGPConfiguration]().Key("", api.DefaultBGPConfigurationName)
)

func mustKindFor[T api.Resource]() *api.Kind {
	k, err := api.KindForType[T]()
	if err != nil {
		panic(err)
	}
	return k
}

func clusterIPKey(ip netip.Addr) string { return ServiceClusterIPsPrefix + ip.String() }

func nodePortKey(np nodePort) string {
	return ServiceNodePortsPrefix + strings.ToLower(string(np.proto)) + "/" + strconv.Itoa(int(np.port))
}

// serviceAddressHook allocates and claims Services' cluster IPs and node ports. It is
// built into every client rather than registered by programs: uniqueness holds only if
// every writer of Services claims, as every writer of IPPools checks overlaps.
func serviceAddressHook() writeHook {
	return writeHook{
		kind: servicesKind,
		// The BGPConfiguration key read as a prefix matches only itself: the other
		// names are "node.<name>".
		prefixes: []string{ServiceClusterIPsPrefix, ServiceNodePortsPrefix, bgpDefaultKey},
		plan: func(ops []*hookOp, read map[string][]*mvccpb.KeyValue) ([]clientv3.Cmp, []clientv3.Op, error) {
			return planServiceAddresses(ops, read, rand.Uint64N)
		},
	}
}

// planServiceAddresses allocates for every op of a transaction together (they may hand
// an address from one Service to another) and returns the claim keys' compares and writes.
func planServiceAddresses(ops []*hookOp, read map[string][]*mvccpb.KeyValue, rnd func(uint64) uint64) ([]clientv3.Cmp, []clientv3.Op, error) {
	var cfg *api.BGPConfiguration
	for _, kv := range read[bgpDefaultKey] {
		if string(kv.Key) == bgpDefaultKey {
			var c api.BGPConfiguration
			if json.Unmarshal(kv.Value, &c) == nil {
				cfg = &c
			}
		}
	}
	stored := map[string]*mvccpb.KeyValue{}
	a := &serviceAllocator{
		ranges: serviceRangesFrom(cfg),
		claims: serviceClaims{ips: map[netip.Addr]string{}, ports: map[nodePort]string{}},
		rnd:    rnd,
	}
	for _, kv := range read[ServiceClusterIPsPrefix] {
		// A key that does not parse as one of ours is left alone.
		if ip, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), ServiceClusterIPsPrefix)); err == nil && clusterIPKey(ip) == string(kv.Key) {
			a.claims.ips[ip] = string(kv.Value)
			stored[string(kv.Key)] = kv
		}
	}
	for _, kv := range read[ServiceNodePortsPrefix] {
		proto, port, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), ServiceNodePortsPrefix), "/")
		n, err := strconv.ParseInt(port, 10, 32)
		np := nodePort{api.PortProtocol(strings.ToUpper(proto)), int32(n)}
		if err == nil && nodePortKey(np) == string(kv.Key) {
			a.claims.ports[np] = string(kv.Value)
			stored[string(kv.Key)] = kv
		}
	}

	// Release everything the ops' Services hold, claim what they name, then allocate:
	// so an address one op keeps is never handed to another op of the same transaction.
	owners := make([]string, len(ops))
	batch := map[string]bool{}
	for i, op := range ops {
		owners[i] = op.namespace + "/" + op.name
		batch[owners[i]] = true
		a.release(owners[i])
	}
	for i, op := range ops {
		if op.new == nil {
			continue
		}
		var old *api.Service
		if op.old != nil {
			old = op.old.(*api.Service)
		}
		svc := op.new.(*api.Service)
		if err := a.normalize(old, svc); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", op.desc, err)
		}
		if err := a.claimExplicit(owners[i], svc); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", op.desc, err)
		}
	}
	for i, op := range ops {
		if op.new == nil {
			continue
		}
		if err := a.allocate(owners[i], op.new.(*api.Service)); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", op.desc, err)
		}
	}

	want := map[string]string{}
	for ip, o := range a.claims.ips {
		want[clusterIPKey(ip)] = o
	}
	for np, o := range a.claims.ports {
		want[nodePortKey(np)] = o
	}
	var cmps []clientv3.Cmp
	var writes []clientv3.Op
	for _, key := range slices.Sorted(maps.Keys(want)) {
		owner, kv := want[key], stored[key]
		switch {
		case kv == nil:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
			writes = append(writes, clientv3.OpPut(key, owner))
		case string(kv.Value) != owner:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
			writes = append(writes, clientv3.OpPut(key, owner))
		case batch[owner]:
			// Kept: it must still be this Service's when the transaction commits.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(stored)) {
		if _, kept := want[key]; !kept {
			kv := stored[key]
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision))
			writes = append(writes, clientv3.OpDelete(key))
		}
	}
	return cmps, writes, nil
}

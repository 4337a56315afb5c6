package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// Names of the pools an agent creates on first boot, as Calico names them.
const (
	DefaultIPv4PoolName = "default-ipv4-ippool"
	DefaultIPv6PoolName = "default-ipv6-ippool"
)

// DefaultPoolsConfig says which IPPools the agent creates when the cluster has no pool of
// their IP version (first boot), as calico-node does with CALICO_IPV4POOL_CIDR and its
// siblings. The zero value creates none.
type DefaultPoolsConfig struct {
	// Off creates none (--no-default-pools).
	Off bool
	// IPv4CIDR is the IPv4 pool's CIDR; empty creates none. IPv4IPIP and IPv4VXLAN are its modes as Calico
	// spells them (Always, CrossSubnet, Never; any case; Off for Never); an empty IPv4IPIP
	// is Always, or Never when IPv4VXLAN turns VXLAN on.
	IPv4CIDR, IPv4IPIP, IPv4VXLAN string
	// IPv6CIDR is the IPv6 pool's CIDR; empty creates none. IPv6VXLAN is its vxlanMode
	// (CALICO_IPV6POOL_VXLAN); empty is Never. IPv6 pools have no IPIP.
	IPv6CIDR, IPv6VXLAN string
}

// errFamilyHasPool refuses a default pool: a pool of its IP version exists.
var errFamilyHasPool = errors.New("a pool of its IP version exists")

// Pools returns the pools cfg asks for, defaulted and validated as any written pool is
// (the datastore checks them against the stored pools again when it writes them); an
// error names the flag at fault.
func (cfg DefaultPoolsConfig) Pools() ([]*api.IPPool, error) {
	if cfg.Off {
		return nil, nil
	}
	ipip, err := encapMode("--default-ipv4-pool-ipip", cfg.IPv4IPIP)
	if err != nil {
		return nil, err
	}
	vxlan, err := encapMode("--default-ipv4-pool-vxlan", cfg.IPv4VXLAN)
	if err != nil {
		return nil, err
	}
	switch {
	case vxlan == "":
		vxlan = api.EncapNever
	case ipip != "" && ipip != api.EncapNever && vxlan != api.EncapNever:
		return nil, fmt.Errorf("--default-ipv4-pool-ipip %s and --default-ipv4-pool-vxlan %s: a pool encapsulates one way; set the other to Never", ipip, vxlan)
	}
	if ipip == "" {
		ipip = api.EncapAlways
		if vxlan != api.EncapNever {
			ipip = api.EncapNever
		}
	}
	var pools []*api.IPPool
	if cfg.IPv4CIDR != "" {
		v4, err := defaultPool("--default-ipv4-pool-cidr", DefaultIPv4PoolName, cfg.IPv4CIDR, false, api.IPPoolSpec{IPIPMode: ipip, VXLANMode: vxlan, NATOutgoing: true})
		if err != nil {
			return nil, err
		}
		pools = append(pools, v4)
	}
	vxlan6, err := encapMode("--default-ipv6-pool-vxlan", cfg.IPv6VXLAN)
	if err != nil {
		return nil, err
	}
	if cfg.IPv6CIDR != "" {
		v6, err := defaultPool("--default-ipv6-pool-cidr", DefaultIPv6PoolName, cfg.IPv6CIDR, true, api.IPPoolSpec{VXLANMode: vxlan6})
		if err != nil {
			return nil, err
		}
		pools = append(pools, v6)
	}
	return pools, nil
}

// encapMode parses a mode as calico-node's CALICO_IPV4POOL_IPIP does; "" stays "".
func encapMode(flag, s string) (api.EncapMode, error) {
	switch strings.ToLower(s) {
	case "":
		return "", nil
	case "always":
		return api.EncapAlways, nil
	case "crosssubnet", "cross-subnet":
		return api.EncapCrossSubnet, nil
	case "never", "off":
		return api.EncapNever, nil
	}
	return "", fmt.Errorf("%s %q: want Always, CrossSubnet or Never", flag, s)
}

func defaultPool(flag, name, cidr string, v6 bool, spec api.IPPoolSpec) (*api.IPPool, error) {
	p := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.VersionCalico}, Spec: spec}
	p.Name = name
	p.Spec.CIDR = cidr
	prefix, err := api.ParseNet(cidr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", flag, cidr, err)
	}
	if prefix.Addr().Is6() != v6 {
		return nil, fmt.Errorf("%s %q: want an IPv%s CIDR", flag, cidr, map[bool]string{false: "4", true: "6"}[v6])
	}
	api.SetDefaults(p)
	if err := api.Validate(p); err != nil {
		return nil, fmt.Errorf("%s %q: %w", flag, cidr, err)
	}
	return p, nil
}

// ensureDefaultPools creates each pool unless a pool of its IP version exists. The
// absence is a precondition of the write itself (a write check on the pools' keys, in
// the transaction that creates the pool), so agents starting together create one pool,
// and a pool an operator writes meanwhile is never joined by a default one of its IP
// version. The write goes through the datastore's usual pool validation: defaults,
// fields, and no overlap with any stored pool.
func ensureDefaultPools(ctx context.Context, ds *datastore.Client, pools []*api.IPPool, log *slog.Logger) error {
	for _, p := range pools {
		prefix, _ := p.Prefix()
		v6 := prefix.Addr().Is6()
		_, err := ds.WithWriteCheck(noPoolOfFamily(v6)).Create(ctx, p)
		switch {
		case err == nil:
			log.Info("no IP pool of this IP version: created the default one", "pool", p.Name, "cidr", p.Spec.CIDR,
				"ipipMode", p.Spec.IPIPMode, "vxlanMode", p.Spec.VXLANMode, "natOutgoing", p.Spec.NATOutgoing)
		case errors.Is(err, errFamilyHasPool), errors.Is(err, datastore.ErrAlreadyExists):
			log.Debug("not creating a default IP pool", "pool", p.Name, "why", err)
		default:
			return fmt.Errorf("create the default IP pool: %w", err)
		}
	}
	return nil
}

// noPoolOfFamily is the write check that refuses a pool write while a pool of the IP
// version (v6 or not) is stored. More pools can only make it refuse, as a write check
// must be.
func noPoolOfFamily(v6 bool) datastore.WriteCheck {
	prefix := datastore.ResourcePrefix + kindIPPools.Plural + "/"
	return datastore.WriteCheck{Kind: kindIPPools, Prefixes: []string{prefix}, Check: func(_, _ api.Resource, read map[string][]*mvccpb.KeyValue) error {
		for _, kv := range read[prefix] {
			var p api.IPPool
			if json.Unmarshal(kv.Value, &p) != nil {
				return fmt.Errorf("%w: %s does not decode", errFamilyHasPool, kv.Key)
			}
			if cidr, err := p.Prefix(); err != nil || cidr.Addr().Is6() == v6 {
				return fmt.Errorf("%w: %s (%s)", errFamilyHasPool, strings.TrimPrefix(string(kv.Key), prefix), p.Spec.CIDR)
			}
		}
		return nil
	}}
}

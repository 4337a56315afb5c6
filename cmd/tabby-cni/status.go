package main

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// cmdStatus says whether ADD can work: etcd answers, the node's agent has registered
// the node (without it no route leads to a new workload), and for each IP version ADD
// allocates, an enabled pool it may use has a free address. Any of these failing is 50.
// Per-block limits (strict affinity, maxBlocksPerHost) are left to ADD.
func cmdStatus(ctx context.Context, inv *invocation) error {
	ds, err := inv.connect(ctx)
	if err != nil {
		return withCode(codeUnavailable, err)
	}
	defer ds.Close()
	c := inv.conf
	if _, err := datastore.GetAs[*api.Node](ctx, ds, "", c.NodeName); errors.Is(err, datastore.ErrNotFound) {
		return errorf(codeUnavailable, "node %q is not registered in etcd: start tabby-node on it (its agent routes to the node's workloads)", c.NodeName)
	} else if err != nil {
		return withCode(codeUnavailable, fmt.Errorf("read node %q: %w", c.NodeName, err))
	}
	u, err := ipam.New(ds, inv.log).Usage(ctx)
	if err != nil {
		return withCode(codeUnavailable, err)
	}
	return withCode(codeUnavailable, poolsAvailable(u.Pools, &c.IPAM))
}

// poolsAvailable checks that each IP version ADD allocates has an enabled pool with a
// free address among the configured ones (all pools when none are configured).
func poolsAvailable(pools []ipam.PoolUsage, c *ipamConf) error {
	for _, fam := range []struct {
		name   string
		want   bool
		v6     bool
		listed []string
	}{{"IPv4", c.v4(), false, c.IPv4Pools}, {"IPv6", c.v6(), true, c.IPv6Pools}} {
		if !fam.want {
			continue
		}
		var seen []string
		ok := slices.ContainsFunc(pools, func(p ipam.PoolUsage) bool {
			if p.CIDR.Addr().Is6() != fam.v6 || (len(fam.listed) > 0 && !slices.Contains(fam.listed, p.Name) && !slices.Contains(fam.listed, p.CIDR.String())) {
				return false
			}
			seen = append(seen, fmt.Sprintf("%s (%s, %d of %s in use%s)", p.Name, p.CIDR, p.InUse, p.Size, map[bool]string{true: ", disabled"}[p.Disabled]))
			return !p.Disabled && p.Size.Cmp(big.NewInt(int64(p.InUse))) > 0
		})
		switch {
		case ok:
		case len(seen) == 0 && len(fam.listed) > 0:
			return fmt.Errorf("none of the %s pools the configuration names (%s) exists", fam.name, strings.Join(fam.listed, ", "))
		case len(seen) == 0:
			return fmt.Errorf("there is no %s IPPool: create one (tabbyctl apply -f ippool.yaml)", fam.name)
		default:
			return fmt.Errorf("no %s IPPool has a free address: %s", fam.name, strings.Join(seen, "; "))
		}
	}
	return nil
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// maxRegisterAttempts bounds the read-modify-write loop against writers racing us on the
// Node resource (tabbyctl labelling it, say).
const maxRegisterAttempts = 10

// registerNode creates this node's Node resource, or updates its addresses, keeping
// every other field (labels, AS number, route reflector ID) as the operator set it. An
// address another node already claims is an error: two nodes advertising one address
// would blackhole each other's traffic.
func registerNode(ctx context.Context, ds *datastore.Client, name string, v4, v6 netip.Prefix) (*api.Node, error) {
	nodes, _, err := datastore.ListAs[*api.Node](ctx, ds, "")
	if err != nil {
		return nil, fmt.Errorf("register node %s: %w", name, err)
	}
	for _, n := range nodes {
		if n.Name == name || n.Spec.BGP == nil {
			continue
		}
		if v4.IsValid() && sameAddr(n.Spec.BGP.IPv4Address, v4) || v6.IsValid() && sameAddr(n.Spec.BGP.IPv6Address, v6) {
			return nil, fmt.Errorf("register node %s: address %s is already used by node %s", name, addrsOf(v4, v6), n.Name)
		}
	}

	for range maxRegisterAttempts {
		cur, err := datastore.GetAs[*api.Node](ctx, ds, "", name)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			n := api.Node{TypeMeta: api.TypeMeta{Kind: "Node", APIVersion: api.VersionCalico}}
			n.Name = name
			setAddrs(&n, v4, v6)
			created, err := ds.Create(ctx, &n)
			if errors.Is(err, datastore.ErrAlreadyExists) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("register node %s: %w", name, err)
			}
			return created.(*api.Node), nil
		case err != nil:
			return nil, fmt.Errorf("register node %s: %w", name, err)
		}
		if !setAddrs(cur, v4, v6) {
			return cur, nil
		}
		updated, err := ds.Update(ctx, cur)
		if errors.Is(err, datastore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("register node %s: %w", name, err)
		}
		return updated.(*api.Node), nil
	}
	return nil, fmt.Errorf("register node %s: %w after %d attempts", name, datastore.ErrConflict, maxRegisterAttempts)
}

// setAddrs writes the node's addresses into n and says whether anything changed.
func setAddrs(n *api.Node, v4, v6 netip.Prefix) bool {
	if n.Spec.BGP == nil {
		n.Spec.BGP = &api.NodeBGPSpec{}
	}
	b := n.Spec.BGP
	old4, old6 := b.IPv4Address, b.IPv6Address
	b.IPv4Address, b.IPv6Address = "", ""
	if v4.IsValid() {
		b.IPv4Address = v4.String()
	}
	if v6.IsValid() {
		b.IPv6Address = v6.String()
	}
	return b.IPv4Address != old4 || b.IPv6Address != old6
}

func sameAddr(stored string, p netip.Prefix) bool {
	q, err := netip.ParsePrefix(stored)
	return err == nil && q.Addr() == p.Addr()
}

func addrsOf(v4, v6 netip.Prefix) string {
	switch {
	case v4.IsValid() && v6.IsValid():
		return v4.Addr().String() + " or " + v6.Addr().String()
	case v4.IsValid():
		return v4.Addr().String()
	}
	return v6.Addr().String()
}

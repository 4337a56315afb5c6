package agent

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/internal/snapshot"
	"github.com/tabby-net/tabby/policy"
)

// AutoHostEndpointSuffix ends the name of a node's automatic host endpoint, as Calico's
// kube-controllers names them: "<node>-auto-hep".
const AutoHostEndpointSuffix = "-auto-hep"

var kindHostEndpoints = mustKind("hostendpoints")

// autoHostEndpoint is node n's automatic host endpoint, as Calico's kube-controllers
// makes them: every interface ("*"), the node's labels, its addresses (node and tunnel)
// as expectedIPs, and the built-in profile that allows everything, so that turning them
// on changes nothing until a policy selects them.
func autoHostEndpoint(n *api.Node) *api.HostEndpoint {
	var ips []string
	add := func(s string) {
		if s == "" {
			return
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			s = p.Addr().String()
		}
		if _, err := netip.ParseAddr(s); err == nil && !slices.Contains(ips, s) {
			ips = append(ips, s)
		}
	}
	if b := n.Spec.BGP; b != nil {
		add(b.IPv4Address)
		add(b.IPv6Address)
		add(b.IPv4IPIPTunnelAddr)
	}
	add(n.Spec.IPv4VXLANTunnelAddr)
	add(n.Spec.IPv6VXLANTunnelAddr)
	return &api.HostEndpoint{
		TypeMeta:   api.TypeMeta{Kind: "HostEndpoint", APIVersion: api.VersionCalico},
		ObjectMeta: api.ObjectMeta{Name: n.Name + AutoHostEndpointSuffix, Labels: maps.Clone(n.Labels)},
		Spec: api.HostEndpointSpec{
			Node: n.Name, InterfaceName: api.AllInterfaces, ExpectedIPs: ips,
			Profiles: []string{policy.DefaultAllowProfile},
		},
	}
}

// autoHEPSubsystem keeps the node's automatic host endpoint as its Node resource says
// (enabled), or deletes it (not enabled): each agent keeps its own node's.
type autoHEPSubsystem struct {
	node    string
	enabled bool
	ds      *datastore.Client
	snap    *snapshot.Snapshot
	log     *slog.Logger
}

func (a *autoHEPSubsystem) Name() string { return "auto-host-endpoint" }

func (a *autoHEPSubsystem) Run(ctx context.Context) error {
	sub := a.snap.Subscribe()
	retry := time.NewTicker(10 * time.Second)
	defer retry.Stop()
	for {
		if v := a.snap.View(); v.Synced {
			if err := a.reconcile(ctx, v); err != nil && ctx.Err() == nil {
				a.log.Warn("automatic host endpoint not written; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub:
		case <-retry.C:
		}
	}
}

// reconcile writes or deletes the node's automatic host endpoint when the view's differs
// from what it should be.
func (a *autoHEPSubsystem) reconcile(ctx context.Context, v *snapshot.View) error {
	name := a.node + AutoHostEndpointSuffix
	have, exists := snapshot.Get[*api.HostEndpoint](v, "", name)
	if !a.enabled {
		if !exists {
			return nil
		}
		_, err := a.ds.Delete(ctx, kindHostEndpoints, "", name, have.ResourceVersion)
		if err == nil {
			a.log.Info("automatic host endpoint deleted", "name", name)
		}
		return err
	}
	n, ok := snapshot.Get[*api.Node](v, "", a.node)
	if !ok {
		return nil
	}
	want := autoHostEndpoint(n)
	if exists && reflect.DeepEqual(have.Spec, want.Spec) && maps.Equal(have.Labels, want.Labels) {
		return nil
	}
	if exists {
		want.ResourceVersion, want.UID, want.CreationTimestamp = have.ResourceVersion, have.UID, have.CreationTimestamp
	}
	if _, err := a.ds.Apply(ctx, want); err != nil {
		return err
	}
	a.log.Info("automatic host endpoint written", "name", name, "expectedIPs", want.Spec.ExpectedIPs)
	return nil
}

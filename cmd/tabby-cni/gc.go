package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// cmdGC removes this network's attachments on this node that the runtime no longer
// knows (not in cni.dev/valid-attachments): each one's host interface, addresses and
// endpoint, as DEL would. Attachments are found through their endpoints; addresses left
// without one are the IPAM garbage collector's (tabby-node), after its grace period. It
// also removes the lock files no call holds (sweepLocks).
func cmdGC(ctx context.Context, inv *invocation) error {
	ds, err := inv.connect(ctx)
	if err != nil {
		return err
	}
	defer ds.Close()
	weps, _, err := datastore.ListAs[*api.WorkloadEndpoint](ctx, ds, "")
	if err != nil {
		return fmt.Errorf("list workload endpoints: %w", err)
	}
	ic := ipam.New(ds, inv.log)
	var errs []error
	stale := staleEndpoints(weps, inv.conf)
	for _, w := range stale {
		errs = append(errs, collect(ctx, inv, ds, ic, w))
	}
	locks, err := sweepLocks(lockDir)
	errs = append(errs, err)
	inv.log.Info("garbage collected", "valid", len(inv.conf.ValidAttachments), "removed", len(stale), "lockFiles", locks)
	return errors.Join(errs...)
}

// staleEndpoints are the endpoints of this network on this node whose (container ID,
// interface) is not a valid attachment.
func staleEndpoints(weps []*api.WorkloadEndpoint, c *netConf) []*api.WorkloadEndpoint {
	valid := map[types.GCAttachment]bool{}
	for _, a := range c.ValidAttachments {
		valid[a] = true
	}
	var out []*api.WorkloadEndpoint
	for _, w := range weps {
		if w.Spec.Node == c.NodeName && w.Annotations[annotationNetwork] == c.Name &&
			!valid[types.GCAttachment{ContainerID: w.Spec.ContainerID, IfName: w.Spec.Endpoint}] {
			out = append(out, w)
		}
	}
	return out
}

// collect removes one stale attachment, holding its container's lock (lockContainer).
func collect(ctx context.Context, inv *invocation, ds *datastore.Client, ic *ipam.Client, w *api.WorkloadEndpoint) error {
	log := inv.log.With("endpoint", w.Namespace+"/"+w.Name, "containerID", w.Spec.ContainerID, "ifname", w.Spec.Endpoint)
	lock, err := lockContainer(ctx, lockDir, w.Spec.ContainerID)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", w.Namespace, w.Name, err)
	}
	log.Info("removing an attachment the runtime no longer knows")
	if l, err := netlink.LinkByName(w.Spec.InterfaceName); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			lock.unlock(false)
			return fmt.Errorf("delete %s of %s/%s: %w", w.Spec.InterfaceName, w.Namespace, w.Name, err)
		}
	}
	if _, err := ic.ReleaseByHandle(ctx, ipam.WorkloadHandle(inv.conf.Name, w.Spec.ContainerID)); err != nil {
		lock.unlock(false)
		return fmt.Errorf("release the addresses of %s/%s: %w", w.Namespace, w.Name, err)
	}
	err = deleteEndpoint(ctx, ds, w.Namespace, w.Name, w.Spec.ContainerID, log)
	lock.unlock(err == nil)
	return err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/ipam"
)

// hostRouteWait is how long CHECK waits for the node's agent to install the host routes
// of an otherwise intact attachment: CHECK may come right after ADD.
const hostRouteWait = 5 * time.Second

// cmdCheck verifies that the attachment is as ADD made it, against prevResult: the
// container's interface, addresses and routes, the host end and its sysctls, the host's
// routes to the workload (the agent's), the endpoint and the IPAM allocations. Error 102
// lists every difference. It holds the container's lock (lockContainer) once its input
// is checked, so it never looks at an attachment an overlapping ADD or DEL is halfway
// through (a spurious difference): it waits for them, and they for it.
func cmdCheck(ctx context.Context, inv *invocation) error {
	id, err := newWorkloadID(inv.conf, inv.args.ContainerID, inv.args.IfName, inv.args.Args)
	if err != nil {
		return err
	}
	addrs, err := prevAddrs(inv.conf, id.IfName)
	if err != nil {
		return err
	}
	if err := checkNetNS(inv.args.Netns); err != nil {
		return err
	}
	lock, err := lockContainer(ctx, lockDir, id.ContainerID)
	if err != nil {
		return err
	}
	defer lock.unlock(false)
	ds, err := inv.connect(ctx)
	if err != nil {
		return err
	}
	defer ds.Close()

	att := &attachment{NetNS: inv.args.Netns, IfName: id.IfName, HostVeth: id.HostVeth, Addrs: addrs, MTU: inv.conf.MTU}
	o, err := att.inspect()
	if err != nil {
		return err
	}
	diffs := att.differences(o)
	if len(diffs) == 0 {
		if diffs, err = waitHostRoutes(ctx, att, o); err != nil {
			return err
		}
	}
	w, err := getEndpoint(ctx, ds, id.Namespace, id.Endpoint)
	if err != nil {
		return fmt.Errorf("read workload endpoint %s/%s: %w", id.Namespace, id.Endpoint, err)
	}
	diffs = append(diffs, endpointDifferences(w, id, addrs, o.Container.MAC)...)
	d, err := allocationDifferences(ctx, ipam.New(ds, inv.log), addrs, id.Handle)
	if err != nil {
		return err
	}
	diffs = append(diffs, d...)
	if len(diffs) > 0 {
		return errorf(codeCheck, "CHECK of %s/%s (container %s, %s): %d difference(s) from what ADD made: %s",
			id.Namespace, id.Endpoint, id.ContainerID, id.IfName, len(diffs), strings.Join(diffs, "; "))
	}
	return nil
}

// prevAddrs are the container interface's addresses in the configuration's prevResult,
// which the runtime must pass to CHECK.
func prevAddrs(c *netConf, ifName string) ([]netip.Addr, error) {
	if err := cniversion.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, errorf(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	if c.PrevResult == nil {
		return nil, errorf(types.ErrInvalidNetworkConfig, "CHECK needs prevResult, the result of the ADD, in the network configuration")
	}
	prev, err := types100.NewResultFromResult(c.PrevResult)
	if err != nil {
		return nil, errorf(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	addrs, err := resultAddrs(prev, ifName)
	if err != nil {
		return nil, withCode(types.ErrInvalidNetworkConfig, err)
	}
	return addrs, nil
}

// waitHostRoutes polls, for up to hostRouteWait, until the host has the agent's routes to
// the workload, and returns those still missing.
func waitHostRoutes(ctx context.Context, att *attachment, o *observed) ([]string, error) {
	deadline := time.Now().Add(hostRouteWait)
	for {
		missing := att.missingHostRoutes(o)
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing, nil
		}
		select {
		case <-ctx.Done():
			return missing, nil
		case <-time.After(50 * time.Millisecond):
		}
		var err error
		if o, err = att.inspect(); err != nil {
			return nil, err
		}
	}
}

// endpointDifferences compares the stored endpoint with what ADD wrote: this container's,
// on this node, through the host end, with the addresses and MAC the container has.
func endpointDifferences(w *api.WorkloadEndpoint, id *workloadID, addrs []netip.Addr, mac string) []string {
	name := id.Namespace + "/" + id.Endpoint
	if w == nil {
		return []string{"workload endpoint " + name + " does not exist"}
	}
	var d []string
	add := func(field, have, want string) {
		if have != want {
			d = append(d, fmt.Sprintf("workload endpoint %s has %s %q, want %q", name, field, have, want))
		}
	}
	add("spec.containerID", w.Spec.ContainerID, id.ContainerID)
	add("spec.node", w.Spec.Node, id.Node)
	add("spec.interfaceName", w.Spec.InterfaceName, id.HostVeth)
	add("spec.mac", w.Spec.MAC, mac)
	have, _ := w.Spec.Addrs()
	slices.SortFunc(have, netip.Addr.Compare)
	want := slices.SortedFunc(slices.Values(addrs), netip.Addr.Compare)
	add("spec.ipNetworks", fmt.Sprint(have), fmt.Sprint(want))
	return d
}

// allocationDifferences checks that IPAM holds each address for the container's handle.
func allocationDifferences(ctx context.Context, ic *ipam.Client, addrs []netip.Addr, handle string) ([]string, error) {
	var d []string
	for _, a := range addrs {
		alloc, err := ic.GetAllocation(ctx, a)
		switch {
		case errors.Is(err, ipam.ErrNotAllocated):
			d = append(d, fmt.Sprintf("IPAM has %s free: %v", a, err))
		case err != nil:
			return nil, fmt.Errorf("look up the allocation of %s: %w", a, err)
		case alloc.Handle != handle:
			d = append(d, fmt.Sprintf("IPAM holds %s for handle %q, not %q", a, alloc.Handle, handle))
		}
	}
	return d, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// undoTimeout bounds undoing a failed ADD, which runs even when the command's deadline
// has passed.
const undoTimeout = 30 * time.Second

// cmdAdd attaches the container: addresses from IPAM, the veth, the WorkloadEndpoint. It
// checks everything it can before changing anything, and undoes what it did if a later
// step fails. A repeated ADD for the same container returns the same result, repairing
// the attachment if it was damaged. It holds the container's lock (lockContainer)
// throughout, so an overlapping ADD or DEL of the container waits its turn.
func cmdAdd(ctx context.Context, inv *invocation) error {
	id, err := newWorkloadID(inv.conf, inv.args.ContainerID, inv.args.IfName, inv.args.Args)
	if err != nil {
		return err
	}
	if err := id.validate(); err != nil {
		return err
	}
	if err := checkNetNS(inv.args.Netns); err != nil {
		return err
	}
	inv.timings.mark("checks")
	lock, err := lockContainer(ctx, lockDir, id.ContainerID)
	if err != nil {
		return err
	}
	defer lock.unlock(false)
	inv.timings.mark("lock")
	ds, err := inv.connect(ctx)
	if err != nil {
		return err
	}
	defer ds.Close()
	ad := &adder{inv: inv, id: id, ds: ds, ipam: ipam.New(ds, inv.log),
		log: inv.log.With("endpoint", id.Namespace+"/"+id.Endpoint, "hostVeth", id.HostVeth)}
	res, err := ad.add(ctx)
	if err != nil {
		return err
	}
	if err := types.PrintResult(res, inv.conf.CNIVersion); err != nil {
		return errorf(types.ErrIOFailure, "write the result in version %s: %v", inv.conf.CNIVersion, err)
	}
	inv.timings.mark("result")
	return nil
}

// checkNetNS reports a CNI_NETNS that cannot be opened: error 3 if it does not exist
// (nothing to clean up), else 4.
func checkNetNS(path string) error {
	ns, err := openNetNS(path)
	if errors.Is(err, errNoNetNS) {
		return withCode(types.ErrUnknownContainer, fmt.Errorf("CNI_NETNS: %w", err))
	}
	if err != nil {
		return withCode(types.ErrInvalidEnvironmentVariables, fmt.Errorf("CNI_NETNS: %w", err))
	}
	return ns.Close()
}

type adder struct {
	inv  *invocation
	id   *workloadID
	ds   *datastore.Client
	ipam *ipam.Client
	log  *slog.Logger
}

func (ad *adder) add(ctx context.Context) (*types100.Result, error) {
	id, conf, tm := ad.id, ad.inv.conf, ad.inv.timings
	att := &attachment{NetNS: ad.inv.args.Netns, IfName: id.IfName, HostVeth: id.HostVeth, MTU: conf.MTU}
	// The node and an existing endpoint are independent reads: one round trip for both.
	var node *api.Node
	var nodeErr error
	var wg sync.WaitGroup
	wg.Go(func() { node, nodeErr = readNode(ctx, ad.ds, conf) })
	old, err := getEndpoint(ctx, ad.ds, id.Namespace, id.Endpoint)
	wg.Wait()
	if err = errors.Join(nodeErr, err); err != nil {
		return nil, err
	}
	if att.MTU == 0 {
		att.MTU = nodeWorkloadMTU(node, ad.log)
	}
	if old != nil && !sameWorkload(old, id) {
		return nil, errorf(codeConflict, "workload endpoint %s/%s belongs to another workload (%s %q, interface %s); this one is %s %q, interface %s",
			old.Namespace, old.Name, old.Spec.Orchestrator, old.Spec.Workload, old.Spec.Endpoint, id.Orchestrator, id.Workload, id.IfName)
	}
	if old != nil && old.Spec.ContainerID == id.ContainerID && old.Spec.Node == id.Node {
		res, err := ad.repeat(ctx, old, att)
		if res != nil || err != nil {
			return res, err
		}
	}
	tm.mark("lookup") // the node's MTU, an existing endpoint

	// Addresses allocated here are released if ADD fails.
	var mine []ipam.Assignment
	if len(att.Addrs) == 0 {
		got, err := ad.assign(ctx, ipam.AutoAssignArgs{
			Num4: boolInt(conf.IPAM.v4()), Num6: boolInt(conf.IPAM.v6()),
			Handle: id.Handle, Attrs: id.ipamAttrs(), Node: id.Node,
			IPv4Pools: conf.IPAM.IPv4Pools, IPv6Pools: conf.IPAM.IPv6Pools,
		})
		if err != nil {
			return nil, fmt.Errorf("allocate addresses for %s/%s: %w", id.Namespace, id.Endpoint, err)
		}
		mine = append(got.IPv4, got.IPv6...)
		for _, a := range mine {
			att.Addrs = append(att.Addrs, a.Addr)
		}
		ad.log.Debug("allocated", "addrs", att.Addrs)
	}
	tm.mark("ipam")
	li, err := att.create(ad.log)
	if err != nil {
		return nil, ad.undo(ctx, err, mine, nil)
	}
	tm.mark("veth")
	if err := writeEndpoint(ctx, ad.ds, id.endpoint(att.Addrs, li.MAC), old); err != nil {
		if datastore.Unknown(err) {
			return nil, ad.undoUnknownWrite(ctx, err, mine, att)
		}
		return nil, ad.undo(ctx, err, mine, att)
	}
	tm.mark("endpoint")
	ad.log.Info("attached", "addrs", att.Addrs, "mac", li.MAC)
	return buildResult(att, li, conf.dnsFor(id.Namespace)), nil
}

// repeat handles an ADD for a container whose endpoint exists already. If the endpoint's
// addresses are still the container's in IPAM, they are reused: an intact attachment is
// returned as it is (res set), a damaged one removed for add to rebuild (att.Addrs set).
// Otherwise the container's interface is removed and add allocates afresh (both nil); any
// addresses the handle still holds go at DEL.
// assignTries bounds the allocations assign tries.
const assignTries = 3

// assign allocates through IPAM. When the etcd member serving it fails mid-request
// (Unavailable: it died, or "leader changed"), the allocation may or may not have been
// applied: assign releases what the container's handle holds (nothing else can hold it:
// this call has the container's lock, and the container has no endpoint) and tries again.
func (ad *adder) assign(ctx context.Context, args ipam.AutoAssignArgs) (*ipam.AutoAssignResult, error) {
	for try := 1; ; try++ {
		got, err := ad.ipam.AutoAssign(ctx, args)
		if err == nil || try == assignTries || !datastore.MemberFailed(err) {
			return got, err
		}
		ad.log.Info("etcd member failed during the allocation; releasing what it may have left and trying again", "try", try, "err", err)
		if _, rerr := ad.ipam.ReleaseByHandle(ctx, args.Handle); rerr != nil {
			return nil, errors.Join(err, fmt.Errorf("release handle %s after it: %w", args.Handle, rerr))
		}
	}
}

func (ad *adder) repeat(ctx context.Context, old *api.WorkloadEndpoint, att *attachment) (*types100.Result, error) {
	addrs, err := old.Spec.Addrs()
	if err != nil || len(addrs) == 0 {
		ad.log.Warn("repeated ADD: the endpoint's addresses are unusable; allocating afresh", "ipNetworks", old.Spec.IPNetworks, "err", err)
		return nil, att.remove()
	}
	for _, a := range addrs {
		alloc, err := ad.ipam.GetAllocation(ctx, a)
		if errors.Is(err, ipam.ErrNotAllocated) || (err == nil && alloc.Handle != ad.id.Handle) {
			ad.log.Warn("repeated ADD: the endpoint's address is no longer the container's; allocating afresh", "addr", a)
			return nil, att.remove()
		}
		if err != nil {
			return nil, fmt.Errorf("look up the allocation of %s: %w", a, err)
		}
	}
	att.Addrs = addrs
	o, err := att.inspect()
	if err != nil {
		return nil, err
	}
	diffs := att.differences(o)
	if len(diffs) == 0 && o.Container.MAC == old.Spec.MAC {
		ad.log.Info("repeated ADD: the attachment is intact", "addrs", addrs)
		return buildResult(att, linkInfo{MAC: o.Container.MAC, MTU: o.Container.MTU}, ad.inv.conf.dnsFor(ad.id.Namespace)), nil
	}
	ad.log.Warn("repeated ADD: rebuilding a damaged attachment", "differences", diffs)
	return nil, att.remove()
}

// undo releases the addresses ADD allocated and removes the attachment it made, if any,
// after step failed; the error returned is step's, with any trouble undoing appended.
func (ad *adder) undo(ctx context.Context, step error, mine []ipam.Assignment, made *attachment) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var errs []error
	if made != nil {
		errs = append(errs, made.remove())
	}
	if len(mine) > 0 {
		opts := make([]ipam.ReleaseOptions, len(mine))
		for i, a := range mine {
			opts[i] = ipam.ReleaseOptions{Addr: a.Addr, Handle: ad.id.Handle, SequenceNumber: &mine[i].SequenceNumber}
		}
		_, err := ad.ipam.ReleaseIPs(ctx, opts...)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		ad.log.Error("undoing a failed ADD", "err", err)
		return fmt.Errorf("%w (and undoing the ADD failed too: %v)", step, err)
	}
	ad.log.Info("undid a failed ADD", "released", len(mine), "removedVeth", made != nil)
	return step
}

// undoUnknownWrite undoes an ADD whose endpoint write failed in a way that may have
// applied it (datastore.Unknown). The endpoint, if this container's write made it, goes
// before the addresses: released under an endpoint that names them, they could be
// handed to another workload while agents still route them here. When the endpoint
// cannot be read or deleted, the addresses stay allocated (the garbage collector
// releases them once no endpoint holds the handle) and the error says so.
func (ad *adder) undoUnknownWrite(ctx context.Context, step error, mine []ipam.Assignment, made *attachment) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if err := deleteEndpoint(dctx, ad.ds, ad.id.Namespace, ad.id.Endpoint, ad.id.ContainerID, ad.log); err != nil {
		ad.log.Error("the endpoint write may have been applied and cannot be undone; its addresses stay allocated", "err", err)
		return ad.undo(ctx, fmt.Errorf("%w (it may have been applied, and removing it failed: %v; its addresses stay allocated until the IPAM garbage collector finds no endpoint holding them)", step, err), nil, made)
	}
	return ad.undo(ctx, step, mine, made)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

var wepKind = func() *api.Kind {
	k, err := api.LookupKind("workloadendpoints")
	if err != nil {
		panic(err)
	}
	return k
}()

// getEndpoint reads an endpoint; nil if it does not exist.
func getEndpoint(ctx context.Context, ds *datastore.Client, namespace, name string) (*api.WorkloadEndpoint, error) {
	w, err := datastore.GetAs[*api.WorkloadEndpoint](ctx, ds, namespace, name)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	return w, err
}

// readNode reads the node ADD attaches to. A node that is not registered is refused:
// an endpoint there would be one no agent routes to, and its IPAM block a claim for a
// host that does not exist. Named in the configuration, it is a configuration error (7);
// taken from the host name, the node's agent has probably not registered yet (11).
func readNode(ctx context.Context, ds *datastore.Client, conf *netConf) (*api.Node, error) {
	n, err := datastore.GetAs[*api.Node](ctx, ds, "", conf.NodeName)
	switch {
	case errors.Is(err, datastore.ErrNotFound) && conf.nodeFromHostname:
		return nil, errorf(types.ErrTryAgainLater, "node %q (the host name: the configuration sets no nodename) is not registered in etcd: start tabby-node on this host, or set nodename to the name its agent registered", conf.NodeName)
	case errors.Is(err, datastore.ErrNotFound):
		return nil, errorf(types.ErrInvalidNetworkConfig, "node %q (nodename in the network configuration) is not registered in etcd: no agent would route to the workload; set nodename to a node tabby-node registered (tabbyctl get nodes), or start tabby-node on it", conf.NodeName)
	case err != nil:
		return nil, fmt.Errorf("read node %q: %w", conf.NodeName, err)
	}
	return n, nil
}

// sameWorkload says whether an existing endpoint of the name ADD wants is this
// workload's, from an earlier sandbox of the same pod (or this very container).
func sameWorkload(w *api.WorkloadEndpoint, id *workloadID) bool {
	return w.Spec.Orchestrator == id.Orchestrator && w.Spec.Workload == id.Workload && w.Spec.Pod == id.Pod && w.Spec.Endpoint == id.IfName
}

// writeEndpoint creates the endpoint, or replaces old (compare-and-swap on its revision:
// an earlier sandbox's endpoint, or this container's own), while its Node exists (a
// node delete since readNode refuses it). Losing a race with another writer is worth
// retrying (11).
func writeEndpoint(ctx context.Context, ds *datastore.Client, w *api.WorkloadEndpoint, old *api.WorkloadEndpoint) error {
	var err error
	ds = ds.WithWriteCheck(datastore.NodeExistsCheck(w.Spec.Node))
	if old == nil {
		_, err = ds.Create(ctx, w)
	} else {
		w.ResourceVersion = old.ResourceVersion
		_, err = ds.Update(ctx, w)
	}
	if errors.Is(err, datastore.ErrAlreadyExists) || errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrNotFound) {
		return withCode(types.ErrTryAgainLater, fmt.Errorf("write workload endpoint: another writer changed it meanwhile: %w", err))
	}
	if errors.Is(err, datastore.ErrNodeNotRegistered) {
		return withCode(types.ErrInvalidNetworkConfig, fmt.Errorf("write workload endpoint: %w: the node was deleted (tabbyctl node delete) after this ADD read it", err))
	}
	if err != nil {
		return fmt.Errorf("write workload endpoint: %w", err)
	}
	return nil
}

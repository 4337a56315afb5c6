package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

func newNodeDeleteCommand(conn *connection) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME [--force]",
		Short: "decommission a node: its Node, workload endpoints, blocks and addresses",
		Long: `delete removes a node that is gone for good: its Node resource, every
WorkloadEndpoint on it, and, in IPAM, its workload and tunnel addresses and its block
affinities (an empty block goes with its affinity; a block from which other nodes borrowed
keeps their addresses and loses the affinity), then the BGPPeers scoped to it (spec.node)
and its BGPConfiguration and FelixConfiguration overrides (node.<name>), as Calico's node
delete does. Other
nodes withdraw the routes to its blocks. Each step is a transaction; a delete that fails
midway can be run again.

A node whose agent is alive (its lease, shown by "tabbyctl node list") is refused unless
--force is given: the agent would register the node again and keep using its blocks.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			ds, c, err := conn.ipamClient(cmd)
			if err != nil {
				return err
			}
			defer ds.Close()
			agents, err := ds.AgentRecords(cmd.Context())
			if err != nil {
				return err
			}
			if r, alive := agents[name]; alive && !force {
				return fmt.Errorf("node %q: its agent is alive (running since %s, version %s): stop tabby-node there and wait for its lease to expire (at most %s), or pass --force",
					name, r.Started.Local().Format("2006-01-02 15:04:05"), r.Version, r.TTL)
			}
			return deleteNode(cmd.Context(), ds, c, name, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete the node even though its agent is alive")
	return cmd
}

// maxNodeDeletePasses bounds the passes of deleteNode: each deletes the endpoints found
// on the node and releases its IPAM state; a pass that finds nothing ends it. More than
// one is needed only when workloads are added to the node while it is deleted.
const maxNodeDeletePasses = 5

// wepDeleteBatch is how many endpoints one transaction deletes: below an external etcd's
// default --max-txn-ops (128).
const wepDeleteBatch = 100

// deleteNode deletes the Node (first, so CNI ADDs on the node are refused from then
// on), then in passes its endpoints and IPAM state. An agent record (--force on a live
// agent) is left to go with the agent's lease.
func deleteNode(ctx context.Context, ds *datastore.Client, c *ipam.Client, name string, out io.Writer) error {
	kind, err := api.KindForType[*api.Node]()
	if err != nil {
		return err
	}
	_, err = ds.Delete(ctx, kind, "", name, "")
	existed := err == nil
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	var weps, addrs, affinities int
	for pass := 1; ; pass++ {
		n, err := deleteNodeEndpoints(ctx, ds, name)
		weps += n
		if err != nil {
			return fmt.Errorf("delete node %q: %w", name, err)
		}
		rel, err := c.ReleaseNode(ctx, name)
		if err != nil {
			return fmt.Errorf("delete node %q: %w", name, err)
		}
		addrs, affinities = addrs+len(rel.Released), affinities+len(rel.Affinities)
		if n == 0 && rel.Empty() {
			break
		}
		if pass == maxNodeDeletePasses {
			return fmt.Errorf("delete node %q: workloads are still being added to it after %d passes; stop them and run delete again", name, pass)
		}
	}
	scoped, err := deleteNodeScoped(ctx, ds, name)
	if err != nil {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	if !existed && weps+addrs+affinities+scoped == 0 {
		return fmt.Errorf("node %q: %w (and nothing in IPAM, any endpoint, BGPPeer or node configuration refers to it)", name, datastore.ErrNotFound)
	}
	fmt.Fprintf(out, "Deleted node %s: %d workload endpoints, %d addresses released, %d block affinities released, %d node-scoped BGP peers and configurations deleted.\n",
		name, weps, addrs, affinities, scoped)
	return nil
}

// deleteNodeScoped deletes, in one transaction, what applies to node alone, as Calico's
// node delete does: the BGPPeers whose spec.node is node and its BGPConfiguration and
// FelixConfiguration overrides (node.<name>). It returns how many it deleted.
func deleteNodeScoped(ctx context.Context, ds *datastore.Client, node string) (int, error) {
	peers, _, err := datastore.ListAs[*api.BGPPeer](ctx, ds, "")
	if err != nil {
		return 0, err
	}
	var ops []datastore.Op
	for _, p := range peers {
		if p.Spec.Node == node {
			ops = append(ops, datastore.Op{Action: datastore.OpDelete, Resource: p})
		}
	}
	if ops, err = appendDeleteIfExists[*api.BGPConfiguration](ctx, ds, api.NodeBGPConfigurationPrefix+node, ops); err != nil {
		return 0, err
	}
	if ops, err = appendDeleteIfExists[*api.FelixConfiguration](ctx, ds, api.NodeFelixConfigurationPrefix+node, ops); err != nil {
		return 0, err
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if _, err := ds.Txn(ctx, ops); err != nil {
		return 0, fmt.Errorf("delete its BGPPeers and node configuration: %w", err)
	}
	return len(ops), nil
}

// deleteNodeEndpoints deletes every WorkloadEndpoint whose spec.node is node, in
// transactions of wepDeleteBatch, and returns how many it deleted. An endpoint deleted
// by someone else meanwhile makes its transaction fail; the batch is listed again.
func deleteNodeEndpoints(ctx context.Context, ds *datastore.Client, node string) (int, error) {
	deleted, lost := 0, 0
	for {
		weps, _, err := datastore.ListAs[*api.WorkloadEndpoint](ctx, ds, "")
		if err != nil {
			return deleted, err
		}
		var ops []datastore.Op
		for _, w := range weps {
			if w.Spec.Node == node {
				ops = append(ops, datastore.Op{Action: datastore.OpDelete, Resource: w})
			}
		}
		if len(ops) == 0 {
			return deleted, nil
		}
		batch := ops[:min(wepDeleteBatch, len(ops))]
		_, err = ds.Txn(ctx, batch)
		switch {
		case err == nil:
			deleted += len(batch)
		case (errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrConflict)) && lost < maxTxnRetries:
			lost++
		default:
			return deleted, fmt.Errorf("delete its workload endpoints: %w", err)
		}
	}
}

// maxTxnRetries bounds how often deleteNodeEndpoints lists again after losing a race.
const maxTxnRetries = 20

// appendDeleteIfExists appends to ops the delete of the cluster-wide resource of type T
// named name, when there is one.
func appendDeleteIfExists[T api.Resource](ctx context.Context, ds *datastore.Client, name string, ops []datastore.Op) ([]datastore.Op, error) {
	r, err := datastore.GetAs[T](ctx, ds, "", name)
	switch {
	case err == nil:
		return append(ops, datastore.Op{Action: datastore.OpDelete, Resource: r}), nil
	case errors.Is(err, datastore.ErrNotFound):
		return ops, nil
	}
	return nil, err
}

package main

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// nodeWorkloadMTU is the MTU the node's agent decided for workloads (the Node annotation
// api.AnnotationWorkloadMTU: the underlay's less the tunnel's header), or 0 (the kernel's
// default) when the Node does not say.
func nodeWorkloadMTU(ctx context.Context, ds *datastore.Client, node string, log *slog.Logger) int {
	n, err := datastore.GetAs[*api.Node](ctx, ds, "", node)
	if err != nil {
		log.Debug("no workload MTU from the node; using the kernel's default", "node", node, "err", err)
		return 0
	}
	v, ok := n.Annotations[api.AnnotationWorkloadMTU]
	if !ok {
		return 0
	}
	mtu, err := strconv.Atoi(v)
	if err != nil || mtu < 576 || mtu > 65535 {
		log.Warn("ignoring the node's workload MTU annotation", "node", node, "value", v)
		return 0
	}
	return mtu
}

package main

import (
	"log/slog"
	"strconv"

	"github.com/tabby-net/tabby/api"
)

// nodeWorkloadMTU is the MTU node's agent decided for workloads (the Node annotation
// api.AnnotationWorkloadMTU: the underlay's less the tunnel's header), or 0 (the kernel's
// default) when the Node does not say.
func nodeWorkloadMTU(n *api.Node, log *slog.Logger) int {
	v, ok := n.Annotations[api.AnnotationWorkloadMTU]
	if !ok {
		log.Debug("no workload MTU from the node; using the kernel's default", "node", n.Name)
		return 0
	}
	mtu, err := strconv.Atoi(v)
	if err != nil || mtu < 576 || mtu > 65535 {
		log.Warn("ignoring the node's workload MTU annotation", "node", n.Name, "value", v)
		return 0
	}
	return mtu
}

package datastore

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tabby-net/tabby/api"
)

// ErrNodeNotRegistered is NodeExistsCheck's refusal: the endpoint's node has no Node
// resource (it was deleted after the writer read it).
var ErrNodeNotRegistered = errors.New("node is not registered")

// NodeExistsCheck is a write check for one writer (WithWriteCheck) of a node's
// WorkloadEndpoints: the write commits only while the Node named node exists, so an
// endpoint cannot land after a node delete that ran between the writer's read of the
// Node and its write (the delete's last pass would not see it).
func NodeExistsCheck(node string) WriteCheck {
	nodes, _ := listPrefix(mustKindFor[*api.Node](), "")
	key := nodes + node
	return WriteCheck{Kind: mustKindFor[*api.WorkloadEndpoint](), Prefixes: []string{key}, Present: true, Check: func(_, new api.Resource, read map[string][]*mvccpb.KeyValue) error {
		w, ok := new.(*api.WorkloadEndpoint)
		if !ok || w.Spec.Node != node || hasKey(read[key], key) {
			return nil
		}
		return fmt.Errorf("node %q: %w (deleted meanwhile?)", node, ErrNodeNotRegistered)
	}}
}

package datastore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// AgentsPrefix is where each running tabby-node keeps its AgentRecord, at
// AgentsPrefix + node, under the agent's lease: the key is there while the agent is
// alive and goes when the lease expires (an agent stopped for good, or cut off from etcd
// longer than the lease's TTL). It is no resource: not listed, exported or watched.
const AgentsPrefix = "/tabby/agents/v1/"

// AgentRecord says that a node's agent is alive, since when, and which build it is.
type AgentRecord struct {
	Node    string    `json:"node"`
	Started time.Time `json:"started"`
	Version string    `json:"version,omitempty"`
	// TTL is the lease's time to live: the record goes at most this long after the
	// agent's last keep-alive.
	TTL time.Duration `json:"ttl"`
}

// PutAgentRecord stores r under lease.
func (c *Client) PutAgentRecord(ctx context.Context, r AgentRecord, lease clientv3.LeaseID) error {
	if r.Node == "" || strings.Contains(r.Node, "/") {
		return fmt.Errorf("agent record: node name %q: want non-empty, without '/'", r.Node)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := c.etcd.Put(ctx, AgentsPrefix+r.Node, string(val), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("agent record of node %q: %w", r.Node, err)
	}
	return nil
}

// AgentRecords returns the records of the agents alive now, by node.
func (c *Client) AgentRecords(ctx context.Context) (map[string]AgentRecord, error) {
	resp, err := c.etcd.Get(ctx, AgentsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read agent records: %w", err)
	}
	out := make(map[string]AgentRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r AgentRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("agent record %s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), AgentsPrefix)] = r
	}
	return out, nil
}

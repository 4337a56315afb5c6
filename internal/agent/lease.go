package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/datastore"
)

// agentLeaseTTL is how long what an agent keeps under its lease (its AgentRecord, its
// EndpointHealth records) stays after the agent stopped (seconds): a restarted agent
// takes it over, one gone for good takes it with it, and `tabbyctl node list` shows the
// node down.
const agentLeaseTTL = 15

// agentLease is the etcd lease this agent keeps alive while it runs, with the
// AgentRecord that says the agent is alive under it. The EndpointHealth records are kept
// under the same lease. A lease that expired (etcd out of reach longer than its TTL) is
// granted anew and the record written again; holders of the old one are told.
type agentLease struct {
	ds     *datastore.Client
	record datastore.AgentRecord
	log    *slog.Logger

	mu      sync.Mutex
	id      clientv3.LeaseID
	changed chan struct{} // closed, and replaced, when id changes
}

func newAgentLease(ds *datastore.Client, node, version string) *agentLease {
	return &agentLease{
		ds:      ds,
		record:  datastore.AgentRecord{Node: node, Version: version, Started: time.Now().UTC().Truncate(time.Second), TTL: agentLeaseTTL * time.Second},
		log:     slog.Default().With("component", "lease"),
		changed: make(chan struct{}),
	}
}

func (l *agentLease) Name() string { return "lease" }

// current returns the lease in force (0: none yet, or it expired and is not granted
// again yet) and a channel that is closed when it changes.
func (l *agentLease) current() (clientv3.LeaseID, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.id, l.changed
}

func (l *agentLease) set(id clientv3.LeaseID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.id = id
	close(l.changed)
	l.changed = make(chan struct{})
}

// Run grants the lease, writes the record under it and keeps it alive until ctx ends.
// It does not revoke the lease when it stops: a restart within the TTL takes the records
// over without their ever vanishing.
func (l *agentLease) Run(ctx context.Context) error {
	for {
		alive, err := l.grant(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.log.Warn("granting the agent's lease failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(healthRetry):
			}
			continue
		}
		for range alive {
		}
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("the agent's lease expired; granting a new one and writing its records again")
		l.set(0)
	}
}

// grant takes a new lease, keeps it alive, writes the record under it and makes it
// current; the channel closes when the lease can no longer be kept alive.
func (l *agentLease) grant(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	g, err := l.ds.Etcd().Grant(ctx, agentLeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	// Written before the keep-alives start, so a lease whose record failed expires.
	if err := l.ds.PutAgentRecord(ctx, l.record, g.ID); err != nil {
		return nil, err
	}
	alive, err := l.ds.Etcd().KeepAlive(ctx, g.ID)
	if err != nil {
		return nil, fmt.Errorf("keep alive: %w", err)
	}
	l.set(g.ID)
	return alive, nil
}

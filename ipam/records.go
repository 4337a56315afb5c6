package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// handleRecord is stored at handles/<handle>: how many addresses the handle holds in
// each block, kept equal to the blocks' own count by writing both in one transaction.
type handleRecord struct {
	Handle string         `json:"handleID"`
	Blocks map[string]int `json:"block"` // block CIDR ("10.244.0.64/26") → addresses
}

func (h *handleRecord) total() int {
	n := 0
	for _, c := range h.Blocks {
		n += c
	}
	return n
}

// Affinity states. A claim writes its affinity pending, then creates the block and
// confirms the affinity in one transaction; a pending affinity that stays so is what a
// claimer left when it died, and the garbage collector removes it.
const (
	affinityPending   = "pending"
	affinityConfirmed = "confirmed"
)

// affinity is stored at affinities/<node>/<cidr>: the node's claim on a block.
type affinity struct {
	State string    `json:"state"`
	Time  time.Time `json:"time"` // when it entered State
}

// Config is the cluster's IPAM configuration, stored at /tabby/ipam/v1/config.
type Config struct {
	// StrictAffinity: a node allocates only from blocks it claimed, never borrowing
	// from other nodes' blocks.
	StrictAffinity bool `json:"strictAffinity"`
	// MaxBlocksPerHost caps the blocks one node may claim per IP version; 0 = no cap.
	MaxBlocksPerHost int `json:"maxBlocksPerHost"`
	// AutoAllocateBlocks: nodes claim new blocks when theirs are full. When false, a
	// node allocates only from blocks it already has, or borrows.
	AutoAllocateBlocks bool `json:"autoAllocateBlocks"`
}

// DefaultConfig is the configuration in force until one is stored.
var DefaultConfig = Config{AutoAllocateBlocks: true}

func decodeConfig(kv *mvccpb.KeyValue) (Config, error) {
	cfg := DefaultConfig
	if kv == nil {
		return cfg, nil
	}
	if err := json.Unmarshal(kv.Value, &cfg); err != nil {
		return cfg, fmt.Errorf("decode %s: %w", configKey, err)
	}
	return cfg, nil
}

func (c Config) validate() error {
	if c.MaxBlocksPerHost < 0 {
		return fmt.Errorf("maxBlocksPerHost %d: must be 0 (no cap) or more", c.MaxBlocksPerHost)
	}
	return nil
}

// GetConfig reads the IPAM configuration (DefaultConfig when none is stored).
func (c *Client) GetConfig(ctx context.Context) (Config, error) {
	resp, err := c.etcd.Get(ctx, configKey)
	if err != nil {
		return Config{}, fmt.Errorf("get IPAM config: %w", err)
	}
	var kv *mvccpb.KeyValue
	if len(resp.Kvs) > 0 {
		kv = resp.Kvs[0]
	}
	return decodeConfig(kv)
}

// UpdateConfig applies change to the stored configuration, compare-and-swap, and
// returns the result.
func (c *Client) UpdateConfig(ctx context.Context, change func(*Config)) (Config, error) {
	var out Config
	err := c.retry(ctx, "update IPAM config", func() error {
		resp, err := c.etcd.Get(ctx, configKey)
		if err != nil {
			return err
		}
		var kv *mvccpb.KeyValue
		var rev int64
		if len(resp.Kvs) > 0 {
			kv, rev = resp.Kvs[0], resp.Kvs[0].ModRevision
		}
		cfg, err := decodeConfig(kv)
		if err != nil {
			return err
		}
		change(&cfg)
		if err := cfg.validate(); err != nil {
			return err
		}
		if err := c.commit(ctx, []clientv3.Cmp{unchanged(configKey, rev)}, []clientv3.Op{putJSON(configKey, cfg)}); err != nil {
			return err
		}
		out = cfg
		return nil
	})
	return out, err
}

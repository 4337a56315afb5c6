package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Record is one IPAM key and its value, as `tabbyctl datastore export` writes them:
// Key below Prefix ("blocks/10.244.0.64-26", "affinities/node1/10.244.0.64-26",
// "handles/<handle>", "config") and Value the stored JSON.
type Record struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// RecordsOf turns the key-values under Prefix (from datastore.Dump) into records, in key
// order, leaving out the garbage collector's election (its keys are under a lease, and
// Dump leaves those out already).
func RecordsOf(kvs []*mvccpb.KeyValue) []Record {
	var out []Record
	for _, kv := range kvs {
		key := strings.TrimPrefix(string(kv.Key), Prefix)
		if strings.HasPrefix(Prefix+key, gcLeaderPrefix) {
			continue
		}
		out = append(out, Record{Key: key, Value: json.RawMessage(slices.Clone(kv.Value))})
	}
	return out
}

// ValidateRecords checks records as an import would store them: each key names a block,
// an affinity, a handle or the config, once, and its value decodes as that record (a
// block also checks itself, and must be stored under its own CIDR). The error names
// the record by index and key.
func ValidateRecords(records []Record) error {
	seen := map[string]int{}
	for i, r := range records {
		if j, dup := seen[r.Key]; dup {
			return fmt.Errorf("ipam[%d]: key %q: also ipam[%d]", i, r.Key, j)
		}
		seen[r.Key] = i
		if err := validateRecord(r); err != nil {
			return fmt.Errorf("ipam[%d]: key %q: %w", i, r.Key, err)
		}
	}
	return nil
}

func validateRecord(r Record) error {
	key := Prefix + r.Key
	strict := func(v any) error {
		d := json.NewDecoder(bytes.NewReader(r.Value))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			return fmt.Errorf("value: %w", err)
		}
		return nil
	}
	switch {
	case strings.HasPrefix(key, blocksPrefix):
		cidr, err := parseCIDRKey(strings.TrimPrefix(key, blocksPrefix))
		if err != nil {
			return err
		}
		var b block
		if err := strict(&b); err != nil {
			return err
		}
		if b.CIDR != cidr {
			return fmt.Errorf("value: block %s under the key of %s", b.CIDR, cidr)
		}
		if err := b.validate(); err != nil {
			return fmt.Errorf("value: %w", err)
		}
	case strings.HasPrefix(key, affinitiesPrefix):
		if _, _, err := parseAffinityKey(key); err != nil {
			return err
		}
		var a affinity
		if err := strict(&a); err != nil {
			return err
		}
		if a.State != affinityPending && a.State != affinityConfirmed {
			return fmt.Errorf("value: state %q: want %q or %q", a.State, affinityPending, affinityConfirmed)
		}
	case strings.HasPrefix(key, handlesPrefix):
		if err := checkName("handle", strings.TrimPrefix(key, handlesPrefix)); err != nil {
			return err
		}
		var h handleRecord
		if err := strict(&h); err != nil {
			return err
		}
	case key == configKey:
		var c Config
		if err := strict(&c); err != nil {
			return err
		}
		return c.validate()
	default:
		return fmt.Errorf("not an IPAM record: want blocks/, affinities/, handles/ or config")
	}
	return nil
}

// maxImportPerTxn bounds the keys of one import transaction, within an external etcd's
// default of 128 operations.
const maxImportPerTxn = 100

// ImportRecords stores records (validated first, nothing stored on error) in
// transactions of at most 100 keys, each requiring its keys absent. It is meant for an
// empty datastore: a key that exists fails its transaction, and the ones before it stay.
func (c *Client) ImportRecords(ctx context.Context, records []Record) error {
	if err := ValidateRecords(records); err != nil {
		return err
	}
	for start := 0; start < len(records); start += maxImportPerTxn {
		chunk := records[start:min(start+maxImportPerTxn, len(records))]
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, r := range chunk {
			key := Prefix + r.Key
			var compact bytes.Buffer
			if err := json.Compact(&compact, r.Value); err != nil {
				return fmt.Errorf("ipam record %q: %w", r.Key, err)
			}
			cmps = append(cmps, unchanged(key, 0))
			ops = append(ops, clientv3.OpPut(key, compact.String()))
		}
		resp, err := c.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("import IPAM records %d to %d: %w", start, start+len(chunk)-1, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("import IPAM records %d to %d: a key exists already (%d records before them were stored)", start, start+len(chunk)-1, start)
		}
	}
	return nil
}

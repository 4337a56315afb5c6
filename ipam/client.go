package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/datastore"
)

// Client allocates and releases addresses. It keeps no state between calls (every
// call reads what it needs from etcd), so any number of clients, in any processes, may
// work at once; it is safe for concurrent use.
type Client struct {
	ds   *datastore.Client
	etcd *clientv3.Client
	log  *slog.Logger
}

// New returns a client that keeps IPAM state in ds's etcd. log nil means slog.Default().
func New(ds *datastore.Client, log *slog.Logger) *Client {
	if log == nil {
		log = slog.Default()
	}
	return &Client{ds: ds, etcd: ds.Etcd(), log: log.With("component", "ipam")}
}

// errRetry: a compare-and-swap lost to another writer; read again and redo.
var errRetry = errors.New("lost a race with another writer")

// maxAttempts bounds how often one operation re-reads and retries after losing races.
const maxAttempts = 100

// retry runs f until it returns anything but errRetry, with jittered exponential
// backoff between attempts, at most maxAttempts times.
func (c *Client) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if !errors.Is(err, errRetry) {
			if err != nil && !errors.Is(err, ctx.Err()) {
				return fmt.Errorf("%s: %w", what, err)
			}
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%s: %w: other writers kept changing the same keys (%d attempts)", what, datastore.ErrConflict, attempt)
		}
		if err := backoff(ctx, attempt); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
}

// backoff sleeps a random time below min(2^attempt, 100) ms, so racing writers spread out.
func backoff(ctx context.Context, attempt int) error {
	limit := min(time.Millisecond<<min(attempt, 10), 100*time.Millisecond)
	t := time.NewTimer(time.Duration(rand.Int64N(int64(limit))))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// commit runs one compare-and-swap transaction: errRetry when a compare failed.
func (c *Client) commit(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) error {
	_, err := c.commitRev(ctx, cmps, ops)
	return err
}

// commitRev is commit that also returns the revision written.
func (c *Client) commitRev(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (int64, error) {
	resp, err := c.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		return 0, errRetry
	}
	return resp.Header.Revision, nil
}

// unchanged compares key with the mod revision it was read at; 0 means it was absent.
func unchanged(key string, rev int64) clientv3.Cmp {
	if rev == 0 {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev)
}

// putJSON is a put of v's JSON form; v is one of this package's record types, which
// always marshal.
func putJSON(key string, v any) clientv3.Op {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ipam: marshal %s: %v", key, err))
	}
	return clientv3.OpPut(key, string(b))
}

// decodeJSON decodes a stored record, naming its key on error.
func decodeJSON[T any](kv *mvccpb.KeyValue) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	return v, nil
}

// rangeKVs returns the key-values of a range read in a transaction response.
func rangeKVs(resp *clientv3.TxnResponse, i int) []*mvccpb.KeyValue {
	return resp.Responses[i].GetResponseRange().Kvs
}

// firstKV is the single key-value of a get in a transaction response, nil if absent.
func firstKV(resp *clientv3.TxnResponse, i int) *mvccpb.KeyValue {
	if kvs := rangeKVs(resp, i); len(kvs) > 0 {
		return kvs[0]
	}
	return nil
}

// modRev is kv's mod revision, 0 for an absent key.
func modRev(kv *mvccpb.KeyValue) int64 {
	if kv == nil {
		return 0
	}
	return kv.ModRevision
}

package datastore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
)

// ResourcePrefix is the etcd prefix under which every resource is stored, at
// ResourcePrefix + kind.Key(namespace, name).
const ResourcePrefix = "/tabby/resources/v1/"

// Errors a caller can test for with errors.Is; the returned errors wrap them with the
// operation and resource, as in "create ippools/pool-a: already exists".
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the resource's revision is not the one the write expected.
	ErrConflict = errors.New("revision conflict")
	// ErrTooLarge: a write is larger than one etcd request may be.
	ErrTooLarge = errors.New("too large for one etcd request")
)

// ref names one resource: its storage key and the "<plural>/[<ns>/]<name>" users read.
type ref struct {
	kind *api.Kind
	key  string
	name string
}

// refFor checks a kind/namespace/name triple and builds its storage key. Writes are
// checked further by api.Validate; this guards reads and deletes from keys that could
// alias another resource's.
func refFor(kind *api.Kind, ns, name string) (ref, error) {
	switch {
	case kind.Namespaced && ns == "":
		return ref{}, fmt.Errorf("%s %q: namespace required", kind.Plural, name)
	case !kind.Namespaced && ns != "":
		return ref{}, fmt.Errorf("%s %q: not namespaced, but namespace %q given", kind.Plural, name, ns)
	case name == "" || strings.Contains(name, "/") || strings.Contains(ns, "/"):
		return ref{}, fmt.Errorf("%s: invalid name %q (namespace %q)", kind.Plural, name, ns)
	}
	k := kind.Key(ns, name)
	return ref{kind: kind, key: ResourcePrefix + k, name: k}, nil
}

// listPrefix is the key prefix of kind's resources in namespace ns ("" = all).
func listPrefix(kind *api.Kind, ns string) (string, error) {
	if ns == "" {
		return ResourcePrefix + kind.Plural + "/", nil
	}
	if !kind.Namespaced {
		return "", fmt.Errorf("%s: not namespaced, but namespace %q given", kind.Plural, ns)
	}
	if strings.Contains(ns, "/") {
		return "", fmt.Errorf("%s: invalid namespace %q", kind.Plural, ns)
	}
	return ResourcePrefix + kind.Plural + "/" + ns + "/", nil
}

// decode turns a stored value into a resource whose ResourceVersion is the key's mod revision.
func decode(kind *api.Kind, kv *mvccpb.KeyValue) (api.Resource, error) {
	r := kind.New()
	if err := json.Unmarshal(kv.Value, r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	r.GetObjectMeta().ResourceVersion = strconv.FormatInt(kv.ModRevision, 10)
	return r, nil
}

// encode is the stored form of r: JSON without the resourceVersion, which the key's
// mod revision supplies on read.
func encode(r api.Resource) (string, error) {
	m := r.GetObjectMeta()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	b, err := json.Marshal(r)
	m.ResourceVersion = rv
	return string(b), err
}

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Get reads one resource.
func (c *Client) Get(ctx context.Context, kind *api.Kind, ns, name string) (api.Resource, error) {
	ref, err := refFor(kind, ns, name)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	resp, err := c.etcd.Get(ctx, ref.key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", ref.name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("get %s: %w", ref.name, ErrNotFound)
	}
	r, err := decode(kind, resp.Kvs[0])
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", ref.name, err)
	}
	return r, nil
}

// List reads every resource of kind in namespace ns ("" = all namespaces), sorted by
// storage key, and the store revision the list is consistent at (the revision to start
// a Watch from).
func (c *Client) List(ctx context.Context, kind *api.Kind, ns string) ([]api.Resource, int64, error) {
	prefix, err := listPrefix(kind, ns)
	if err != nil {
		return nil, 0, fmt.Errorf("list: %w", err)
	}
	kvs, rev, err := c.listKVs(ctx, prefix, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", kind.Plural, err)
	}
	items := make([]api.Resource, 0, len(kvs))
	for _, kv := range kvs {
		r, err := decode(kind, kv)
		if err != nil {
			return nil, 0, fmt.Errorf("list %s: %w", kind.Plural, err)
		}
		items = append(items, r)
	}
	return items, rev, nil
}

// listKVs reads a prefix at revision rev (0 = now) and returns its key-values, sorted by
// key, and the revision read.
func (c *Client) listKVs(ctx context.Context, prefix string, rev int64) ([]*mvccpb.KeyValue, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := c.etcd.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, err
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	return resp.Kvs, rev, nil
}

// Create stores a new resource and returns it as stored (UID, creation time and
// resourceVersion set); it fails with ErrAlreadyExists if the name is taken.
func (c *Client) Create(ctx context.Context, r api.Resource) (api.Resource, error) {
	return c.single(ctx, OpCreate, r)
}

// Update replaces a resource if its stored revision is still r's ResourceVersion
// (ErrConflict otherwise, ErrNotFound if it is gone). An empty ResourceVersion is an error.
func (c *Client) Update(ctx context.Context, r api.Resource) (api.Resource, error) {
	return c.single(ctx, OpUpdate, r)
}

// Apply creates r or replaces what is stored under its name. With a ResourceVersion set
// it is an Update.
func (c *Client) Apply(ctx context.Context, r api.Resource) (api.Resource, error) {
	return c.single(ctx, OpApply, r)
}

// Delete removes a resource and returns its last stored value. A non-empty
// resourceVersion makes the delete conditional on it (ErrConflict otherwise).
func (c *Client) Delete(ctx context.Context, kind *api.Kind, ns, name, resourceVersion string) (api.Resource, error) {
	r := kind.New()
	m := r.GetObjectMeta()
	m.Namespace, m.Name, m.ResourceVersion = ns, name, resourceVersion
	return c.single(ctx, OpDelete, r)
}

func (c *Client) single(ctx context.Context, action Action, r api.Resource) (api.Resource, error) {
	out, err := c.txn(ctx, []Op{{Action: action, Resource: r}}, false)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// GetAs is Get for the kind whose Go type is T, as in GetAs[*api.IPPool](ctx, c, "", "pool-a").
func GetAs[T api.Resource](ctx context.Context, c *Client, ns, name string) (T, error) {
	var zero T
	kind, err := api.KindForType[T]()
	if err != nil {
		return zero, err
	}
	r, err := c.Get(ctx, kind, ns, name)
	if err != nil {
		return zero, err
	}
	return r.(T), nil
}

// ListAs is List for the kind whose Go type is T.
func ListAs[T api.Resource](ctx context.Context, c *Client, ns string) ([]T, int64, error) {
	kind, err := api.KindForType[T]()
	if err != nil {
		return nil, 0, err
	}
	items, rev, err := c.List(ctx, kind, ns)
	if err != nil {
		return nil, 0, err
	}
	out := make([]T, len(items))
	for i, r := range items {
		out[i] = r.(T)
	}
	return out, rev, nil
}

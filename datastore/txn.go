package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tabby-net/tabby/api"
)

// Action is what an Op does to its resource.
type Action int

// Actions of an Op; they mean what the Client methods of the same names do.
const (
	OpCreate Action = iota + 1
	OpUpdate
	OpApply
	OpDelete
)

var actionNames = [...]string{OpCreate: "create", OpUpdate: "update", OpApply: "apply", OpDelete: "delete"}

func (a Action) String() string {
	if a > 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// Op is one write of a transaction. A delete needs only the Resource's kind, namespace
// and name, and its ResourceVersion if the delete is conditional.
type Op struct {
	Action   Action
	Resource api.Resource
	// Lease, when not zero, is the etcd lease a create, update or apply puts the key
	// under: the key is deleted when the lease expires (records whose writer is gone).
	Lease clientv3.LeaseID
}

// maxTxnAttempts bounds how often a transaction re-reads and retries when other writers
// changed its keys between its read and its write without breaking its preconditions.
const maxTxnAttempts = 20

// ippools is the kind whose writes are checked as a set (no overlapping CIDRs).
var ippools = mustKindFor[*api.IPPool]()

var poolsPrefix = ResourcePrefix + ippools.Plural + "/"

// Txn applies ops all-or-nothing in one etcd transaction and returns the resources as
// stored (deletes: the deleted value), in op order. Each op's precondition holds at the
// transaction's revision: create needs the name free, update and conditional apply or
// delete need the given ResourceVersion, delete needs the resource to exist. A failed
// precondition is an error naming the op index and resource; a race with another writer
// that leaves the preconditions true is retried. No two ops may name the same resource,
// etcd caps a transaction's ops (--max-txn-ops, 128 by default; the embedded etcd
// allows 10000), and its keys and values may not exceed MaxRequestBytes (ErrTooLarge).
func (c *Client) Txn(ctx context.Context, ops []Op) ([]api.Resource, error) {
	return c.txn(ctx, ops, true)
}

// pending is an Op checked and ready to plan.
type pending struct {
	action Action
	ref    ref
	desc   string       // "create ippools/pool-a", with "txn op N: " before it in a Txn
	obj    api.Resource // the defaulted copy to store; for deletes, the request
	base   api.Resource // for writes, obj as prepared, before any write hook changed it
	rv     int64        // the ResourceVersion the op requires, 0 for none
	lease  clientv3.LeaseID
}

// snapshot is what a transaction read: the current value of each op's key and, when
// pools are written, every stored pool, and the prefixes its write checks and hooks
// read, all at one revision.
type snapshot struct {
	rev      int64
	cur      []*mvccpb.KeyValue // per op, nil when absent
	pools    []*mvccpb.KeyValue
	prefixes map[string][]*mvccpb.KeyValue // write-check or hook prefix → its key-values
}

func (c *Client) txn(ctx context.Context, ops []Op, multi bool) ([]api.Resource, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	ps := make([]*pending, len(ops))
	byKey := make(map[string]int, len(ops))
	writesPools := false
	for i, op := range ops {
		prefix := ""
		if multi {
			prefix = fmt.Sprintf("txn op %d: ", i)
		}
		p, err := prepare(op, prefix)
		if err != nil {
			return nil, err
		}
		if j, dup := byKey[p.ref.key]; dup {
			return nil, fmt.Errorf("txn ops %d and %d both write %s", j, i, p.ref.name)
		}
		byKey[p.ref.key] = i
		ps[i] = p
		writesPools = writesPools || (p.action != OpDelete && p.ref.kind == ippools)
	}
	what := ps[0].desc
	if multi {
		what = fmt.Sprintf("txn of %d ops", len(ps))
	}
	checks, prefixes := c.writeChecksFor(ps)
	hooks := hooksFor(c.hooks, ps)
	for _, h := range hooks {
		for _, prefix := range h.prefixes {
			if !slices.Contains(prefixes, prefix) {
				prefixes = append(prefixes, prefix)
			}
		}
	}

	reads := make([]clientv3.Op, 0, len(ps)+1+len(prefixes))
	for _, p := range ps {
		reads = append(reads, clientv3.OpGet(p.ref.key))
	}
	if writesPools {
		reads = append(reads, clientv3.OpGet(poolsPrefix, clientv3.WithPrefix()))
	}
	for _, prefix := range prefixes {
		reads = append(reads, clientv3.OpGet(prefix, clientv3.WithPrefix()))
	}
	var snap *snapshot
	// Creates that nothing else constrains need no read: their precondition is that
	// each key is absent, which the write's compare checks. If a key exists, the Else
	// branch reads it and plan reports it, so the usual case is one round trip.
	createsOnly := !writesPools && len(prefixes) == 0 && !slices.ContainsFunc(ps, func(p *pending) bool { return p.action != OpCreate })
	if createsOnly {
		snap = &snapshot{cur: make([]*mvccpb.KeyValue, len(ps)), prefixes: map[string][]*mvccpb.KeyValue{}}
	} else {
		// A read changes nothing: sent again as a write is when its member fails.
		resp, err := c.sendAgain(ctx, what, func(bool) (*clientv3.TxnResponse, error) {
			return c.etcd.Txn(ctx).Then(reads...).Commit()
		})
		if err != nil {
			return nil, txnError(what, err)
		}
		snap = readSnapshot(resp, len(ps), writesPools, prefixes)
	}
	for attempt := 1; ; attempt++ {
		cmps, writes, err := plan(ps, snap, writesPools, checks, hooks)
		if err != nil {
			return nil, err
		}
		if err := checkSize(what, cmps, writes, reads); err != nil {
			return nil, err
		}
		// The Else branch re-reads, so a lost race costs no extra round trip.
		resp, err := c.commit(ctx, what, cmps, writes, reads)
		if err != nil {
			return nil, txnError(what, err)
		}
		if resp.Succeeded {
			return results(ps, snap, resp.Header.Revision), nil
		}
		snap = readSnapshot(resp, len(ps), writesPools, prefixes)
		if attempt == maxTxnAttempts {
			return nil, fmt.Errorf("%s: %w: other writers kept changing its keys (%d attempts)", what, ErrConflict, attempt)
		}
		if createsOnly {
			continue // a key exists: plan says which, no need to wait
		}
		c.log.Debug("etcd transaction raced another writer; retrying", "txn", what, "attempt", attempt)
		// Jittered backoff so racing writers stop colliding.
		backoff := time.Duration(rand.Int64N(int64(min(time.Millisecond<<attempt, 50*time.Millisecond))))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(backoff):
		}
	}
}

// resendFor bounds how long sendAgain keeps sending a transaction again after the member
// serving it failed; the client moves to another member meanwhile. It must outlast a
// leader election after the leader died (etcd's election timeout is 1 s, and a loaded
// machine takes several): five resends over 1.5 s did not (TestEtcdClusterTLS, a CNI ADD
// failing with "leader changed"). The caller's deadline still ends it sooner.
const resendFor = 10 * time.Second

// commit sends a transaction. When the member serving it fails mid-request (Unavailable:
// it died, or its connection broke), etcd may or may not have applied it, so commit sends
// it again, unchanged, until a member answers. Its compares keep it from applying twice;
// when they fail because an earlier send was applied, the keys read back hold exactly
// what it wrote (a create's value has its own UID), and that is success, at the revision
// that wrote them.
func (c *Client) commit(ctx context.Context, what string, cmps []clientv3.Cmp, writes, reads []clientv3.Op) (*clientv3.TxnResponse, error) {
	return c.sendAgain(ctx, what, func(resent bool) (*clientv3.TxnResponse, error) {
		resp, err := c.etcd.Txn(ctx).If(cmps...).Then(writes...).Else(reads...).Commit()
		if resent && err == nil && !resp.Succeeded {
			if rev, ok := appliedEarlier(resp, writes, reads); ok {
				resp.Succeeded, resp.Header.Revision = true, rev
			}
		}
		return resp, err
	})
}

// sendAgain calls send (resent: not the first time) until it does not fail with
// MemberFailed, for up to resendFor or until ctx ends, backing off a little more each
// time: the client moves to another member meanwhile.
func (c *Client) sendAgain(ctx context.Context, what string, send func(resent bool) (*clientv3.TxnResponse, error)) (*clientv3.TxnResponse, error) {
	resp, err := send(false)
	giveUp := time.Now().Add(resendFor)
	for resend := 1; MemberFailed(err) && time.Now().Before(giveUp); resend++ {
		c.log.Info("etcd member failed during a transaction; sending it again", "txn", what, "resend", resend, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(min(time.Duration(resend)*100*time.Millisecond, time.Second)):
		}
		resp, err = send(true)
	}
	return resp, err
}

// MemberFailed says whether err is etcd's Unavailable: the member serving a request died,
// its connection broke, or its leader changed ("etcdserver: leader changed", which the
// client returns as its own error type with a Code method, not a gRPC status). Whether a
// write so failed was applied is unknown.
func MemberFailed(err error) bool {
	var coded interface{ Code() codes.Code }
	if errors.As(err, &coded) {
		return coded.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}

// Unknown says whether a write that failed with err may have been applied all the same:
// the member serving it failed (MemberFailed) or the caller stopped waiting (a deadline
// or a cancel) after the request was sent. A refusal (a failed compare, a check, a
// validation error) was not applied.
func Unknown(err error) bool {
	if err == nil {
		return false
	}
	code := status.Code(err)
	return MemberFailed(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		code == codes.DeadlineExceeded || code == codes.Canceled
}

// appliedEarlier says whether the keys a failed transaction read back hold what its writes
// would have written (puts: that value; deletes: no key), as when an earlier send of it
// was applied. It returns the revision of that write. Writes to keys it did not read
// (a write hook's) go with the others: one transaction.
func appliedEarlier(resp *clientv3.TxnResponse, writes, reads []clientv3.Op) (int64, bool) {
	read := map[string]bool{}
	for _, o := range reads {
		if len(o.RangeBytes()) == 0 {
			read[string(o.KeyBytes())] = true
		}
	}
	cur := map[string]*mvccpb.KeyValue{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().GetKvs() {
			cur[string(kv.Key)] = kv
		}
	}
	rev, checked := resp.Header.Revision, 0
	for _, w := range writes {
		key := string(w.KeyBytes())
		if !read[key] {
			continue
		}
		kv := cur[key]
		switch {
		case w.IsPut() && (kv == nil || string(kv.Value) != string(w.ValueBytes())):
			return 0, false
		case w.IsPut():
			rev = kv.ModRevision
		case w.IsDelete() && kv != nil:
			return 0, false
		}
		checked++
	}
	return rev, checked > 0
}

// checkSize refuses a transaction whose keys and values exceed MaxRequestBytes, before
// it is sent: etcd would refuse it anyway, less clearly.
func checkSize(what string, cmps []clientv3.Cmp, writes, reads []clientv3.Op) error {
	n := 0
	for i := range cmps {
		n += proto.Size(cmps[i].GetCompare())
	}
	for _, ops := range [][]clientv3.Op{writes, reads} {
		for _, o := range ops {
			n += len(o.KeyBytes()) + len(o.RangeBytes()) + len(o.ValueBytes()) + 8
		}
	}
	if n > MaxRequestBytes {
		return fmt.Errorf("%s: %w: %s of keys and values, more than the %s one etcd request may carry; write fewer resources at a time",
			what, ErrTooLarge, mib(n), mib(MaxRequestBytes))
	}
	return nil
}

// txnError wraps the error of transaction what; etcd's limits on a transaction's size
// are ErrTooLarge, saying which limit and what to do.
func txnError(what string, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrRequestTooLarge), status.Code(err) == codes.ResourceExhausted:
		return fmt.Errorf("%s: %w: etcd refused it (%v): it accepts smaller requests than tabby's %s (--max-request-bytes); write fewer resources at a time, or raise its limit",
			what, ErrTooLarge, err, mib(MaxRequestBytes))
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%s: %w: etcd allows fewer operations in one transaction (--max-txn-ops; the embedded etcd allows 10000): write fewer resources at a time",
			what, ErrTooLarge)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// mib formats a byte count in MiB.
func mib(n int) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }

// prepare checks one op on its own: kind, names, resourceVersion, and for writes a
// defaulted copy of the resource that api.Validate accepts.
func prepare(op Op, prefix string) (*pending, error) {
	if op.Resource == nil {
		return nil, fmt.Errorf("%s%s: no resource", prefix, op.Action)
	}
	if op.Action < OpCreate || op.Action > OpDelete {
		return nil, fmt.Errorf("%sunknown action %s", prefix, op.Action)
	}
	kind, err := api.KindOf(op.Resource)
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", prefix, op.Action, err)
	}
	p := &pending{action: op.Action, obj: op.Resource, lease: op.Lease}
	if op.Action != OpDelete {
		// Store a defaulted copy: the caller's resource is not ours to change.
		if p.obj, err = clone(kind, op.Resource); err != nil {
			return nil, fmt.Errorf("%s%s: %w", prefix, op.Action, err)
		}
		api.SetDefaults(p.obj)
		p.base = p.obj
	}
	m := p.obj.GetObjectMeta()
	p.desc = prefix + op.Action.String() + " " + kind.Key(m.Namespace, m.Name)
	if op.Action != OpDelete {
		if err := api.Validate(p.obj); err != nil {
			return nil, fmt.Errorf("%s: invalid: %w", p.desc, err)
		}
	}
	if p.ref, err = refFor(kind, m.Namespace, m.Name); err != nil {
		return nil, fmt.Errorf("%s%s: %w", prefix, op.Action, err)
	}
	if m.ResourceVersion != "" {
		if p.rv, err = strconv.ParseInt(m.ResourceVersion, 10, 64); err != nil || p.rv <= 0 {
			return nil, fmt.Errorf("%s: invalid resourceVersion %q", p.desc, m.ResourceVersion)
		}
	}
	if op.Action == OpUpdate && p.rv == 0 {
		return nil, fmt.Errorf("%s: resourceVersion required: update is compare-and-swap (apply overwrites)", p.desc)
	}
	return p, nil
}

// clone deep-copies r through its JSON form, which is what storage keeps anyway.
func clone(kind *api.Kind, r api.Resource) (api.Resource, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	cp := kind.New()
	if err := json.Unmarshal(b, cp); err != nil {
		return nil, err
	}
	return cp, nil
}

// readSnapshot parses the reads of a transaction's read (or Else) branch: one get per
// op, then the pools if writesPools, then one range per write-check or hook prefix.
func readSnapshot(resp *clientv3.TxnResponse, n int, writesPools bool, prefixes []string) *snapshot {
	s := &snapshot{rev: resp.Header.Revision, cur: make([]*mvccpb.KeyValue, n), prefixes: map[string][]*mvccpb.KeyValue{}}
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().Kvs
		switch {
		case i < n && len(kvs) > 0:
			s.cur[i] = kvs[0]
		case i == n && writesPools:
			s.pools = kvs
		case i >= n:
			j := i - n
			if writesPools {
				j--
			}
			s.prefixes[prefixes[j]] = kvs
		}
	}
	return s
}

// plan checks each op's precondition against snap, runs the write hooks and checks, and
// returns the compares that make the write valid only if nothing it read has changed,
// and the writes.
func plan(ps []*pending, snap *snapshot, writesPools bool, checks []WriteCheck, hooks []writeHook) ([]clientv3.Cmp, []clientv3.Op, error) {
	cmps := make([]clientv3.Cmp, 0, len(ps)+1)
	writes := make([]clientv3.Op, 0, len(ps))
	for i, p := range ps {
		kv := snap.cur[i]
		switch {
		case p.action == OpCreate && kv != nil:
			return nil, nil, fmt.Errorf("%s: %w", p.desc, ErrAlreadyExists)
		case p.action == OpCreate, p.action == OpApply && p.rv == 0 && kv == nil:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(p.ref.key), "=", 0))
		case kv == nil:
			return nil, nil, fmt.Errorf("%s: %w", p.desc, ErrNotFound)
		case p.rv != 0 && kv.ModRevision != p.rv:
			return nil, nil, fmt.Errorf("%s: %w (stored revision %d, given %d)", p.desc, ErrConflict, kv.ModRevision, p.rv)
		default:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(p.ref.key), "=", kv.ModRevision))
		}
	}
	// Hooks first: they may change what is stored, which the checks then vet.
	hookCmps, hookWrites, err := runWriteHooks(ps, snap, hooks)
	if err != nil {
		return nil, nil, err
	}
	for i, p := range ps {
		if p.action == OpDelete {
			writes = append(writes, clientv3.OpDelete(p.ref.key))
			continue
		}
		stamp(p.obj, snap.cur[i])
		val, err := encode(p.obj)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: encode: %w", p.desc, err)
		}
		writes = append(writes, clientv3.OpPut(p.ref.key, val, clientv3.WithLease(p.lease)))
	}
	if writesPools {
		if err := checkPools(ps, snap); err != nil {
			return nil, nil, err
		}
		// No pool may change between our read and our write: two writers adding
		// overlapping pools concurrently would each pass the check alone.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(poolsPrefix), "<", snap.rev+1).WithPrefix())
	}
	checkCmps, err := runWriteChecks(ps, snap, checks)
	if err != nil {
		return nil, nil, err
	}
	cmps = append(append(cmps, checkCmps...), hookCmps...)
	return cmps, append(writes, hookWrites...), nil
}

// stamp sets the identity a stored resource keeps for life: its UID and creation time,
// carried over from the stored value kv when there is one.
func stamp(obj api.Resource, kv *mvccpb.KeyValue) {
	var stored struct {
		Metadata struct {
			UID               string     `json:"uid"`
			CreationTimestamp *time.Time `json:"creationTimestamp"`
		} `json:"metadata"`
	}
	if kv != nil {
		// A value that does not decode gets a fresh identity, so apply can repair it.
		_ = json.Unmarshal(kv.Value, &stored)
	}
	m := obj.GetObjectMeta()
	m.UID, m.CreationTimestamp = stored.Metadata.UID, stored.Metadata.CreationTimestamp
	if m.UID == "" {
		m.UID = newUID()
	}
	if m.CreationTimestamp == nil {
		now := time.Now().UTC().Truncate(time.Second)
		m.CreationTimestamp = &now
	}
}

// checkPools runs api.ValidateIPPools on the pools as they would be after the
// transaction: the stored ones, replaced or removed by the ops.
func checkPools(ps []*pending, snap *snapshot) error {
	pools := make(map[string]*api.IPPool, len(snap.pools)+len(ps))
	for _, kv := range snap.pools {
		var pool api.IPPool
		if json.Unmarshal(kv.Value, &pool) == nil {
			pools[string(kv.Key)] = &pool
		}
	}
	for _, p := range ps {
		if p.ref.kind != ippools {
			continue
		}
		if p.action == OpDelete {
			delete(pools, p.ref.key)
			continue
		}
		pools[p.ref.key] = p.obj.(*api.IPPool)
	}
	keys := slices.Sorted(maps.Keys(pools))
	list := make([]*api.IPPool, len(keys))
	for i, k := range keys {
		list[i] = pools[k]
	}
	if err := api.ValidateIPPools(list); err != nil {
		// The message names both pools of each overlapping pair; which op "caused" it is
		// not meaningful when either could be the one to change.
		return fmt.Errorf("IP pools would overlap: %w", err)
	}
	return nil
}

// results are the resources as the committed transaction left them.
func results(ps []*pending, snap *snapshot, rev int64) []api.Resource {
	out := make([]api.Resource, len(ps))
	for i, p := range ps {
		if p.action != OpDelete {
			p.obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
			out[i] = p.obj
			continue
		}
		old, err := decode(p.ref.kind, snap.cur[i])
		if err != nil {
			// The value was unreadable; report what was deleted by name and revision.
			old = p.ref.kind.New()
			m := old.GetObjectMeta()
			m.Name, m.Namespace = p.obj.GetObjectMeta().Name, p.obj.GetObjectMeta().Namespace
			m.ResourceVersion = strconv.FormatInt(snap.cur[i].ModRevision, 10)
		}
		out[i] = old
	}
	return out
}

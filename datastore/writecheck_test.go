package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

const holdPrefix = "/test/holds/"

// holdCheck refuses to delete a network set, or to change its nets, while a key under
// holdPrefix names it. It records every call.
type holdCheck struct {
	calls []string
	// onCall runs inside Check, to simulate a writer racing the transaction.
	onCall func()
}

func (h *holdCheck) writeCheck() datastore.WriteCheck {
	return datastore.WriteCheck{
		Kind:     netsetKind,
		Prefixes: []string{holdPrefix},
		Check: func(old, new api.Resource, read map[string][]*mvccpb.KeyValue) error {
			desc := func(r api.Resource) string {
				if r == nil {
					return "nil"
				}
				return r.GetObjectMeta().Name + "=" + strings.Join(r.(*api.NetworkSet).Spec.Nets, ",")
			}
			h.calls = append(h.calls, desc(old)+" -> "+desc(new))
			if h.onCall != nil {
				h.onCall()
			}
			if old == nil || (new != nil && strings.Join(old.(*api.NetworkSet).Spec.Nets, ",") == strings.Join(new.(*api.NetworkSet).Spec.Nets, ",")) {
				return nil
			}
			for _, kv := range read[holdPrefix] {
				if string(kv.Value) == old.GetObjectMeta().Name {
					return fmt.Errorf("held by %s", kv.Key)
				}
			}
			return nil
		},
	}
}

func TestWriteCheck(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	h := &holdCheck{}
	c.AddWriteCheck(h.writeCheck())

	mustCreate(t, c, newNetSet("default", "a", "10.0.0.1"))
	mustCreate(t, c, newPool("pool-a", "10.1.0.0/16")) // another kind: not checked
	if _, err := c.Etcd().Put(ctx, holdPrefix+"x", "a"); err != nil {
		t.Fatal(err)
	}
	_, err := c.Delete(ctx, netsetKind, "default", "a", "")
	if err == nil || err.Error() != "delete networksets/default/a: held by "+holdPrefix+"x" {
		t.Errorf("delete of a held set: %v", err)
	}
	_, err = c.Apply(ctx, newNetSet("default", "a", "10.0.0.2"))
	if err == nil || !strings.Contains(err.Error(), "held by") {
		t.Errorf("changing a held set's nets: %v", err)
	}
	// A labels-only change passes; so does a delete once the hold is gone.
	relabel := newNetSet("default", "a", "10.0.0.1")
	relabel.Labels = map[string]string{"k": "v"}
	if _, err := c.Apply(ctx, relabel); err != nil {
		t.Errorf("relabel: %v", err)
	}
	if _, err := c.Etcd().Delete(ctx, holdPrefix+"x"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, netsetKind, "default", "a", ""); err != nil {
		t.Errorf("delete after the hold went: %v", err)
	}
	want := []string{
		"nil -> a=10.0.0.1",        // create
		"a=10.0.0.1 -> nil",        // refused delete
		"a=10.0.0.1 -> a=10.0.0.2", // refused apply
		"a=10.0.0.1 -> a=10.0.0.1", // relabel
		"a=10.0.0.1 -> nil",        // delete
	}
	if strings.Join(h.calls, "; ") != strings.Join(want, "; ") {
		t.Errorf("check calls:\n got %q\nwant %q", h.calls, want)
	}
}

// TestWriteCheckRace: a hold written after the transaction read its snapshot (here,
// from inside the check) must still stop the delete: the commit fails its prefix
// compare, the transaction re-reads, and the check sees the hold.
func TestWriteCheckRace(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	mustCreate(t, c, newNetSet("default", "a", "10.0.0.1"))
	h := &holdCheck{}
	h.onCall = func() {
		h.onCall = nil
		if _, err := c.Etcd().Put(context.Background(), holdPrefix+"late", "a"); err != nil {
			t.Error(err)
		}
	}
	c.AddWriteCheck(h.writeCheck())
	_, err := c.Txn(ctx, []datastore.Op{{Action: datastore.OpDelete, Resource: newNetSet("default", "a")}})
	if err == nil || !strings.Contains(err.Error(), "txn op 0: delete networksets/default/a: held by "+holdPrefix+"late") {
		t.Errorf("delete racing a hold: %v", err)
	}
	if len(h.calls) != 2 {
		t.Errorf("check ran %d times, want 2 (before and after the racing write): %q", len(h.calls), h.calls)
	}
	if _, err := c.Get(ctx, netsetKind, "default", "a"); errors.Is(err, datastore.ErrNotFound) {
		t.Error("the held set was deleted")
	}
}

// TestWithWriteCheck: a check given to WithWriteCheck vets the writes of the client it
// returns, on top of the checks of the client it came from, and never the writes of that
// client.
func TestWithWriteCheck(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	base, extra := &holdCheck{}, &holdCheck{}
	c.AddWriteCheck(base.writeCheck())
	view := c.WithWriteCheck(extra.writeCheck())

	mustCreate(t, view, newNetSet("default", "a", "10.0.0.1"))
	mustCreate(t, c, newNetSet("default", "b", "10.0.0.2"))
	if _, err := c.Etcd().Put(ctx, holdPrefix+"x", "b"); err != nil {
		t.Fatal(err)
	}
	// The base client's check, which the view inherits, refuses deleting b through the
	// view (before the view's own check runs).
	if _, err := view.Delete(ctx, netsetKind, "default", "b", ""); err == nil || !strings.Contains(err.Error(), "held by") {
		t.Errorf("delete of a held set through the view: %v", err)
	}
	if got, want := strings.Join(extra.calls, "; "), "nil -> a=10.0.0.1"; got != want {
		t.Errorf("the view's check was called for %q, want %q (never for the base client's writes)", got, want)
	}
	if got, want := strings.Join(base.calls, "; "), "nil -> a=10.0.0.1; nil -> b=10.0.0.2; b=10.0.0.2 -> nil"; got != want {
		t.Errorf("the base client's check was called for %q, want %q (its writes and the view's)", got, want)
	}
}

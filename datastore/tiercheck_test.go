package datastore_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/datastoretest"
)

// TestTierInUseCheck: a tier named by a policy (namespaced or global) is not deleted,
// and the error names the policy; once no policy names it, it is.
func TestTierInUseCheck(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	c.AddWriteCheck(datastore.TierInUseCheck())
	tierKind, _ := api.LookupKind("tiers")
	npKind, _ := api.LookupKind("networkpolicies")
	gnpKind, _ := api.LookupKind("globalnetworkpolicies")
	for _, r := range []api.Resource{
		&api.Tier{TypeMeta: api.TypeMeta{Kind: "Tier", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: "ops"}},
		&api.Tier{TypeMeta: api.TypeMeta{Kind: "Tier", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: "idle"}},
		&api.NetworkPolicy{TypeMeta: api.TypeMeta{Kind: "NetworkPolicy", APIVersion: api.VersionCalico},
			ObjectMeta: api.ObjectMeta{Name: "ops.p", Namespace: "x"}, Spec: api.NetworkPolicySpec{Tier: "ops"}},
		&api.GlobalNetworkPolicy{TypeMeta: api.TypeMeta{Kind: "GlobalNetworkPolicy", APIVersion: api.VersionCalico},
			ObjectMeta: api.ObjectMeta{Name: "g"}, Spec: api.GlobalNetworkPolicySpec{Tier: "ops"}},
		&api.GlobalNetworkPolicy{TypeMeta: api.TypeMeta{Kind: "GlobalNetworkPolicy", APIVersion: api.VersionCalico},
			ObjectMeta: api.ObjectMeta{Name: "in-default"}},
	} {
		if _, err := c.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, tierKind, "", "idle", ""); err != nil {
		t.Errorf("delete a tier no policy names: %v", err)
	}
	_, err := c.Delete(ctx, tierKind, "", "ops", "")
	if err == nil || !strings.Contains(err.Error(), `tier "ops" is in use by NetworkPolicy x/ops.p, GlobalNetworkPolicy g`) {
		t.Fatalf("delete a tier in use: %v", err)
	}
	if _, err := c.Delete(ctx, npKind, "x", "ops.p", ""); err != nil {
		t.Fatal(err)
	}
	// A tier deleted with its last policies in one transaction is not in use.
	tier := &api.Tier{TypeMeta: api.TypeMeta{Kind: "Tier", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: "ops"}}
	g := &api.GlobalNetworkPolicy{TypeMeta: api.TypeMeta{Kind: "GlobalNetworkPolicy", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: "g"}}
	if _, err := c.Txn(ctx, []datastore.Op{{Action: datastore.OpDelete, Resource: tier}, {Action: datastore.OpDelete, Resource: g}}); err != nil {
		t.Errorf("delete a tier with its last policy: %v", err)
	}
	if _, err := c.Get(ctx, gnpKind, "", "in-default"); err != nil {
		t.Error(err)
	}
}

// TestTierExistsCheck: a policy naming a tier that does not exist is refused and not
// written; the default tier, an existing tier and a tier created in the same transaction
// are fine; and a policy create racing the delete of its tier never leaves the policy in
// a tier that is gone (the create's check sees the delete, or the delete sees the policy).
func TestTierExistsCheck(t *testing.T) {
	c := datastoretest.Start(t)
	ctx := testCtx(t)
	for _, wc := range datastore.TierChecks() {
		c.AddWriteCheck(wc)
	}
	tierKind, _ := api.LookupKind("tiers")
	gnpKind, _ := api.LookupKind("globalnetworkpolicies")
	tier := func(name string) *api.Tier {
		return &api.Tier{TypeMeta: api.TypeMeta{Kind: "Tier", APIVersion: api.VersionCalico}, ObjectMeta: api.ObjectMeta{Name: name}}
	}
	gnp := func(name, tier string) *api.GlobalNetworkPolicy {
		return &api.GlobalNetworkPolicy{TypeMeta: api.TypeMeta{Kind: "GlobalNetworkPolicy", APIVersion: api.VersionCalico},
			ObjectMeta: api.ObjectMeta{Name: name}, Spec: api.GlobalNetworkPolicySpec{Tier: tier}}
	}
	np := &api.NetworkPolicy{TypeMeta: api.TypeMeta{Kind: "NetworkPolicy", APIVersion: api.VersionCalico},
		ObjectMeta: api.ObjectMeta{Name: "ops.p", Namespace: "x"}, Spec: api.NetworkPolicySpec{Tier: "ops"}}
	if _, err := c.Create(ctx, np); err == nil || !strings.Contains(err.Error(), `tier "ops" does not exist: create the Tier first`) {
		t.Errorf("create a NetworkPolicy in a missing tier: %v", err)
	}
	if _, err := c.Apply(ctx, gnp("ops.g", "ops")); err == nil || !strings.Contains(err.Error(), `tier "ops" does not exist`) {
		t.Errorf("apply a GlobalNetworkPolicy in a missing tier: %v", err)
	}
	if _, err := c.Get(ctx, gnpKind, "", "ops.g"); err == nil {
		t.Error("the refused policy was written")
	}
	if _, err := c.Create(ctx, gnp("in-default", "")); err != nil {
		t.Errorf("a policy in the default tier: %v", err)
	}
	if _, err := c.Txn(ctx, []datastore.Op{{Action: datastore.OpCreate, Resource: gnp("ops.g", "ops")}, {Action: datastore.OpCreate, Resource: tier("ops")}}); err != nil {
		t.Errorf("a policy and its tier in one transaction: %v", err)
	}
	if _, err := c.Create(ctx, np); err != nil {
		t.Errorf("a NetworkPolicy in an existing tier: %v", err)
	}

	for round := range 20 {
		name := fmt.Sprintf("race%d", round)
		if _, err := c.Create(ctx, tier(name)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() { c.Delete(ctx, tierKind, "", name, "") })
		wg.Go(func() { c.Create(ctx, gnp(name+".p", name)) })
		wg.Wait()
		_, tierErr := c.Get(ctx, tierKind, "", name)
		_, policyErr := c.Get(ctx, gnpKind, "", name+".p")
		if tierErr != nil && policyErr == nil {
			t.Fatalf("round %d: the policy was written and its tier deleted", round)
		}
	}
}

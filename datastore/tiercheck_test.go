package datastore_test

import (
	"strings"
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

// Package policy owns tabby's network policy model, its compilation and the evaluator.
// It is pure: no kernel access.
//
// Build compiles the datastore's resources (workload endpoints, Calico NetworkPolicy and
// GlobalNetworkPolicy, Kubernetes NetworkPolicy, Profiles, Namespaces, NetworkSets and
// GlobalNetworkSets, HostEndpoints) into a Model: selectors parsed, endpoint labels resolved (their own
// over their profiles' labelsToApply, plus projectcalico.org/namespace and
// projectcalico.org/orchestrator), Kubernetes policies translated to Calico's shape
// (TranslateK8s), and policies sorted in evaluation order (tier, order, name).
//
// Model.Evaluate is the oracle: it decides a flow as the dataplane must, and says which
// policy and rule decided. felix renders the same Model into iptables chains and ipsets.
// The selector language is in the subpackage selector.
package policy

// Package felix owns the node's dataplane: routes, interfaces, tunnels, iptables and ipsets,
// and the reconcilers that make the kernel match the desired state.
//
// Desired state is computed by pure functions (DesiredRoutes, DesiredSysctls) from a
// LocalState the agent derives from its datastore watch. Reconcilers read the kernel back,
// diff, and change only what differs: RouteReconciler for routes, Dataplane for the whole
// loop (state updates, netlink events, periodic resync). Every route felix installs carries
// RouteProtocol, so routes of any other protocol are never touched.
//
// DetectNodeAddress finds the node's own address the ways Calico's IP_AUTODETECTION_METHOD
// does (first-found, interface=, skip-interface=, can-reach=, cidr=).
package felix

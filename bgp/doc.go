// Package bgp is tabby's BGP speaker: GoBGP v3 embedded in tabby-node.
//
// Pure functions compute what the node wants: DesiredPeers (node-to-node mesh, route
// reflectors and their clients, global and node-specific BGPPeers, selectors) and
// DesiredAdvertisements (affine blocks, borrowed addresses, Service CIDRs, and host routes
// for the addresses of Services with externalTrafficPolicy Local that have a ready
// endpoint on the node, as Calico does; never a pool with disableBGPExport), and
// WithCommunities (the communities BGPConfiguration prefixAdvertisements attach to them).
// A Speaker applies the difference to GoBGP: SetPeers touches only peers whose
// configuration changed, SetAdvertisements adds and withdraws paths and re-advertises
// those whose communities changed. A global
// export policy lets only this node's own routes out, plus iBGP-learned routes where BGP
// allows (route reflection); routes learned from eBGP peers are never passed on.
//
// Best paths learned from peers are reported by Learned; GoBGP never touches the kernel
// (no zebra): the agent hands them to felix, which installs them with tabby's route
// protocol. Graceful restart is on by default: Close ends the speaker without CEASE so
// peers keep this node's routes for its restart time, and Learned reports synced only once
// every peer has sent End-of-RIB (or was given up on: SyncTimeout, or its restart time if
// longer), until when the agent asks felix to keep the gateway routes of the previous run.
// Sessions between two tabby nodes are dialed from the lower address only and negotiate
// long-lived graceful restart, which GoBGP needs to come back from a restart in seconds
// without dropping the restarting peer's routes (see Peer.Passive and Peer.LongLived).
package bgp

// Package ipam owns tabby's IP address management: which workload and tunnel
// addresses are allocated, to whom, from which blocks of which IPPool, and the etcd
// keys under /tabby/ipam/v1/ that record it. It follows Calico's block model; the
// IPPools themselves are api resources in the datastore.
//
// # Model
//
// An IPPool is cut into blocks of its blockSize (default /26 for IPv4, /122 for IPv6).
// A node claims a block (its affinity) and allocates from its own blocks first; when
// they are full it claims a new block; when the pool has no unclaimed block (or the
// node reached maxBlocksPerHost, or autoAllocateBlocks is off) it borrows single
// addresses from other nodes' blocks, unless strictAffinity is on. The choice is the
// pure function nextStep; the etcd I/O around it is thin.
//
// Every allocation records a handle ("<CNI network>.<containerID>" for a workload,
// e.g. "ipip-tunnel-addr-<node>" for a tunnel) and attributes (AttrNamespace,
// AttrWorkload, AttrContainerID, AttrNode). A handle record counts the handle's
// addresses per block; it is written in the same etcd transaction as the block, so
// the two always agree, even when a process dies mid-way.
//
// # Storage
//
//	/tabby/ipam/v1/blocks/<addr>-<len>              block: Calico's AllocationBlock shape
//	/tabby/ipam/v1/affinities/<node>/<addr>-<len>   {"state": "pending"|"confirmed", "time": ...}
//	/tabby/ipam/v1/handles/<handle>                 {"handleID": ..., "block": {"<cidr>": count}}
//	/tabby/ipam/v1/config                           Config
//	/tabby/ipam/v1/gc-leader/...                    garbage collector election
//
// A block lists, per ordinal (address = block base + ordinal), the index of its
// attribute entry or null; the free ordinals in hand-out order (a released one goes to
// the end, so it is reused last); a sequence number that each allocation takes and
// increments (starting at the block's creation time in nanoseconds); and each
// allocation's sequence number. A release that names a sequence number (or a handle)
// other than the allocation's fails with ErrStaleRelease instead of freeing an address
// that was released and given to someone else meanwhile. Calico's "deleted" marker and
// "pendingDeletion" state are not needed: etcd deletes compare-and-swap, atomically
// with whatever else the transaction writes.
//
// # Writes
//
// Every write is an etcd transaction that compares the mod revision (or absence) of
// every key it read and depends on: a block allocation compares the block, the handle
// record and the IPPool's resource key (so no address lands in a pool deleted or
// changed meanwhile). A lost race re-reads and retries with jittered backoff, at most
// 100 times. Claiming a block takes two steps, as in Calico: the node writes its
// affinity as pending, then creates the block (a create fails if the block exists,
// which decides a race) and confirms the affinity in one transaction. The loser deletes
// its pending affinity and picks another block; a node finding the block already its
// own (another process on it won) uses it. Nodes start their search for a free block at
// a hash of their name, so nodes claiming at once mostly try different blocks.
//
// # Pool selection
//
// Candidates are the enabled pools of the address family that allow the use (Workload
// unless asked otherwise) and whose nodeSelector matches the node's labels, in name
// order. A node without a Node resource (tabby-cni may run before the agent registers
// it) matches only pools whose selector is all(). Pools named in the request (by name
// or CIDR) are used in the order given, whatever their nodeSelector, but must exist and
// be enabled. A dual-stack request is all or nothing: if IPv6 fails, the IPv4
// addresses are released. PoolInUseCheck, registered on the datastore client, refuses
// to delete a pool, or change its CIDR or block size, while addresses are allocated in
// blocks it would no longer hold; empty blocks of a deleted pool are left to GC.
//
// # Ownership, Check and garbage collection
//
// A workload's allocation (see WorkloadOf: a WorkloadHandle with namespace and container
// ID attributes) is alive while a WorkloadEndpoint in that namespace has that
// spec.containerID; any other allocation is alive while the Node named by its node
// attribute exists. Check reads everything at one revision and reports corrupt records,
// handle counts that disagree with blocks, inconsistent or stale affinities, overlapping
// blocks (addresses held twice), workload endpoint addresses not allocated to them,
// leaked allocations and blocks in no pool.
//
// GarbageCollector passes release allocations whose owner was seen gone for the grace
// period (DefaultGracePeriod, 15 minutes; the first-seen times live in the collector's
// memory, so a new leader starts its clocks over), remove the affinities of nodes gone
// that long (an empty block goes with them, a block still holding addresses loses its
// affinity) and pending affinities older than the grace period, and delete blocks that
// were empty, with an unchanged sequence number, at two consecutive passes. Before a
// release the owner is read again, and the release transaction requires it still
// absent and the allocation's sequence number unchanged. RunGarbageCollector elects
// one collector per cluster with an etcd lease (concurrency.Election on
// /tabby/ipam/v1/gc-leader); every write of the leader also compares its election key,
// so a leader that lost its lease cannot write.
package ipam

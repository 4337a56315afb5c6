// Package dns is tabby's cluster DNS, served by every node's agent (node-local, as
// NodeLocal DNSCache): the cluster zone answered from the agent's snapshot after the
// Kubernetes DNS-Based Service Discovery specification 1.1.0 (zone.go), a cache of
// positive and negative answers (cache.go), a forwarder to the host's upstreams
// (forward.go) and the UDP/TCP server that ties them together (server.go), in CoreDNS's
// manner: each part small, behind a small interface, tested on its own.
//
// The package never reads etcd and never writes the kernel: the agent hands it
// ClusterData built from each snapshot view, and felix puts its listen addresses on lo.
package dns

// Package ipam owns tabby's IP address management: which workload and tunnel
// addresses are allocated, to whom, from which blocks of which IPPool, and the etcd
// keys under /tabby/ipam/v1/ that record it.
package ipam

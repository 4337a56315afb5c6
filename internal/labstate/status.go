package labstate

import "net/netip"

// Status is what tabby-lab status -o json prints.
type Status struct {
	Name      string           `json:"name"`
	Ready     bool             `json:"ready"`
	StateDir  string           `json:"stateDir"`
	DataDir   string           `json:"dataDir"`
	Etcd      EtcdStatus       `json:"etcd"`
	Router    RouterStatus     `json:"router"`
	Subnets   []Subnet         `json:"subnets"`
	Nodes     []NodeStatus     `json:"nodes"`
	Hosts     []Host           `json:"hosts"`
	Workloads []WorkloadStatus `json:"workloads"`
	// Problems lists what is wrong: a process that died, a namespace that is missing.
	Problems []string `json:"problems"`
}

// EtcdStatus is the status of the lab's etcd.
type EtcdStatus struct {
	Endpoint string        `json:"endpoint"`
	Netns    string        `json:"netns"`
	Process  ProcessStatus `json:"process"` // the first member's
	// TLS says etcd serves only https to clients with the lab's certificates.
	TLS     bool               `json:"tls"`
	Members []EtcdMemberStatus `json:"members"`
}

// EtcdMemberStatus is the status of one member of the lab's etcd.
type EtcdMemberStatus struct {
	Name      string        `json:"name"`
	ClientURL string        `json:"clientURL"`
	PeerURL   string        `json:"peerURL"`
	Process   ProcessStatus `json:"process"`
}

// RouterStatus is the status of the lab's router namespace.
type RouterStatus struct {
	Netns     string         `json:"netns"`
	Addresses []netip.Prefix `json:"addresses"`
}

// ProcessStatus describes a process the lab started; LogTail is set once it has died.
type ProcessStatus struct {
	PID     int    `json:"pid"`
	Alive   bool   `json:"alive"`
	Log     string `json:"log"`
	LogTail string `json:"logTail,omitempty"`
}

// NodeStatus is a node and its agent's status.
type NodeStatus struct {
	Node
	Agent *ProcessStatus `json:"agent"` // nil when the lab runs no agents
}

// WorkloadStatus is a workload as status shows it.
type WorkloadStatus struct {
	FullName    string            `json:"name"` // NAMESPACE/NAME
	Namespace   string            `json:"namespace"`
	Pod         string            `json:"pod"`
	Node        string            `json:"node"`
	Netns       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	IfName      string            `json:"ifName"`
	IPs         []netip.Prefix    `json:"ips"`
	Labels      map[string]string `json:"labels,omitempty"`
}

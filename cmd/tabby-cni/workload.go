package main

import (
	"cmp"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/ipam"
)

// Orchestrators a workload endpoint records.
const (
	orchestratorK8s = "k8s" // CNI_ARGS named the pod
	orchestratorCNI = "cni" // anything else: the container ID names the workload
)

// defaultIfName is the interface a pod's endpoint is named after the pod alone for.
const defaultIfName = "eth0"

// defaultNamespace holds the endpoints of workloads CNI_ARGS names no namespace for.
const defaultNamespace = "default"

// Labels tabby-cni sets on every endpoint, as Calico's CNI plugin does.
const (
	labelNamespace    = "projectcalico.org/namespace"
	labelOrchestrator = "projectcalico.org/orchestrator"
	// labelServiceAccount is the pod's service account, which policy's serviceAccounts
	// matches read.
	labelServiceAccount = "projectcalico.org/serviceaccount"
)

// Labels a runtime may pass in args naming the pod, as CRI runtimes label pod sandboxes;
// CNI_ARGS' K8S_POD_NAMESPACE and K8S_POD_NAME take precedence.
const (
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodName      = "io.kubernetes.pod.name"
)

// annotationNetwork records on an endpoint the CNI network that attached it, so that GC
// for one network leaves the attachments of others alone.
const annotationNetwork = "tabby-cni/network"

// hostVethPrefix starts the host end of every workload veth.
const hostVethPrefix = "tabby"

// workloadID is who an attachment is for and every name derived from that: the
// WorkloadEndpoint, the host veth and the IPAM handle.
type workloadID struct {
	Network      string // the CNI network's name
	Node         string
	ContainerID  string
	IfName       string // CNI_IFNAME, the container's interface
	Namespace    string // the endpoint's namespace
	Pod          string // "" unless the orchestrator is k8s
	Workload     string // the pod's name, or the container ID
	Orchestrator string
	Labels       map[string]string // from the configuration's args
	// ServiceAccount is the pod's service account: K8S_POD_SERVICE_ACCOUNT in CNI_ARGS,
	// else the args' label projectcalico.org/serviceaccount ("" for none).
	ServiceAccount string

	Endpoint string // the WorkloadEndpoint's name
	HostVeth string
	Handle   string // the IPAM handle of the workload's addresses
}

// k8sArgs are the CNI_ARGS kubelet (and tabby-lab) pass.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
	K8S_POD_SERVICE_ACCOUNT    types.UnmarshallableString
}

// newWorkloadID derives a workload's identity from the configuration and the CNI_*
// variables. With K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS (or, failing those, the
// labels io.kubernetes.pod.namespace and io.kubernetes.pod.name in args) the workload is
// that pod (orchestrator k8s); without, it is the container, in namespace "default"
// (orchestrator cni).
func newWorkloadID(c *netConf, containerID, ifName, cniArgs string) (*workloadID, error) {
	var ka k8sArgs
	if err := types.LoadArgs(cniArgs, &ka); err != nil {
		return nil, errorf(types.ErrInvalidEnvironmentVariables, "CNI_ARGS %q: %v", cniArgs, err)
	}
	id := &workloadID{
		Network:      c.Name,
		Node:         c.NodeName,
		ContainerID:  containerID,
		IfName:       ifName,
		Namespace:    defaultNamespace,
		Workload:     containerID,
		Orchestrator: orchestratorCNI,
		Labels:       c.labels,
		// As Multus and CRI runtimes pass it; Calico's CNI plugin reads the pod instead.
		ServiceAccount: cmp.Or(string(ka.K8S_POD_SERVICE_ACCOUNT), c.labels[labelServiceAccount]),
	}
	ns, pod := string(ka.K8S_POD_NAMESPACE), string(ka.K8S_POD_NAME)
	switch {
	case ns != "" || pod != "":
		if ns == "" || pod == "" {
			return nil, errorf(types.ErrInvalidEnvironmentVariables,
				"CNI_ARGS %q: K8S_POD_NAMESPACE and K8S_POD_NAME go together; give both or neither", cniArgs)
		}
	case c.labels[labelPodNamespace] != "" || c.labels[labelPodName] != "":
		ns, pod = c.labels[labelPodNamespace], c.labels[labelPodName]
		if ns == "" || pod == "" {
			return nil, errorf(types.ErrInvalidNetworkConfig, "args labels %s and %s go together; give both or neither", labelPodNamespace, labelPodName)
		}
	}
	if pod != "" {
		id.Namespace, id.Pod, id.Workload, id.Orchestrator = ns, pod, pod, orchestratorK8s
	}
	id.Endpoint = endpointName(id.Workload, ifName)
	id.HostVeth = hostVethName(id.Namespace, id.Endpoint)
	id.Handle = ipam.WorkloadHandle(c.Name, containerID)
	return id, nil
}

// endpointName names a workload's endpoint for one interface: the workload's own name for
// eth0, "<workload>-<interface>" for any other. Such a name can collide with another
// pod's ("web-net1" on eth0 and "web" on net1); ADD refuses the second (error 103).
func endpointName(workload, ifName string) string {
	if ifName == defaultIfName {
		return workload
	}
	return workload + "-" + ifName
}

// hostVethName is the host end of an endpoint's veth: "tabby" and the first 10 hex digits
// of sha1("<namespace>.<endpoint>"), 15 bytes, the most Linux allows. For eth0 the
// endpoint is named after the workload, as DESIGN.md's "<namespace>.<workload>" says.
func hostVethName(namespace, endpoint string) string {
	sum := sha1.Sum([]byte(namespace + "." + endpoint))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:15-len(hostVethPrefix)]
}

// endpoint builds the WorkloadEndpoint of the workload with these addresses and the
// container interface's MAC.
func (id *workloadID) endpoint(addrs []netip.Addr, mac string) *api.WorkloadEndpoint {
	labels := maps.Clone(id.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[labelNamespace] = id.Namespace
	labels[labelOrchestrator] = id.Orchestrator
	if id.ServiceAccount != "" {
		labels[labelServiceAccount] = id.ServiceAccount
	}
	w := &api.WorkloadEndpoint{
		TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.VersionCalico},
		ObjectMeta: api.ObjectMeta{
			Name:        id.Endpoint,
			Namespace:   id.Namespace,
			Labels:      labels,
			Annotations: map[string]string{annotationNetwork: id.Network},
		},
		Spec: api.WorkloadEndpointSpec{
			Orchestrator:       id.Orchestrator,
			Workload:           id.Workload,
			Node:               id.Node,
			ContainerID:        id.ContainerID,
			Pod:                id.Pod,
			Endpoint:           id.IfName,
			Profiles:           []string{"kns." + id.Namespace},
			InterfaceName:      id.HostVeth,
			MAC:                mac,
			ServiceAccountName: id.ServiceAccount,
		},
	}
	for _, a := range addrs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return w
}

// ipamAttrs are the attributes recorded with the workload's addresses, which IPAM's check
// and garbage collector tie to the endpoint.
func (id *workloadID) ipamAttrs() map[string]string {
	return map[string]string{
		ipam.AttrNamespace:   id.Namespace,
		ipam.AttrWorkload:    id.Workload,
		ipam.AttrContainerID: id.ContainerID,
	}
}

// fieldSources says where each endpoint field tabby-cni fills comes from, so that a value
// the endpoint cannot hold is reported against what the user controls.
var fieldSources = []struct {
	field, source string
	code          uint
}{
	{"spec.serviceAccountName", "K8S_POD_SERVICE_ACCOUNT in CNI_ARGS or the label " + labelServiceAccount, types.ErrInvalidEnvironmentVariables},
	{"metadata.labels", "args.cni.labels or args.tabby.labels in the network configuration", types.ErrInvalidNetworkConfig},
	{"spec.node", "nodename in the network configuration (or the host name)", types.ErrInvalidNetworkConfig},
	{"metadata.namespace", "K8S_POD_NAMESPACE in CNI_ARGS", types.ErrInvalidEnvironmentVariables},
	{"spec.profiles", "K8S_POD_NAMESPACE in CNI_ARGS", types.ErrInvalidEnvironmentVariables},
	{"spec.containerID", "CNI_CONTAINERID", types.ErrInvalidEnvironmentVariables},
	{"spec.endpoint", "CNI_IFNAME", types.ErrInvalidEnvironmentVariables},
	{"spec.pod", "K8S_POD_NAME in CNI_ARGS", types.ErrInvalidEnvironmentVariables},
	{"spec.workload", "K8S_POD_NAME in CNI_ARGS or CNI_CONTAINERID", types.ErrInvalidEnvironmentVariables},
	{"metadata.name", "K8S_POD_NAME in CNI_ARGS (or CNI_CONTAINERID) and CNI_IFNAME", types.ErrInvalidEnvironmentVariables},
}

// validate checks, before anything is allocated or created, that the endpoint ADD will
// write is valid, naming the CNI variable or configuration field behind each problem:
// error 7 if it lies in the configuration, else 4.
func (id *workloadID) validate() error {
	err := api.Validate(id.endpoint(nil, ""))
	var fes api.FieldErrors
	if !errors.As(err, &fes) {
		return err
	}
	code := types.ErrInvalidEnvironmentVariables
	var msgs []string
	for _, fe := range fes {
		source := "tabby-cni"
		for _, s := range fieldSources {
			if fe.Field == s.field || strings.HasPrefix(fe.Field, s.field+".") || strings.HasPrefix(fe.Field, s.field+"[") {
				source = s.source
				if s.code == types.ErrInvalidNetworkConfig {
					code = s.code
				}
				break
			}
		}
		msgs = append(msgs, fmt.Sprintf("%s (from %s)", fe, source))
	}
	slices.Sort(msgs)
	return errorf(code, "workload endpoint %s/%s would be invalid: %s", id.Namespace, id.Endpoint, strings.Join(msgs, "; "))
}

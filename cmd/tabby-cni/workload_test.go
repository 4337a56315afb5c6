package main

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/ipam"
)

func testConf(t *testing.T, extra string) *netConf {
	t.Helper()
	c, err := parseConfig([]byte(`{"cniVersion": "1.1.0", "name": "tabby-net", "type": "tabby-cni", "nodename": "node1"`+extra+`}`), "h")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const testCID = "5b4f524a8c75ff368c69decd5ff68b44be8eacb63d52666d7634f806277a6667"

func TestWorkloadID(t *testing.T) {
	c := testConf(t, `, "args": {"cni": {"labels": [{"key": "app", "value": "web"}]}}`)
	id, err := newWorkloadID(c, testCID, "eth0", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID="+testCID+";K8S_POD_UID=x;OTHER=1")
	if err != nil {
		t.Fatal(err)
	}
	want := &workloadID{
		Network: "tabby-net", Node: "node1", ContainerID: testCID, IfName: "eth0",
		Namespace: "shop", Pod: "web-1", Workload: "web-1", Orchestrator: "k8s",
		Labels:   map[string]string{"app": "web"},
		Endpoint: "web-1", HostVeth: hostVethName("shop", "web-1"), Handle: "tabby-net." + testCID,
	}
	if !reflect.DeepEqual(id, want) {
		t.Errorf("k8s workload:\n got %+v\nwant %+v", id, want)
	}

	// Without pod arguments the container is the workload; another interface gets an
	// endpoint (and a host veth) of its own.
	id, err = newWorkloadID(c, "abc123", "net1", "")
	if err != nil {
		t.Fatal(err)
	}
	if id.Namespace != "default" || id.Pod != "" || id.Workload != "abc123" || id.Orchestrator != "cni" ||
		id.Endpoint != "abc123-net1" || id.HostVeth != hostVethName("default", "abc123-net1") {
		t.Errorf("cni workload: %+v", id)
	}

	// A runtime that names the pod only in the labels it passes.
	labelled := testConf(t, `, "args": {"cni": {"labels": [{"key": "io.kubernetes.pod.namespace", "value": "shop"},
		{"key": "io.kubernetes.pod.name", "value": "web-2"}]}}`)
	id, err = newWorkloadID(labelled, "abc123", "eth0", "IgnoreUnknown=1")
	if err != nil || id.Namespace != "shop" || id.Pod != "web-2" || id.Orchestrator != "k8s" || id.Endpoint != "web-2" {
		t.Errorf("pod from labels: %+v %v", id, err)
	}
	// CNI_ARGS win.
	if id, err := newWorkloadID(labelled, "abc123", "eth0", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"); err != nil || id.Namespace != "a" || id.Pod != "b" {
		t.Errorf("CNI_ARGS and labels: %+v %v", id, err)
	}
	half := testConf(t, `, "args": {"tabby": {"labels": [{"key": "io.kubernetes.pod.name", "value": "web-2"}]}}`)
	if _, err := newWorkloadID(half, "abc123", "eth0", ""); codeOf(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "go together") {
		t.Errorf("half the pod labels: %v", err)
	}

	for _, args := range []string{"K8S_POD_NAME=web", "K8S_POD_NAMESPACE=shop;IgnoreUnknown=1", "NOSUCHARG=1", "broken"} {
		_, err := newWorkloadID(c, "abc", "eth0", args)
		if err == nil || codeOf(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "CNI_ARGS") {
			t.Errorf("CNI_ARGS %q: %v", args, err)
		}
	}
}

func TestNames(t *testing.T) {
	// DESIGN.md: "tabby" and hex of sha1("<namespace>.<workload>"), cut to the 15 bytes
	// Linux allows (`printf default.web1 | sha1sum` starts 15104693972f).
	if got, want := hostVethName("default", "web1"), "tabby1510469397"; got != want {
		t.Errorf("hostVethName = %q, want %q", got, want)
	}
	if hostVethName("default", "web1") == hostVethName("default", "web2") {
		t.Error("different workloads share a host veth name")
	}
	if endpointName("web1", "eth0") != "web1" || endpointName("web1", "net1") != "web1-net1" {
		t.Error("endpointName")
	}
	// Whatever the network's name, ipam's check and garbage collector tie the handle to
	// the workload endpoint.
	attrs := map[string]string{ipam.AttrNamespace: "default", ipam.AttrContainerID: testCID}
	if _, cid, ok := ipam.WorkloadOf(ipam.WorkloadHandle("my-net", testCID), attrs); !ok || cid != testCID {
		t.Errorf("ipam.WorkloadOf does not recognise the handle of network my-net")
	}
}

func TestEndpoint(t *testing.T) {
	c := testConf(t, `, "args": {"tabby": {"labels": [{"key": "app", "value": "web"}]}}`)
	id, err := newWorkloadID(c, testCID, "eth0", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1")
	if err != nil {
		t.Fatal(err)
	}
	w := id.endpoint([]netip.Addr{netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("fd00::5")}, "02:00:00:00:00:01")
	if err := api.Validate(w); err != nil {
		t.Fatal(err)
	}
	want := api.WorkloadEndpointSpec{
		Orchestrator: "k8s", Workload: "web-1", Node: "node1", ContainerID: testCID, Pod: "web-1", Endpoint: "eth0",
		IPNetworks: []string{"10.244.0.5/32", "fd00::5/128"}, Profiles: []string{"kns.shop"},
		InterfaceName: id.HostVeth, MAC: "02:00:00:00:00:01",
	}
	if !reflect.DeepEqual(w.Spec, want) {
		t.Errorf("spec:\n got %+v\nwant %+v", w.Spec, want)
	}
	if w.Name != "web-1" || w.Namespace != "shop" || w.Annotations[annotationNetwork] != "tabby-net" ||
		!reflect.DeepEqual(w.Labels, map[string]string{"app": "web", labelNamespace: "shop", labelOrchestrator: "k8s"}) {
		t.Errorf("metadata: %+v", w.ObjectMeta)
	}
	if id.Labels[labelNamespace] != "" {
		t.Error("endpoint changed the workload's labels")
	}
	attrs := id.ipamAttrs()
	if attrs[ipam.AttrNamespace] != "shop" || attrs[ipam.AttrWorkload] != "web-1" || attrs[ipam.AttrContainerID] != testCID {
		t.Errorf("ipam attrs %v", attrs)
	}
}

// TestEndpointServiceAccount: the pod's service account, from K8S_POD_SERVICE_ACCOUNT
// (which wins) or the args' label, is the endpoint's serviceAccountName and its label
// projectcalico.org/serviceaccount, which policy's serviceAccounts matches read.
func TestEndpointServiceAccount(t *testing.T) {
	for _, c := range []struct{ extra, args, want string }{
		{``, "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_SERVICE_ACCOUNT=robot", "robot"},
		{`, "args": {"cni": {"labels": [{"key": "projectcalico.org/serviceaccount", "value": "clerk"}]}}`, "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1", "clerk"},
		{`, "args": {"cni": {"labels": [{"key": "projectcalico.org/serviceaccount", "value": "clerk"}]}}`, "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_SERVICE_ACCOUNT=robot", "robot"},
		{``, "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1", ""},
	} {
		id, err := newWorkloadID(testConf(t, c.extra), testCID, "eth0", c.args)
		if err != nil {
			t.Fatal(err)
		}
		w := id.endpoint([]netip.Addr{netip.MustParseAddr("10.244.0.5")}, "02:00:00:00:00:01")
		if err := api.Validate(w); err != nil {
			t.Fatal(err)
		}
		if label, ok := w.Labels[labelServiceAccount]; w.Spec.ServiceAccountName != c.want || label != c.want || ok != (c.want != "") {
			t.Errorf("%s %s: serviceAccountName %q, label %q (%v), want %q", c.extra, c.args, w.Spec.ServiceAccountName, label, ok, c.want)
		}
	}
	id, err := newWorkloadID(testConf(t, ""), testCID, "eth0", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_SERVICE_ACCOUNT=Bad_SA")
	if err != nil {
		t.Fatal(err)
	}
	if err := id.validate(); err == nil || !strings.Contains(err.Error(), "K8S_POD_SERVICE_ACCOUNT") {
		t.Errorf("invalid service account: %v", err)
	}
}

func TestWorkloadValidate(t *testing.T) {
	for _, c := range []struct {
		extra, cid, ifName, args string
		code                     uint
		want                     string
	}{
		{``, "abc", "eth0", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web", 0, ""},
		{`, "args": {"cni": {"labels": [{"key": "bad key", "value": "x"}]}}`, "abc", "eth0", "", types.ErrInvalidNetworkConfig, "args.cni.labels or args.tabby.labels"},
		{``, "abc_1", "eth0", "", types.ErrInvalidEnvironmentVariables, "(from CNI_CONTAINERID)"},
		{``, "abc", "Eth_0", "", types.ErrInvalidEnvironmentVariables, "(from CNI_IFNAME)"},
		{``, "abc", "eth0", "K8S_POD_NAMESPACE=Shop;K8S_POD_NAME=web", types.ErrInvalidEnvironmentVariables, "(from K8S_POD_NAMESPACE in CNI_ARGS)"},
		{``, "abc", "eth0", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=Web", types.ErrInvalidEnvironmentVariables, "(from K8S_POD_NAME in CNI_ARGS)"},
	} {
		conf := testConf(t, c.extra)
		id, err := newWorkloadID(conf, c.cid, c.ifName, c.args)
		if err != nil {
			t.Fatal(err)
		}
		err = id.validate()
		switch {
		case c.code == 0 && err != nil:
			t.Errorf("%s %s %s: %v", c.cid, c.ifName, c.args, err)
		case c.code != 0 && (err == nil || codeOf(err) != c.code || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s %s %s %s: got %v, want code %d containing %q", c.extra, c.cid, c.ifName, c.args, err, c.code, c.want)
		}
	}
	// A nodename that cannot be a node's is the configuration's fault.
	conf := testConf(t, "")
	conf.NodeName = "Node_1"
	id, _ := newWorkloadID(conf, "abc", "eth0", "")
	if err := id.validate(); codeOf(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "nodename") {
		t.Errorf("bad nodename: %v", err)
	}
}

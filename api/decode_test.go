package api

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// testdataFiles lists the realistic manifests under testdata/.
func testdataFiles(t testing.TB) []string {
	t.Helper()
	yamls, err1 := filepath.Glob("testdata/*.yaml")
	jsons, err2 := filepath.Glob("testdata/*.json")
	files := append(yamls, jsons...)
	if err1 != nil || err2 != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v %v", err1, err2)
	}
	return files
}

func decodeFile(t *testing.T, file string) []Resource {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Decode(data, file)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	for _, r := range rs {
		inDefaultNamespace(r)
	}
	return rs
}

// inDefaultNamespace does what tabbyctl does for a namespaced manifest that names no
// namespace: it puts it in "default".
func inDefaultNamespace(r Resource) {
	if k, err := KindOf(r); err == nil && k.Namespaced && r.GetObjectMeta().Namespace == "" {
		r.GetObjectMeta().Namespace = "default"
	}
}

// TestTestdataRoundTrip decodes every testdata manifest, validates it, and checks that
// marshalling (to JSON and to YAML) and decoding again gives the same resources.
func TestTestdataRoundTrip(t *testing.T) {
	seen := map[*Kind]bool{}
	for _, file := range testdataFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			rs := decodeFile(t, file)
			for _, r := range rs {
				k, err := KindOf(r)
				if err != nil {
					t.Fatal(err)
				}
				seen[k] = true
				if err := Validate(r); err != nil {
					t.Errorf("%s %s: %v", k.Name, r.GetObjectMeta().Name, err)
				}
				j, err := json.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				y, err := yaml.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				for format, data := range map[string][]byte{"json": j, "yaml": y} {
					again, err := Decode(data, format)
					if err != nil {
						t.Fatalf("%s round trip of %s: %v\n%s", format, r.GetObjectMeta().Name, err, data)
					}
					if len(again) != 1 || !reflect.DeepEqual(again[0], r) {
						t.Errorf("%s round trip of %s changed it:\n got %#v\nwant %#v", format, r.GetObjectMeta().Name, again, r)
					}
				}
			}
		})
	}
	for _, k := range Kinds() {
		if !seen[k] {
			t.Errorf("no testdata manifest of kind %s %s", k.APIVersion, k.Name)
		}
	}
}

func TestDecodeTestdataContents(t *testing.T) {
	rs := decodeFile(t, "testdata/bgp.yaml")
	node := rs[3].(*Node)
	if got := *node.Spec.BGP.ASNumber; got != 1<<16+10 {
		t.Errorf("dotted AS number 1.10 = %d", got)
	}
	peer := rs[6].(*BGPPeer)
	addr, port, err := peer.Spec.PeerAddrPort()
	if err != nil || addr.String() != "2001:db8:50:1::1" || port != 1179 {
		t.Errorf("PeerAddrPort = %v %d %v", addr, port, err)
	}
	if rt := rs[4].(*BGPPeer).Spec.RestartTime(); rt != 2*time.Minute {
		t.Errorf("RestartTime = %v", rt)
	}
	if rt := peer.Spec.RestartTime(); rt != DefaultMaxRestartTime {
		t.Errorf("default RestartTime = %v", rt)
	}
	p4, err := rs[2].(*Node).Spec.BGP.IPv4Prefix()
	if err != nil || p4.String() != "10.50.1.10/24" {
		t.Errorf("IPv4Prefix = %v %v", p4, err)
	}

	gnp := decodeFile(t, "testdata/policy.yaml")[1].(*GlobalNetworkPolicy)
	log := gnp.Spec.Ingress[2]
	if *log.Protocol != "6" || !log.Protocol.SupportsPorts() {
		t.Errorf("protocol 6 = %q", *log.Protocol)
	}
	if want := []Port{{PortName: "metrics"}, {MinPort: 9100, MaxPort: 9110}}; !reflect.DeepEqual(log.Destination.Ports, want) {
		t.Errorf("ports = %#v", log.Destination.Ports)
	}
	if *gnp.Spec.Ingress[3].NotProtocol != ProtocolSCTP {
		t.Errorf("sctp not canonicalised: %q", *gnp.Spec.Ingress[3].NotProtocol)
	}

	wep := decodeFile(t, "testdata/workloadendpoint.yaml")[0].(*WorkloadEndpoint)
	addrs, err := wep.Spec.Addrs()
	if err != nil || len(addrs) != 2 || addrs[1].String() != "fd00:10:244:0:1::7" {
		t.Errorf("Addrs = %v %v", addrs, err)
	}

	svc := decodeFile(t, "testdata/service.yaml")[1].(*Service)
	cips, err := svc.ClusterAddrs()
	if err != nil || len(cips) != 2 {
		t.Errorf("ClusterAddrs = %v %v", cips, err)
	}
	if tp := svc.Spec.Ports[0].TargetPort; !tp.IsString() || tp.StrVal != "http" {
		t.Errorf("targetPort = %#v", tp)
	}

	rs = decodeFile(t, "testdata/service.yaml")
	slice := rs[len(rs)-2].(*EndpointSlice)
	if slice.ServiceName() != "frontend" || slice.AddressType != AddressTypeIPv4 || len(slice.Endpoints) != 3 {
		t.Errorf("slice = %+v", slice)
	}
	for i, want := range [][3]bool{{true, true, false}, {false, true, true}, {true, true, false}} {
		c := slice.Endpoints[i].Conditions
		if got := [3]bool{c.IsReady(), c.IsServing(), c.IsTerminating()}; got != want {
			t.Errorf("endpoints[%d] ready, serving, terminating = %v, want %v", i, got, want)
		}
	}
	if p := slice.Ports[1]; p.Protocol != PortProtocolTCP || p.Port != 8443 {
		t.Errorf("ports[1] = %+v, want TCP by default", p)
	}

	set := decodeFile(t, "testdata/policy.yaml")[5].(*GlobalNetworkSet)
	if ps, err := set.Spec.Prefixes(); err != nil || len(ps) != 3 || ps[2].Bits() != 48 {
		t.Errorf("Prefixes = %v %v", ps, err)
	}
}

func TestDecodeDocuments(t *testing.T) {
	pool := func(name, cidr string) string {
		return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: " + name + "\nspec:\n  cidr: " + cidr + "\n"
	}
	tests := []struct {
		name  string
		input string
		want  []string // names, in order
	}{
		{"single", pool("a", "10.0.0.0/16"), []string{"a"}},
		{"separated", pool("a", "10.0.0.0/16") + "---\n" + pool("b", "10.1.0.0/16"), []string{"a", "b"}},
		{"leading separator and comments", "# pools\n---\n" + pool("a", "10.0.0.0/16") + "--- # next\n" + pool("b", "10.1.0.0/16"), []string{"a", "b"}},
		{"empty documents skipped", "---\n---\n\n---\n# nothing\n---\n" + pool("a", "10.0.0.0/16") + "---\n", []string{"a"}},
		{"CRLF", strings.ReplaceAll(pool("a", "10.0.0.0/16")+"---\n"+pool("b", "10.1.0.0/16"), "\n", "\r\n"), []string{"a", "b"}},
		{"document end marker", pool("a", "10.0.0.0/16") + "...\n", []string{"a"}},
		{"empty input", "", nil},
		{"json object", `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"j"},"spec":{"cidr":"10.2.0.0/16"}}`, []string{"j"}},
		{"yaml list", "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(pool("a", "10.0.0.0/16"), "\n", "\n  ") + "\n- " + strings.ReplaceAll(pool("b", "10.1.0.0/16"), "\n", "\n  "), []string{"a", "b"}},
		{"empty list", "apiVersion: v1\nkind: List\nitems: []\n", nil},
		{"typed list", "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- metadata: {name: a}\n  spec: {cidr: 10.0.0.0/16}\n", []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode([]byte(tt.input), "in.yaml")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range rs {
				names = append(names, r.GetObjectMeta().Name)
			}
			if !reflect.DeepEqual(names, tt.want) {
				t.Errorf("names = %q, want %q", names, tt.want)
			}
		})
	}
}

// decodeErrorCases are manifests Decode must reject, with its exact message. They also
// seed FuzzDecode.
var decodeErrorCases = []struct {
	name  string
	input string
	want  string
}{
	{"unknown field in second document",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-a}\nspec: {cidr: 10.0.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool-b\nspec:\n  cidrr: 10.1.0.0/16\n",
		`examples/pools.yaml: document 2 (IPPool "pool-b"): unknown field "spec.cidrr"`},
	{"unknown field deep in a rule",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: Allow\n    source:\n      selectorr: a == 'b'\n",
		`examples/pools.yaml: document 1 (GlobalNetworkPolicy "p"): unknown field "spec.ingress[0].source.selectorr"`},
	{"field names are case-sensitive",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {CIDR: 10.0.0.0/16}\n",
		`examples/pools.yaml: document 1 (IPPool "p"): unknown field "spec.CIDR"`},
	{"every unknown field is reported",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p, generation: 3}\nspec: {cidr: 10.0.0.0/16, ipip: {enabled: true}}\n",
		`examples/pools.yaml: document 1 (IPPool "p"): unknown field "metadata.generation"` + "\n" +
			`examples/pools.yaml: document 1 (IPPool "p"): unknown field "spec.ipip"`},
	{"wrong type",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, blockSize: x}\n",
		`examples/pools.yaml: document 1 (IPPool "p"): spec.blockSize: expected integer, got string "x"`},
	{"infinity, which JSON cannot hold",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {order: .inf, selector: all()}\n",
		`examples/pools.yaml: document 1 (GlobalNetworkPolicy "p"): spec.order: expected a finite number, got .inf`},
	{"every non-number, in a list",
		"apiVersion: v1\nkind: List\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: p}\n  spec: {order: -.inf, ingress: [{action: Allow, protocol: TCP, destination: {ports: [.nan]}}]}\n",
		`examples/pools.yaml: document 1 (List): items[0].spec.ingress[0].destination.ports[0]: expected a finite number, got .nan` + "\n" +
			`examples/pools.yaml: document 1 (List): items[0].spec.order: expected a finite number, got -.inf`},
	{"fraction for an integer",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, blockSize: 26.5}\n",
		`examples/pools.yaml: document 1 (IPPool "p"): spec.blockSize: expected integer, got number 26.5`},
	{"a Calico FelixConfiguration field tabby does not implement",
		"apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: true, vxlanMTU: 1400, vxlanMtu: 1}\n",
		`examples/pools.yaml: document 1 (FelixConfiguration "default"): spec.bpfEnabled: not implemented: tabby does not implement this field of Calico's FelixConfigurationSpec` + "\n" +
			`examples/pools.yaml: document 1 (FelixConfiguration "default"): unknown field "spec.vxlanMtu"`},
	{"integer out of range",
		"apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {listenPort: 70000}\n",
		`examples/pools.yaml: document 1 (BGPConfiguration "default"): spec.listenPort: 70000 is out of range 0-65535`},
	{"negative unsigned",
		"apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {listenPort: -1}\n",
		`examples/pools.yaml: document 1 (BGPConfiguration "default"): spec.listenPort: expected non-negative integer, got number -1`},
	{"number for a string label",
		"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: node1, labels: {rack: 1}}\n",
		`examples/pools.yaml: document 1 (Node "node1"): metadata.labels.rack: expected string, got number 1`},
	{"object for a string",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: {ip: 10.0.0.0}}\n",
		`examples/pools.yaml: document 1 (IPPool "p"): spec.cidr: expected string, got object`},
	{"scalar for a list",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s}\nspec: {nets: 10.0.0.0/8}\n",
		`examples/pools.yaml: document 1 (GlobalNetworkSet "s"): spec.nets: expected array, got string "10.0.0.0/8"`},
	{"bad port value",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [80, true]}\n",
		`examples/pools.yaml: document 1 (GlobalNetworkPolicy "p"): spec.ingress[0].destination.ports[1]: expected a port number 0-65535, a range "first:last" or a port name, got bool true`},
	{"port number too big",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: [\"80:70000\"]}\n",
		`examples/pools.yaml: document 1 (GlobalNetworkPolicy "p"): spec.ingress[0].destination.ports[0]: port "70000" is not a number 0-65535`},
	{"protocol number too big",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: Allow\n    protocol: 300\n",
		`examples/pools.yaml: document 1 (GlobalNetworkPolicy "p"): spec.ingress[0].protocol: expected a protocol name or a number 0-255, got number 300`},
	{"bad AS number",
		"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 1.70000}\n",
		`examples/pools.yaml: document 1 (BGPPeer "p"): spec.asNumber: expected an AS number 1-4294967295, got number 1.7`},
	{"bad dotted AS number",
		"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: \"1.70000\"}\n",
		`examples/pools.yaml: document 1 (BGPPeer "p"): spec.asNumber: "1.70000" is not an AS number (a number 1-4294967295 or dotted notation like "1.10")`},
	{"bad duration",
		"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 10.0.0.1, asNumber: 65000, maxRestartTime: soon}\n",
		`examples/pools.yaml: document 1 (BGPPeer "p"): spec.maxRestartTime: expected a duration string such as "120s", got "soon"`},
	{"target port as a float",
		"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80, targetPort: 80.5}]\n",
		`examples/pools.yaml: document 1 (Service "s"): spec.ports[0].targetPort: expected an integer or a port name, got number 80.5`},
	{"missing kind",
		"apiVersion: projectcalico.org/v3\nmetadata: {name: p}\n",
		`examples/pools.yaml: document 1: missing "kind"`},
	{"missing apiVersion",
		"kind: IPPool\nmetadata: {name: p}\n",
		`examples/pools.yaml: document 1: missing "apiVersion"`},
	{"kind of the wrong type",
		"apiVersion: v1\nkind: 7\n",
		`examples/pools.yaml: document 1: kind: expected string, got number 7`},
	{"kind tabby does not implement",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n",
		`examples/pools.yaml: document 1 (Pod "web"): kind "Pod" (apiVersion "v1") is not a resource tabby implements`},
	{"wrong apiVersion",
		"apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata: {name: p}\n",
		`examples/pools.yaml: document 1 (IPPool "p"): kind IPPool: apiVersion "crd.projectcalico.org/v1" not supported (use projectcalico.org/v3)`},
	{"not an object",
		"- a\n- b\n",
		`examples/pools.yaml: document 1: expected a resource (an object with apiVersion and kind), got array`},
	{"YAML syntax error, with the line in the file",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n   labels: x\n",
		`examples/pools.yaml: document 2: invalid YAML: line 9: mapping values are not allowed in this context`},
	{"duplicate key",
		"apiVersion: v1\nkind: Namespace\nkind: Namespace\n",
		`examples/pools.yaml: document 1: invalid YAML: line 3: key "kind" already set in map`},
	{"errors in two documents",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: a, label: {}}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\nspec: {finalizer: [x]}\n",
		`examples/pools.yaml: document 1 (Namespace "a"): unknown field "metadata.label"` + "\n" +
			`examples/pools.yaml: document 3 (Namespace "b"): unknown field "spec.finalizer"`},
	{"error in a List item",
		"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: b}\n  spec: {cidrr: 10.0.0.0/8}\n",
		`examples/pools.yaml: document 1 (IPPool "b"): unknown field "items[1].spec.cidrr"`},
	{"List item without kind",
		"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  metadata: {name: a}\n",
		`examples/pools.yaml: document 1: missing "items[0].kind"`},
	{"List with unknown field",
		"apiVersion: v1\nkind: List\nitemz: []\n",
		`examples/pools.yaml: document 1 (List): unknown field "itemz"`},
	{"typed List with another kind",
		"apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: Node\n  metadata: {name: node1}\n",
		`examples/pools.yaml: document 1 (Node "node1"): items[0].kind: projectcalico.org/v3 Node in a IPPoolList`},
	{"unknown field in a Kubernetes kind",
		"apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec:\n  ports: [{port: 80, appProtocol: http}]\n",
		`examples/pools.yaml: document 1 (Service "s"): unknown field "spec.ports[0].appProtocol"`},
	{"unusual label keys are bracketed in paths",
		"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels: {app.kubernetes.io/name: [x]}\n",
		`examples/pools.yaml: document 1 (Namespace "a"): metadata.labels["app.kubernetes.io/name"]: expected string, got array`},
}

func TestDecodeErrors(t *testing.T) {
	for _, tt := range decodeErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode([]byte(tt.input), "examples/pools.yaml")
			if err == nil {
				t.Fatalf("no error; decoded %d resources", len(rs))
			}
			if rs != nil {
				t.Errorf("resources returned with an error: %v", rs)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestDecodeErrorFields(t *testing.T) {
	_, err := Decode([]byte(decodeErrorCases[0].input), "examples/pools.yaml")
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("%T is not a *DecodeError", err)
	}
	want := DecodeError{
		Source: "examples/pools.yaml", Document: 2, Kind: "IPPool", Name: "pool-b",
		Field: "spec.cidrr", Message: `unknown field "spec.cidrr"`,
	}
	if *de != want {
		t.Errorf("got %+v\nwant %+v", *de, want)
	}
	var des DecodeErrors
	if !errors.As(err, &des) || len(des) != 1 {
		t.Errorf("not DecodeErrors: %#v", err)
	}
}

func TestValueTypes(t *testing.T) {
	ports := []struct {
		in   string
		want Port
		out  string
	}{
		{`80`, Port{MinPort: 80, MaxPort: 80}, `80`},
		{`"80"`, Port{MinPort: 80, MaxPort: 80}, `80`},
		{`"80:90"`, Port{MinPort: 80, MaxPort: 90}, `"80:90"`},
		{`"http"`, Port{PortName: "http"}, `"http"`},
		{`"90:80"`, Port{MinPort: 90, MaxPort: 80}, `"90:80"`}, // Validate rejects it
	}
	for _, tt := range ports {
		var p Port
		if err := json.Unmarshal([]byte(tt.in), &p); err != nil || p != tt.want {
			t.Errorf("Port %s = %#v, %v", tt.in, p, err)
		}
		if out, _ := json.Marshal(p); string(out) != tt.out {
			t.Errorf("Port %s marshals to %s, want %s", tt.in, out, tt.out)
		}
	}
	protocols := []struct {
		in   string
		want Protocol
		out  string
		num  uint8
	}{
		{`"tcp"`, ProtocolTCP, `"TCP"`, 6},
		{`"icmpv6"`, ProtocolICMPv6, `"ICMPv6"`, 58},
		{`6`, "6", `6`, 6},
		{`"17"`, "17", `17`, 17},
		{`"gre"`, "gre", `"gre"`, 0},
	}
	for _, tt := range protocols {
		var p Protocol
		if err := json.Unmarshal([]byte(tt.in), &p); err != nil || p != tt.want {
			t.Errorf("Protocol %s = %q, %v", tt.in, p, err)
		}
		if out, _ := json.Marshal(p); string(out) != tt.out {
			t.Errorf("Protocol %s marshals to %s, want %s", tt.in, out, tt.out)
		}
		if n, _ := p.Number(); n != tt.num {
			t.Errorf("Protocol %s number %d, want %d", tt.in, n, tt.num)
		}
	}
	asns := map[string]ASNumber{`64512`: 64512, `"64512"`: 64512, `"1.10"`: 65546, `4294967295`: 4294967295}
	for in, want := range asns {
		var a ASNumber
		if err := json.Unmarshal([]byte(in), &a); err != nil || a != want {
			t.Errorf("ASNumber %s = %d, %v", in, a, err)
		}
	}
	for _, in := range []string{`4294967296`, `"65536.1"`, `-1`, `"x"`} {
		var a ASNumber
		if err := json.Unmarshal([]byte(in), &a); err == nil {
			t.Errorf("ASNumber %s accepted as %d", in, a)
		}
	}
	for in, out := range map[string]string{`8080`: `8080`, `"http"`: `"http"`, `"8080"`: `"8080"`} {
		var v IntOrString
		if err := json.Unmarshal([]byte(in), &v); err != nil {
			t.Error(err)
		}
		if got, _ := json.Marshal(v); string(got) != out {
			t.Errorf("IntOrString %s round trips to %s", in, got)
		}
	}
}

func TestLookupKind(t *testing.T) {
	names := map[string][]string{
		"ippools":               {"ippool", "ippools", "ipp", "ipps", "pool", "pools", "IPPool"},
		"nodes":                 {"node", "nodes", "no", "nos"},
		"bgpconfigurations":     {"bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"},
		"bgppeers":              {"bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"},
		"workloadendpoints":     {"workloadendpoint", "workloadendpoints", "wep", "weps"},
		"networkpolicies":       {"networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols", "NetworkPolicy"},
		"globalnetworkpolicies": {"globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"},
		"globalnetworksets":     {"globalnetworkset", "globalnetworksets"},
		"networksets":           {"networkset", "networksets", "netsets"},
		"profiles":              {"profile", "profiles", "pro", "pros"},
		"namespaces":            {"namespace", "namespaces", "ns"},
		"services":              {"service", "services", "svc"},
		"endpoints":             {"endpoints", "ep"},
		"endpointslices":        {"endpointslice", "endpointslices", "epslice", "EndpointSlice"},
		"k8snetworkpolicies":    {"k8snetworkpolicy", "k8snetworkpolicies", "knp"},
		"endpointhealths":       {"endpointhealth", "endpointhealths", "EndpointHealth"},
		"tiers":                 {"tier", "tiers", "Tier"},
		"hostendpoints":         {"hostendpoint", "hostendpoints", "hep", "heps", "HostEndpoint"},
		"bgpfilters":            {"bgpfilter", "bgpfilters", "BGPFilter"},
		"felixconfigurations":   {"felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs", "FelixConfiguration"},
	}
	if len(Kinds()) != len(names) {
		t.Errorf("%d kinds registered, want %d", len(Kinds()), len(names))
	}
	for plural, aliases := range names {
		for _, a := range aliases {
			if k, err := LookupKind(a); err != nil || k.Plural != plural {
				t.Errorf("LookupKind(%q) = %v, %v; want %s", a, k, err, plural)
			}
		}
	}
	namespaced := map[string]bool{"networkpolicies": true, "networksets": true, "workloadendpoints": true,
		"services": true, "endpoints": true, "endpointslices": true, "k8snetworkpolicies": true, "endpointhealths": true}
	for _, k := range Kinds() {
		if k.Namespaced != namespaced[k.Plural] {
			t.Errorf("%s: Namespaced = %v", k.Plural, k.Namespaced)
		}
		r := k.New()
		if got, err := KindOf(r); err != nil || got != k {
			t.Errorf("%s: KindOf(New()) = %v, %v", k.Plural, got, err)
		}
	}
	k, _ := LookupKind("knp")
	if got := k.Key("prod", "deny"); got != "k8snetworkpolicies/prod/deny" {
		t.Errorf("Key = %s", got)
	}
}

func TestServiceExternalAndLoadBalancerAddrs(t *testing.T) {
	svc := &Service{
		Spec: ServiceSpec{ExternalIPs: []string{"198.51.100.7", "::ffff:198.51.100.8", "bad", "2001:db8::7"}},
	}
	if got := svc.LoadBalancerAddrs(); got != nil {
		t.Errorf("LoadBalancerAddrs without status = %v, want none", got)
	}
	svc.Status = &ServiceStatus{LoadBalancer: LoadBalancerStatus{Ingress: []LoadBalancerIngress{
		{IP: "203.0.113.9"}, {Hostname: "lb.example"}, {IP: "203.0.113.1"},
	}}}
	ext := netip.MustParseAddr
	if got, want := svc.ExternalAddrs(), []netip.Addr{ext("198.51.100.7"), ext("198.51.100.8"), ext("2001:db8::7")}; !slices.Equal(got, want) {
		t.Errorf("ExternalAddrs = %v, want %v", got, want)
	}
	if got, want := svc.LoadBalancerAddrs(), []netip.Addr{ext("203.0.113.9"), ext("203.0.113.1")}; !slices.Equal(got, want) {
		t.Errorf("LoadBalancerAddrs = %v, want %v", got, want)
	}
}

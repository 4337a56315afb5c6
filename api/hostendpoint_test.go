package api

import (
	"strings"
	"testing"
)

func TestHostEndpointValidate(t *testing.T) {
	good := calico + "kind: HostEndpoint\nmetadata: {name: n1-eth0, labels: {role: etcd}}\nspec: {node: n1, interfaceName: eth0, expectedIPs: [10.0.0.1, \"fd00::1\"], profiles: [p]}\n"
	if err := Validate(decodeOne(t, good)); err != nil {
		t.Errorf("valid host endpoint: %v", err)
	}
	all := calico + "kind: HostEndpoint\nmetadata: {name: n1-auto-hep}\nspec: {node: n1, interfaceName: \"*\"}\n"
	if err := Validate(decodeOne(t, all)); err != nil {
		t.Errorf("interfaceName *: %v", err)
	}
	byAddr := calico + "kind: HostEndpoint\nmetadata: {name: n1-by-ip}\nspec: {node: n1, expectedIPs: [10.0.0.1]}\n"
	if err := Validate(decodeOne(t, byAddr)); err != nil {
		t.Errorf("expectedIPs without interfaceName (found by address, as Calico): %v", err)
	}
	for _, tt := range []struct{ name, spec, want string }{
		{"no node", "{interfaceName: eth0}", `spec.node: required`},
		{"no interface nor address", "{node: n1, profiles: [p]}", `spec.interfaceName: required when expectedIPs is empty`},
		{"bad interface", "{node: n1, interfaceName: eth0/1}", `spec.interfaceName: "eth0/1" is not a valid interface name`},
		{"long interface", "{node: n1, interfaceName: abcdefghijklmnop}", `spec.interfaceName: "abcdefghijklmnop" is not a valid interface name`},
		{"bad ip", "{node: n1, interfaceName: eth0, expectedIPs: [10.0.0.0/24]}", `spec.expectedIPs[0]: `},
		{"bad profile", "{node: n1, interfaceName: eth0, profiles: [Bad_P]}", `spec.profiles[0]: "Bad_P" is not a valid DNS-1123 subdomain`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(decodeOne(t, calico+"kind: HostEndpoint\nmetadata: {name: h}\nspec: "+tt.spec+"\n"))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want %q…", err, tt.want)
			}
		})
	}
	// A field tabby does not implement is an error naming it.
	if _, err := Decode([]byte(calico+"kind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, interfaceName: eth0, ports: [{name: x, port: 1}]}\n"), "hep.yaml"); err == nil || !strings.Contains(err.Error(), "spec.ports") {
		t.Errorf("ports: %v, want an error naming spec.ports", err)
	}
}

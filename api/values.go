package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// This file holds the value types that accept more than one JSON shape (a number or a
// string), as Calico's numorstring package and Kubernetes' intstr do. Their UnmarshalJSON
// rejects only what cannot be stored at all; range and format checks are Validate's, so
// that every problem of a resource is reported at once.

// describeJSON names a raw JSON value for an error message: `string "x"`, `number 1.5`.
func describeJSON(b []byte) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "invalid JSON"
	}
	return describeValue(v)
}

// Protocol is an IP protocol, by name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite; any case
// is accepted and stored in Calico's spelling) or by number ("6" or 6 in YAML, stored as
// the decimal string).
type Protocol string

// Protocol names Calico accepts, with their IANA numbers.
const (
	ProtocolTCP     Protocol = "TCP"
	ProtocolUDP     Protocol = "UDP"
	ProtocolICMP    Protocol = "ICMP"
	ProtocolICMPv6  Protocol = "ICMPv6"
	ProtocolSCTP    Protocol = "SCTP"
	ProtocolUDPLite Protocol = "UDPLite"
)

var protocolNames = []Protocol{ProtocolTCP, ProtocolUDP, ProtocolICMP, ProtocolICMPv6, ProtocolSCTP, ProtocolUDPLite}

var protocolNumbers = map[Protocol]uint8{
	ProtocolTCP: 6, ProtocolUDP: 17, ProtocolICMP: 1, ProtocolICMPv6: 58, ProtocolSCTP: 132, ProtocolUDPLite: 136,
}

// ParseProtocol canonicalises a protocol name's case; numbers and unknown names are kept
// as given (Validate reports the unknown ones).
func ParseProtocol(s string) Protocol {
	for _, n := range protocolNames {
		if strings.EqualFold(s, string(n)) {
			return n
		}
	}
	return Protocol(s)
}

// Number returns the protocol's IANA number; false for an unknown name.
func (p Protocol) Number() (uint8, bool) {
	if n, ok := protocolNumbers[p]; ok {
		return n, true
	}
	n, err := strconv.ParseUint(string(p), 10, 8)
	return uint8(n), err == nil
}

// SupportsPorts says whether rules with this protocol may match ports: TCP, UDP and SCTP.
func (p Protocol) SupportsPorts() bool {
	n, _ := p.Number()
	return n == 6 || n == 17 || n == 132
}

// UnmarshalJSON accepts a name or a number 0-255.
func (p *Protocol) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*p = ParseProtocol(s)
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 8)
	if err != nil {
		return fmt.Errorf("expected a protocol name or a number 0-255, got %s", describeJSON(b))
	}
	*p = Protocol(strconv.FormatUint(n, 10))
	return nil
}

// MarshalJSON writes a numbered protocol as a number, as Calico does.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if _, isName := protocolNumbers[p]; !isName {
		if n, ok := p.Number(); ok {
			return json.Marshal(n)
		}
	}
	return json.Marshal(string(p))
}

// Port is a policy rule's port match: one port (MinPort == MaxPort), an inclusive range
// written "80:90", or a named port (PortName set, MinPort and MaxPort 0).
type Port struct {
	MinPort  uint16
	MaxPort  uint16
	PortName string
}

var portRangeRE = regexp.MustCompile(`^(\d+):(\d+)$`)

// String renders the port as it is written in manifests: "80", "80:90" or "http".
func (p Port) String() string {
	switch {
	case p.PortName != "":
		return p.PortName
	case p.MinPort == p.MaxPort:
		return strconv.Itoa(int(p.MinPort))
	}
	return fmt.Sprintf("%d:%d", p.MinPort, p.MaxPort)
}

// UnmarshalJSON accepts 80, "80", "80:90" or a name.
func (p *Port) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		n, err := strconv.ParseUint(string(b), 10, 16)
		if err != nil {
			return fmt.Errorf("expected a port number 0-65535, a range \"first:last\" or a port name, got %s", describeJSON(b))
		}
		*p = Port{MinPort: uint16(n), MaxPort: uint16(n)}
		return nil
	}
	parsePort := func(d string) (uint16, error) {
		n, err := strconv.ParseUint(d, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("port %q is not a number 0-65535", d)
		}
		return uint16(n), nil
	}
	if m := portRangeRE.FindStringSubmatch(s); m != nil {
		lo, err := parsePort(m[1])
		if err != nil {
			return err
		}
		hi, err := parsePort(m[2])
		if err != nil {
			return err
		}
		*p = Port{MinPort: lo, MaxPort: hi}
		return nil
	}
	if s != "" && strings.Trim(s, "0123456789") == "" {
		n, err := parsePort(s)
		if err != nil {
			return err
		}
		*p = Port{MinPort: n, MaxPort: n}
		return nil
	}
	*p = Port{PortName: s}
	return nil
}

// MarshalJSON writes a single port as a number and a range or name as a string.
func (p Port) MarshalJSON() ([]byte, error) {
	if p.PortName == "" && p.MinPort == p.MaxPort {
		return json.Marshal(p.MinPort)
	}
	return json.Marshal(p.String())
}

// ASNumber is a BGP autonomous system number. Manifests may write it as a number, a
// decimal string or in dotted notation ("1.10" is 1<<16 + 10), as Calico accepts.
type ASNumber uint32

// ParseASNumber parses the decimal or dotted form.
func ParseASNumber(s string) (ASNumber, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return ASNumber(n), nil
	}
	hi, lo, ok := strings.Cut(s, ".")
	if ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 == nil && err2 == nil {
			return ASNumber(h<<16 | l), nil
		}
	}
	return 0, fmt.Errorf("%q is not an AS number (a number 1-4294967295 or dotted notation like \"1.10\")", s)
}

// UnmarshalJSON accepts a number, a decimal string or a dotted string.
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		n, err := strconv.ParseUint(string(b), 10, 32)
		if err != nil {
			return fmt.Errorf("expected an AS number 1-4294967295, got %s", describeJSON(b))
		}
		*a = ASNumber(n)
		return nil
	}
	n, err := ParseASNumber(s)
	if err != nil {
		return err
	}
	*a = n
	return nil
}

// String is the decimal form.
func (a ASNumber) String() string { return strconv.FormatUint(uint64(a), 10) }

// IntOrString is a Kubernetes port reference: a number, or the name of a container port.
type IntOrString struct {
	IntVal int32
	StrVal string // non-empty for a name; IntVal is then 0
}

// IsString says whether the value is a name.
func (v IntOrString) IsString() bool { return v.StrVal != "" }

// String renders the number or the name.
func (v IntOrString) String() string {
	if v.IsString() {
		return v.StrVal
	}
	return strconv.Itoa(int(v.IntVal))
}

// UnmarshalJSON accepts an integer or a string; a string stays a name even when it is
// all digits, as in Kubernetes.
func (v *IntOrString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*v = IntOrString{StrVal: s}
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 32)
	if err != nil {
		return fmt.Errorf("expected an integer or a port name, got %s", describeJSON(b))
	}
	*v = IntOrString{IntVal: int32(n)}
	return nil
}

// MarshalJSON writes the number or the name.
func (v IntOrString) MarshalJSON() ([]byte, error) {
	if v.IsString() {
		return json.Marshal(v.StrVal)
	}
	return json.Marshal(v.IntVal)
}

// Duration is a Go duration string in manifests ("120s", "2m"), as Kubernetes'
// metav1.Duration.
type Duration struct {
	time.Duration
}

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected a duration string such as \"120s\", got %s", describeJSON(b))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("expected a duration string such as \"120s\", got %q", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

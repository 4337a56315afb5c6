package dns

import (
	mdns "github.com/miekg/dns"

	"net/netip"
	"time"
)

// ClusterData is what the cluster zone answers from: every Service with its addresses,
// ports and (for headless Services) endpoints. The agent builds a new one from each
// snapshot view that changed Services or their endpoints; the zone never changes one it
// was given.
type ClusterData struct {
	Services []Service
	// Namespaces are the cluster's namespaces: "<namespace>.svc.<zone>" exists (NODATA)
	// for each, with Services or not, as CoreDNS answers; another is NXDOMAIN.
	Namespaces []string
}

// Service is one Service as DNS sees it.
type Service struct {
	Namespace, Name string
	// ClusterIPs are the Service's virtual addresses (IPv4 and/or IPv6); none for a
	// headless Service or one whose address is not allocated yet.
	ClusterIPs []netip.Addr
	// Headless is set for clusterIP: None: names resolve to the ready endpoints.
	Headless bool
	// ExternalName, when set, makes the Service a CNAME to that name.
	ExternalName string
	Ports        []Port
	// Endpoints are the Service's endpoints; the zone uses them for headless Services
	// (A/AAAA, SRV, per-endpoint hostnames) and for PTR of endpoint addresses.
	Endpoints []Endpoint
}

// Port is a Service port. SRV records exist for named ports.
type Port struct {
	Name     string
	Protocol string // "TCP", "UDP" or "SCTP"
	Port     uint16
}

// Endpoint is one endpoint of a Service.
type Endpoint struct {
	Addrs []netip.Addr
	// Hostname, when set, gives the endpoint a name of its own:
	// <hostname>.<service>.<namespace>.svc.<zone>.
	Hostname string
	Ready    bool
	// Ports are the endpoint's ports by Service port name (a headless Service's SRV
	// records point at them).
	Ports map[string]uint16
}

// Metrics receives the server's counts; the agent implements it over its Prometheus
// registry. A nil Metrics in Config counts nothing.
type Metrics interface {
	// Query counts one answered query by type ("A", "SRV") and rcode ("NOERROR", "NXDOMAIN").
	Query(qtype, rcode string)
	// Cache counts one cache lookup.
	Cache(hit bool)
	// Upstream records one forwarded query's latency and error.
	Upstream(d time.Duration, err error)
}

// Authority answers the names it is authoritative for: the cluster zone (and the reverse
// names of the cluster's addresses). Answer returns ok false for a name it does not own,
// which the server then answers from the cache or the upstreams.
type Authority interface {
	Answer(req *mdns.Msg) (resp *mdns.Msg, ok bool)
}

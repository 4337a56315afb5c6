package api

import (
	"strconv"
	"strings"
	"time"
)

// The annotations that give a Service a health check of its endpoints (tabby's own,
// beyond kube-proxy): every node probes its own endpoints of the Service and the proxies
// of every node leave out those that fail.
const (
	// AnnotationHealthCheck is "tcp" (a connection to the endpoint's target port of the
	// Service's first port) or "http:/path" (a GET of path there; 2xx and 3xx pass).
	AnnotationHealthCheck = "tabby.io/health-check"
	// AnnotationHealthCheckInterval is the time between two probes of one endpoint, a Go
	// duration (default DefaultHealthCheckInterval).
	AnnotationHealthCheckInterval = "tabby.io/health-check-interval"
	// AnnotationHealthCheckThreshold is how many probes in a row must fail to take an
	// endpoint out, and pass to bring it back (default DefaultHealthCheckThreshold).
	AnnotationHealthCheckThreshold = "tabby.io/health-check-threshold"
)

// Health check defaults and limits.
const (
	DefaultHealthCheckInterval  = 2 * time.Second
	DefaultHealthCheckThreshold = 2
	minHealthCheckInterval      = 100 * time.Millisecond
	maxHealthCheckInterval      = time.Hour
	maxHealthCheckThreshold     = 100
	// maxHealthCheckTimeout bounds one probe: it fails when the endpoint has not
	// answered within its interval or this, whichever is shorter.
	maxHealthCheckTimeout = time.Second
)

// HealthCheck is a Service's health check, read from its annotations.
type HealthCheck struct {
	// Path is the HTTP path to GET; "" makes it a TCP connect.
	Path      string
	Interval  time.Duration
	Threshold int
}

// Timeout bounds one probe: the interval, at most one second.
func (h HealthCheck) Timeout() time.Duration { return min(h.Interval, maxHealthCheckTimeout) }

// String is the check as the annotation writes it: "tcp" or "http:/path".
func (h HealthCheck) String() string {
	if h.Path == "" {
		return "tcp"
	}
	return "http:" + h.Path
}

// HealthCheck reads the Service's health check annotations: nil without
// tabby.io/health-check, an error naming the annotation and value at fault.
func (s *Service) HealthCheck() (*HealthCheck, error) {
	var errs FieldErrors
	hc := s.healthCheck(&errs)
	if len(errs) > 0 {
		return nil, errs
	}
	return hc, nil
}

func (s *Service) healthCheck(errs *FieldErrors) *HealthCheck {
	a := s.Annotations
	field := func(k string) string { return mapPath("metadata.annotations", k) }
	check, ok := a[AnnotationHealthCheck]
	if !ok {
		for _, k := range []string{AnnotationHealthCheckInterval, AnnotationHealthCheckThreshold} {
			if v, ok := a[k]; ok {
				errs.add(field(k), v, "only valid with %s", AnnotationHealthCheck)
			}
		}
		return nil
	}
	hc := &HealthCheck{Interval: DefaultHealthCheckInterval, Threshold: DefaultHealthCheckThreshold}
	n := len(*errs)
	switch path, isHTTP := strings.CutPrefix(check, "http:"); {
	case check == "tcp":
	case isHTTP && strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "//") && !strings.ContainsAny(path, " \t\r\n#"):
		hc.Path = path
	default:
		errs.add(field(AnnotationHealthCheck), check, "%q: want tcp or http:/path (an absolute path, no spaces or fragment)", check)
	}
	if v, ok := a[AnnotationHealthCheckInterval]; ok {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			errs.add(field(AnnotationHealthCheckInterval), v, "%q is not a duration (like 2s or 500ms)", v)
		case d < minHealthCheckInterval || d > maxHealthCheckInterval:
			errs.add(field(AnnotationHealthCheckInterval), v, "%q is out of range %s-%s", v, minHealthCheckInterval, maxHealthCheckInterval)
		default:
			hc.Interval = d
		}
	}
	if v, ok := a[AnnotationHealthCheckThreshold]; ok {
		t, err := strconv.Atoi(v)
		if err != nil || t < 1 || t > maxHealthCheckThreshold {
			errs.add(field(AnnotationHealthCheckThreshold), v, "%q: want a whole number of probes, 1-%d", v, maxHealthCheckThreshold)
		} else {
			hc.Threshold = t
		}
	}
	sp := &s.Spec
	switch {
	case sp.Type == ServiceTypeExternalName:
		errs.add(field(AnnotationHealthCheck), check, "not valid for type ExternalName: it has no endpoints")
	case len(sp.Selector) == 0:
		errs.add(field(AnnotationHealthCheck), check, "needs spec.selector: tabby probes the WorkloadEndpoints a selector picks")
	case len(sp.Ports) == 0:
		errs.add(field(AnnotationHealthCheck), check, "needs a port: the check probes the first port's targetPort")
	case sp.Ports[0].Protocol != "" && sp.Ports[0].Protocol != PortProtocolTCP:
		errs.add(field(AnnotationHealthCheck), check, "the check probes the first port's targetPort over TCP, but spec.ports[0] is %s", sp.Ports[0].Protocol)
	}
	if len(*errs) > n {
		return nil
	}
	return hc
}

// EndpointHealthName is the name of the EndpointHealth of the WorkloadEndpoint named
// workload behind the Service named service (both in the record's namespace). Service
// names are DNS-1035 labels, without dots, so the name reads back unambiguously.
func EndpointHealthName(service, workload string) string { return service + "." + workload }

// EndpointHealth records the health check result of one endpoint of a health-checked
// Service: the WorkloadEndpoint spec.workload behind the Service spec.service, both in
// the record's namespace, named EndpointHealthName(service, workload). The agent of
// spec.node (the endpoint's node, the only one that probes it) writes it when the
// result changes, under an etcd lease of its own: when that agent stops for good, its
// records go with the lease and the endpoints count as not probed (ready) again.
type EndpointHealth struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       EndpointHealthSpec `json:"spec"`
}

// EndpointHealthSpec is one endpoint's last health check result.
type EndpointHealthSpec struct {
	Service  string `json:"service"`
	Workload string `json:"workload"`
	Node     string `json:"node"`
	// Check is the check that gave the result, as the annotation writes it, with the
	// address probed: "tcp 10.65.0.2:8080", "http:/healthz 10.65.0.2:8080".
	Check string `json:"check"`
	// Passing: the last Threshold probes passed (or the first one did); false: the last
	// Threshold failed.
	Passing bool `json:"passing"`
	// Since is when the result last changed.
	Since time.Time `json:"since"`
	// Reason is why the last probe failed ("" when passing).
	Reason string `json:"reason,omitempty"`
}

// VersionTabby is the API version of tabby's own kinds.
const VersionTabby = "tabby.io/v1"

func init() {
	register(&Kind{
		Name: "EndpointHealth", APIVersion: VersionTabby, Plural: "endpointhealths", Singular: "endpointhealth",
		Namespaced: true,
		New: func() Resource {
			return &EndpointHealth{TypeMeta: TypeMeta{Kind: "EndpointHealth", APIVersion: VersionTabby}}
		},
	})
}

func (h *EndpointHealth) validate(errs *FieldErrors) {
	sp := &h.Spec
	checkDNS1035Label(errs, "spec.service", sp.Service)
	checkSubdomain(errs, "spec.workload", sp.Workload)
	checkSubdomain(errs, "spec.node", sp.Node)
	if want := EndpointHealthName(sp.Service, sp.Workload); h.Name != want {
		errs.add("metadata.name", h.Name, "must be %q: <spec.service>.<spec.workload>", want)
	}
	if !sp.Passing && sp.Reason == "" {
		errs.add("spec.reason", "", "required when the check is not passing")
	}
	if sp.Check == "" {
		errs.add("spec.check", "", "required")
	}
}

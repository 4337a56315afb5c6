package api

import (
	"testing"
	"time"
)

// TestServiceHealthCheck reads the health check annotations: none, the defaults, and
// each setting; a bad value is an error naming the annotation.
func TestServiceHealthCheck(t *testing.T) {
	svc := func(a map[string]string) *Service {
		s := &Service{TypeMeta: TypeMeta{"Service", VersionCore}, ObjectMeta: ObjectMeta{Name: "web", Namespace: "shop", Annotations: a},
			Spec: ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []ServicePort{{Port: 80}}}}
		SetDefaults(s)
		return s
	}
	for _, tt := range []struct {
		annotations map[string]string
		want        *HealthCheck
		timeout     time.Duration
	}{
		{nil, nil, 0},
		{map[string]string{"tabby.io/health-check": "tcp"}, &HealthCheck{Interval: 2 * time.Second, Threshold: 2}, time.Second},
		{map[string]string{"tabby.io/health-check": "http:/healthz?full=1", "tabby.io/health-check-interval": "500ms",
			"tabby.io/health-check-threshold": "5"}, &HealthCheck{Path: "/healthz?full=1", Interval: 500 * time.Millisecond, Threshold: 5}, 500 * time.Millisecond},
	} {
		got, err := svc(tt.annotations).HealthCheck()
		switch {
		case err != nil:
			t.Errorf("%v: %v", tt.annotations, err)
		case (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want:
			t.Errorf("%v: HealthCheck = %+v, want %+v", tt.annotations, got, tt.want)
		case got != nil && got.Timeout() != tt.timeout:
			t.Errorf("%v: Timeout = %v, want %v", tt.annotations, got.Timeout(), tt.timeout)
		}
		if err := Validate(svc(tt.annotations)); err != nil {
			t.Errorf("%v: Validate = %v", tt.annotations, err)
		}
	}
	_, err := svc(map[string]string{"tabby.io/health-check": "http://x/"}).HealthCheck()
	if want := `metadata.annotations["tabby.io/health-check"]: "http://x/": want tcp or http:/path (an absolute path, no spaces or fragment)`; err == nil || err.Error() != want {
		t.Errorf("HealthCheck of http://x/ = %v, want %s", err, want)
	}
}

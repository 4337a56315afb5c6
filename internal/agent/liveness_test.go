package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLiveness: /liveness is 200 "live" while no subsystem is stalled, and 503 naming
// each stalled one otherwise.
func TestLiveness(t *testing.T) {
	var stalled []string
	st := &statusServer{node: "node1", role: RoleNode, ready: NewReadiness(), stalled: func() []string { return stalled }}
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		st.healthMux().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/liveness", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != http.StatusOK || body != "live\n" {
		t.Errorf("nothing stalled: %d %q", code, body)
	}
	stalled = []string{"agent.(*proxySubsystem).Run has not taken a change published 6m0s ago"}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "stalled:\nagent.(*proxySubsystem).Run has not taken a change published 6m0s ago") {
		t.Errorf("proxy stalled: %d %q", code, body)
	}
}

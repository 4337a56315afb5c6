package labtest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Curl fetches url inside node's namespace (curl in the lab node): the HTTP code and the body.
func Curl(t testing.TB, l *Lab, node, url string) (int, string) {
	t.Helper()
	out, stderr, code := l.Run("", "exec", node, "--", "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", url)
	if code != 0 {
		return 0, stderr
	}
	i := strings.LastIndexByte(out, '\n')
	status, err := strconv.Atoi(strings.TrimSpace(out[i+1:]))
	if err != nil {
		t.Fatalf("curl %s: no status in %q", url, out)
	}
	return status, out[:i]
}

// Metrics scrapes node's agent (its --metrics-listen, 127.0.0.1:9091) and returns its series as name{labels} -> value, where
// labels are k=v joined by commas in the order the exposition gives them.
func Metrics(t testing.TB, l *Lab, node string) map[string]float64 {
	t.Helper()
	code, body := Curl(t, l, node, "http://127.0.0.1:9091/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics on %s: %d %s", node, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, lp := range m.Label {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.Counter.GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.Gauge.GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// Dig runs dig in a lab namespace against the node-local DNS address (169.254.20.10) and returns its short
// answer ("" for none) or, with full, the whole output.
func Dig(t testing.TB, l *Lab, from string, args ...string) string {
	t.Helper()
	return DigAt(t, l, "169.254.20.10", from, args...)
}

// DigAt is Dig against server.
func DigAt(t testing.TB, l *Lab, server, from string, args ...string) string {
	t.Helper()
	out, stderr, code := l.Run("", append([]string{"exec", from, "--", "dig", "@" + server, "+time=2", "+tries=1"}, args...)...)
	if code != 0 {
		return fmt.Sprintf("dig failed (exit %d): %s%s", code, out, stderr)
	}
	return strings.TrimSpace(out)
}

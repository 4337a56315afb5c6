package selector

import "testing"

// benchLabels is a typical pod's label set.
var benchLabels = map[string]string{
	"app":                            "web",
	"tier":                           "frontend",
	"env":                            "prod",
	"version":                        "v1.2.3",
	"projectcalico.org/namespace":    "default",
	"projectcalico.org/orchestrator": "k8s",
	"pod-template-hash":              "5d8f7c9b4",
	"team":                           "t07",
}

var benchSink bool

func benchEvaluate(b *testing.B, s string, want bool) {
	sel := MustParse(s)
	if sel.Evaluate(benchLabels) != want {
		b.Fatalf("%q: got %v, want %v", s, !want, want)
	}
	b.ReportAllocs()
	for b.Loop() {
		benchSink = sel.Evaluate(benchLabels)
	}
}

func BenchmarkEvaluateEqual(b *testing.B) {
	benchEvaluate(b, `app == "web"`, true)
}

func BenchmarkEvaluateIn10(b *testing.B) {
	benchEvaluate(b, `team in {"t00", "t01", "t02", "t03", "t04", "t05", "t06", "t07", "t08", "t09"}`, true)
}

func BenchmarkEvaluateCompound(b *testing.B) {
	benchEvaluate(b, `app == "web" && tier in {"frontend", "backend"} && has(projectcalico.org/namespace) && env != "dev" && version starts with "v1."`, true)
}

func BenchmarkEvaluateStartsWith(b *testing.B) {
	benchEvaluate(b, `version starts with "v1."`, true)
}

func BenchmarkEvaluateLabelsCompound(b *testing.B) {
	sel := MustParse(`app == "web" && tier in {"frontend", "backend"} && has(projectcalico.org/namespace) && env != "dev" && version starts with "v1."`)
	var src Labels = mapLabels(benchLabels)
	b.ReportAllocs()
	for b.Loop() {
		benchSink = sel.EvaluateLabels(src)
	}
}

func BenchmarkParse(b *testing.B) {
	const s = `app == "web" && tier in {"frontend", "backend"} && has(projectcalico.org/namespace) && env != "dev" && version starts with "v1."`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}

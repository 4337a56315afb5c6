package selector

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tabby-net/tabby/internal/testenv"
)

// The shared folder sits beside the repository: ../shared relative to the
// directory holding go.mod, both here and in CI.
func findConformanceDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's working directory")
		}
		dir = parent
	}
	conf := filepath.Join(dir, "..", "shared", "conformance", "calico-selectors")
	if fi, err := os.Stat(conf); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("conformance data not found at %s", conf)
	}
	return conf, nil
}

func conformanceDir(t *testing.T) string {
	t.Helper()
	dir, err := findConformanceDir()
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("Calico conformance data: %v", err))
	}
	return dir
}

type row struct {
	line    int
	a, b, c string
}

// readRows reads a three-column TSV. Only the newline ends a line: leading
// and trailing spaces in a selector are part of the test. The last two
// tabs separate the columns, since the first column may itself hold tabs.
func readRows(tb testing.TB, dir, name string) []row {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	var rows []row
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		j := strings.LastIndexByte(line, '\t')
		if j < 0 {
			tb.Fatalf("%s:%d: expected 3 tab-separated columns: %q", name, i+1, line)
		}
		k := strings.LastIndexByte(line[:j], '\t')
		if k < 0 {
			tb.Fatalf("%s:%d: expected 3 tab-separated columns: %q", name, i+1, line)
		}
		rows = append(rows, row{line: i + 1, a: line[:k], b: line[k+1 : j], c: line[j+1:]})
	}
	if len(rows) == 0 {
		tb.Fatalf("%s: no rows", name)
	}
	return rows
}

func rowName(r row) string { return fmt.Sprintf("line%d:%s", r.line, r.a) }

type mapLabels map[string]string

func (m mapLabels) Get(k string) (string, bool) { v, ok := m[k]; return v, ok }

// checkRoundTrip asserts String() is a fixed point of Parse.
func checkRoundTrip(t *testing.T, sel *Selector) {
	t.Helper()
	s := sel.String()
	again, err := Parse(s)
	if err != nil {
		t.Fatalf("canonical form %q does not re-parse: %v", s, err)
	}
	if again.String() != s {
		t.Fatalf("canonical form %q re-parses to %q", s, again.String())
	}
}

func TestCalicoMatch(t *testing.T) {
	rows := readRows(t, conformanceDir(t), "match.tsv")
	passed := 0
	for _, r := range rows {
		ok := t.Run(rowName(r), func(t *testing.T) {
			var labels map[string]string
			if err := json.Unmarshal([]byte(r.b), &labels); err != nil {
				t.Fatalf("bad labels %q: %v", r.b, err)
			}
			if r.c != "true" && r.c != "false" {
				t.Fatalf("bad expectation %q", r.c)
			}
			want := r.c == "true"
			sel, err := Parse(r.a)
			if err != nil {
				t.Fatalf("Parse(%q): %v", r.a, err)
			}
			if got := sel.Evaluate(labels); got != want {
				t.Errorf("Parse(%q).Evaluate(%v) = %v, want %v (canonical %q)", r.a, labels, got, want, sel)
			}
			if got := sel.EvaluateLabels(mapLabels(labels)); got != want {
				t.Errorf("Parse(%q).EvaluateLabels(%v) = %v, want %v", r.a, labels, got, want)
			}
			checkRoundTrip(t, sel)
			if again := MustParse(sel.String()); again.Evaluate(labels) != want {
				t.Errorf("canonical %q evaluates differently", sel)
			}
		})
		if ok {
			passed++
		}
	}
	t.Logf("match.tsv: %d/%d rows passed", passed, len(rows))
}

func TestCalicoInvalid(t *testing.T) {
	rows := readRows(t, conformanceDir(t), "invalid.tsv")
	passed := 0
	for _, r := range rows {
		ok := t.Run(rowName(r), func(t *testing.T) {
			if r.b != "-" || r.c != "error" {
				t.Fatalf("unexpected row shape %q %q", r.b, r.c)
			}
			sel, err := Parse(r.a)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want an error", r.a, sel)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Pos < 0 || pe.Pos > len(r.a) || pe.Selector != r.a {
				t.Fatalf("Parse(%q) error %v is not a ParseError with a position inside the input", r.a, err)
			}
			t.Logf("%v", err)
		})
		if ok {
			passed++
		}
	}
	t.Logf("invalid.tsv: %d/%d rows passed", passed, len(rows))
}

func TestCalicoCanonical(t *testing.T) {
	rows := readRows(t, conformanceDir(t), "canonical.tsv")
	passed := 0
	for _, r := range rows {
		ok := t.Run(rowName(r), func(t *testing.T) {
			sel, err := Parse(r.a)
			if err != nil {
				t.Fatalf("Parse(%q): %v", r.a, err)
			}
			if got := sel.String(); got != r.b {
				t.Errorf("Parse(%q).String() = %q, want %q", r.a, got, r.b)
			}
			checkRoundTrip(t, sel)
		})
		if ok {
			passed++
		}
	}
	t.Logf("canonical.tsv: %d/%d rows passed", passed, len(rows))
}

package selector

import (
	"errors"
	"testing"
)

var fuzzSeeds = []string{
	``, ` `, "\t", `all()`, `global()`, `!global()`, `has(a)`, `!has(a)`, `!!has(a)`, `!(!has(a))`,
	`a == "b"`, `a != 'b'`, `a == "'"`, `a == '"'`, `a contains "x"`, `a starts with "x"`, `a ends with 'x'`,
	`a startswith "x"`, `a notin {}`, `a in {}`, `a in {"x",}`, `a in {'"', "'", "x", "x"}`,
	`a == "1" || b == "2" && c == "3"`, `(a == "1" || b == "2") && !(c == "3")`, `((has(a)))`,
	`(has(a) && has(b)) && has(c)`, `projectcalico.org/name == "ns" && k8s.io/x in {"a", "b"}`,
	`in in {"a"}`, `not in {"a"}`, `contains contains "contains"`, `has == "x" || has(has)`,
	`a == 'b' &&`, `a ==`, `(a == "b"`, `a == "b")`, `has( a )`, `all( )`, `"x`, `'x`, `a & b`, `a | b`,
	"a == \"b\"\n", "\xff", `a == "é"`,
}

// FuzzParse checks that Parse never panics, that String() is a fixed point
// of Parse, and that the canonical form means the same as the input.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	// The conformance rows seed it too when the shared folder is present;
	// fuzzing is still useful without them.
	if dir, err := findConformanceDir(); err == nil {
		for _, file := range []string{"match.tsv", "invalid.tsv", "canonical.tsv"} {
			for _, r := range readRows(f, dir, file) {
				f.Add(r.a)
				if file == "canonical.tsv" {
					f.Add(r.b)
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Pos < 0 || pe.Pos > len(s) || pe.Selector != s {
				t.Fatalf("Parse(%q): error without a valid position: %v", s, err)
			}
			return
		}
		canon := sel.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not re-parse: %v", s, canon, err)
		}
		if again.String() != canon {
			t.Fatalf("Parse(%q).String() = %q re-parses to %q", s, canon, again.String())
		}
		for _, labels := range fuzzLabels(sel) {
			want := sel.Evaluate(labels)
			if got := again.Evaluate(labels); got != want {
				t.Fatalf("Parse(%q) and its canonical %q disagree on %v: %v vs %v", s, canon, labels, want, got)
			}
			if got := sel.EvaluateLabels(mapLabels(labels)); got != want {
				t.Fatalf("Parse(%q): Evaluate and EvaluateLabels disagree on %v", s, labels)
			}
		}
	})
}

// fuzzLabels returns label sets built from the selector's own keys and
// values, so that comparisons actually hit, plus a few fixed ones.
func fuzzLabels(sel *Selector) []map[string]string {
	exact, other, empty := map[string]string{}, map[string]string{}, map[string]string{}
	var walk func(n *node)
	walk = func(n *node) {
		for i := range n.kids {
			walk(&n.kids[i])
		}
		if n.key == "" {
			return
		}
		v := n.val
		if len(n.set) > 0 {
			v = n.set[len(n.set)/2]
		}
		exact[n.key] = v
		other[n.key] = v + "x"
		empty[n.key] = ""
	}
	walk(&sel.root)
	return []map[string]string{
		nil, exact, other, empty,
		{"a": "b"}, {"a": "'", "b": `"`, "c": "d"},
	}
}

package selector

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
)

type m = map[string]string

type evalCase struct {
	labels m
	want   bool
}

func TestParseAndEvaluate(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		canon string
		evals []evalCase
	}{
		// Precedence: ! binds tightest, then &&, then ||.
		{"and binds tighter than or", `a == "1" || b == "2" && c == "3"`, `(a == "1" || (b == "2" && c == "3"))`,
			[]evalCase{{m{"a": "1"}, true}, {m{"b": "2"}, false}, {m{"b": "2", "c": "3"}, true}, {m{}, false}}},
		{"and binds tighter than or, and first", `b == "2" && c == "3" || a == "1"`, `((b == "2" && c == "3") || a == "1")`,
			[]evalCase{{m{"a": "1"}, true}, {m{"b": "2"}, false}, {m{"b": "2", "c": "3"}, true}}},
		{"not binds tighter than and", `!has(a) && has(b)`, `(!has(a) && has(b))`,
			[]evalCase{{m{"b": ""}, true}, {m{"a": "", "b": ""}, false}, {m{}, false}}},
		{"not applies to comparison", `!a == "1"`, `!a == "1"`,
			[]evalCase{{m{}, true}, {m{"a": "2"}, true}, {m{"a": "1"}, false}}},
		{"not of group", `!(a == "1" || b == "2")`, `!(a == "1" || b == "2")`,
			[]evalCase{{m{}, true}, {m{"a": "1"}, false}, {m{"b": "2"}, false}}},
		{"parens override precedence", `(a == "1" || b == "2") && c == "3"`, `((a == "1" || b == "2") && c == "3")`,
			[]evalCase{{m{"a": "1"}, false}, {m{"a": "1", "c": "3"}, true}, {m{"b": "2", "c": "3"}, true}}},
		{"long chains stay flat", `has(a) && has(b) && has(c) || has(d) || has(e)`, `((has(a) && has(b) && has(c)) || has(d) || has(e))`,
			[]evalCase{{m{"a": "", "b": "", "c": ""}, true}, {m{"a": "", "b": ""}, false}, {m{"e": ""}, true}}},

		// Parentheses.
		{"redundant parens vanish", `((( a == "1" )))`, `a == "1"`, []evalCase{{m{"a": "1"}, true}}},
		{"explicit grouping is kept", `(has(a) && has(b)) && has(c)`, `((has(a) && has(b)) && has(c))`,
			[]evalCase{{m{"a": "", "b": "", "c": ""}, true}, {m{"a": "", "b": ""}, false}}},
		{"nested groups", `(a == "1" && (b == "2" || (c == "3")))`, `(a == "1" && (b == "2" || c == "3"))`,
			[]evalCase{{m{"a": "1", "c": "3"}, true}, {m{"a": "1"}, false}}},
		{"double negation through parens cancels", `!(!has(a))`, `has(a)`, []evalCase{{m{"a": ""}, true}, {m{}, false}}},
		{"negation runs collapse", `!!!(has(a))`, `!has(a)`, []evalCase{{m{"a": ""}, false}, {m{}, true}}},
		{"negated group of negated group", `!(!(has(a) && has(b)))`, `(has(a) && has(b))`, []evalCase{{m{"a": "", "b": ""}, true}}},
		{"negated all", `!all()`, `!all()`, []evalCase{{m{}, false}}},

		// Keys.
		{"prefixed keys", `projectcalico.org/name == "x" && k8s.io/x != "y"`, `(projectcalico.org/name == "x" && k8s.io/x != "y")`,
			[]evalCase{{m{"projectcalico.org/name": "x"}, true}, {m{"projectcalico.org/name": "x", "k8s.io/x": "y"}, false}}},
		{"odd key characters", `a-b_c.d/E9 == "v"`, `a-b_c.d/E9 == "v"`, []evalCase{{m{"a-b_c.d/E9": "v"}, true}}},
		{"keys that look like punctuation", `-/. == "v" && has(./-)`, `(-/. == "v" && has(./-))`, []evalCase{{m{"-/.": "v", "./-": ""}, true}}},
		{"key named in", `in in {"a"}`, `in in {"a"}`, []evalCase{{m{"in": "a"}, true}, {m{"in": "b"}, false}}},
		{"key named not", `not in {"a"}`, `not in {"a"}`, []evalCase{{m{"not": "a"}, true}, {m{}, false}}},
		{"key named contains", `contains contains "x"`, `contains contains "x"`, []evalCase{{m{"contains": "axb"}, true}}},
		{"key named has", `has == "x" || has(has)`, `(has == "x" || has(has))`, []evalCase{{m{"has": "y"}, true}, {m{}, false}}},
		{"keys named all and global", `all == "x" && global != "y"`, `(all == "x" && global != "y")`, []evalCase{{m{"all": "x"}, true}}},

		// Quotes.
		{"single quotes print double", `a == 'b'`, `a == "b"`, []evalCase{{m{"a": "b"}, true}}},
		{"apostrophe inside double quotes", `a == "it's"`, `a == "it's"`, []evalCase{{m{"a": "it's"}, true}}},
		{"double quote inside single quotes", `a == 'say "hi"'`, `a == 'say "hi"'`, []evalCase{{m{"a": `say "hi"`}, true}}},
		{"mixed quotes in a set, sorted bytewise", `a in {'"', "'", 'x'}`, `a in {'"', "'", "x"}`, []evalCase{{m{"a": `"`}, true}, {m{"a": "'"}, true}}},
		{"empty value", `a == ""`, `a == ""`, []evalCase{{m{"a": ""}, true}, {m{}, false}}},
		{"value with spaces and symbols", `a == " &&|| ( ) {,} "`, `a == " &&|| ( ) {,} "`, []evalCase{{m{"a": " &&|| ( ) {,} "}, true}}},
		{"non-ASCII value", `a == "café"`, `a == "café"`, []evalCase{{m{"a": "café"}, true}}},

		// Whitespace: only space and tab, anywhere between tokens.
		{"no spaces at all", `a=="1"&&b!="2"||!has(c)`, `((a == "1" && b != "2") || !has(c))`, []evalCase{{m{"c": ""}, false}, {m{}, true}}},
		{"tabs and spaces", "\t a \t== \t'1'\t ", `a == "1"`, []evalCase{{m{"a": "1"}, true}}},
		{"spaces inside calls", `has(  a  ) && all(   ) || global( )`, `((has(a) && all()) || global())`, []evalCase{{m{}, true}}},
		{"starts with spacing", "a starts \t with 'x'", `a starts with "x"`, []evalCase{{m{"a": "xy"}, true}, {m{"a": "yx"}, false}}},
		{"startswith run together", `a startswith "x"`, `a starts with "x"`, []evalCase{{m{"a": "xy"}, true}}},
		{"endswith run together", `a endswith "x"`, `a ends with "x"`, []evalCase{{m{"a": "yx"}, true}}},
		{"notin run together", `a notin {"x"}`, `a not in {"x"}`, []evalCase{{m{"a": "x"}, false}, {m{}, true}}},
		{"operators run into values", `a contains'x'&&b in{'y'}`, `(a contains "x" && b in {"y"})`, []evalCase{{m{"a": "xx", "b": "y"}, true}}},
		{"whitespace only", " \t ", `all()`, []evalCase{{m{}, true}, {nil, true}}},

		// Sets.
		{"empty set never matches", `a in {}`, `a in {}`, []evalCase{{m{"a": ""}, false}, {m{}, false}}},
		{"not in empty set always matches", `a not in {}`, `a not in {}`, []evalCase{{m{"a": ""}, true}, {m{}, true}}},
		{"trailing comma", `a in {"x", }`, `a in {"x"}`, []evalCase{{m{"a": "x"}, true}}},
		{"duplicates and order", `a in {"c", "b", "c", "a"}`, `a in {"a", "b", "c"}`, []evalCase{{m{"a": "c"}, true}, {m{"a": "d"}, false}}},
		{"large set", `a in {"v09","v08","v07","v06","v05","v04","v03","v02","v01","v00","v10"}`,
			`a in {"v00", "v01", "v02", "v03", "v04", "v05", "v06", "v07", "v08", "v09", "v10"}`,
			[]evalCase{{m{"a": "v00"}, true}, {m{"a": "v10"}, true}, {m{"a": "v05"}, true}, {m{"a": "v11"}, false}, {m{"a": ""}, false}}},
		{"not in large set", `a not in {"1", "2", "3", "4", "5"}`, `a not in {"1", "2", "3", "4", "5"}`,
			[]evalCase{{m{"a": "5"}, false}, {m{"a": "1"}, false}, {m{"a": "6"}, true}, {m{}, true}}},
		{"empty string in set", `a in {""}`, `a in {""}`, []evalCase{{m{"a": ""}, true}, {m{}, false}}},

		// Absent labels.
		{"!= matches absent", `a != "x"`, `a != "x"`, []evalCase{{m{}, true}, {nil, true}, {m{"a": "x"}, false}}},
		{"contains needs presence", `a contains ""`, `a contains ""`, []evalCase{{m{}, false}, {m{"a": ""}, true}}},
		{"starts with empty needs presence", `a starts with ""`, `a starts with ""`, []evalCase{{m{}, false}, {m{"a": "q"}, true}}},
		{"ends with", `a ends with "z"`, `a ends with "z"`, []evalCase{{m{"a": "xyz"}, true}, {m{"a": "zy"}, false}}},

		// global() is true against labels, as in Calico.
		{"global", `global()`, `global()`, []evalCase{{m{}, true}, {m{"projectcalico.org/name": "ns"}, true}}},
		{"not global", `!global()`, `!global()`, []evalCase{{m{}, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if got := sel.String(); got != tc.canon {
				t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.canon)
			}
			checkRoundTrip(t, sel)
			again := MustParse(sel.String())
			for _, e := range tc.evals {
				if got := sel.Evaluate(e.labels); got != e.want {
					t.Errorf("Parse(%q).Evaluate(%v) = %v, want %v", tc.in, e.labels, got, e.want)
				}
				if got := sel.EvaluateLabels(mapLabels(e.labels)); got != e.want {
					t.Errorf("Parse(%q).EvaluateLabels(%v) = %v, want %v", tc.in, e.labels, got, e.want)
				}
				if got := again.Evaluate(e.labels); got != e.want {
					t.Errorf("canonical %q .Evaluate(%v) = %v, want %v", sel, e.labels, got, e.want)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		pos  int
		want string // substring of the message
	}{
		{`a == 'b' &&`, 11, "expected expression, found end of input"},
		{`a == 'b' || `, 12, "expected expression, found end of input"},
		{`a == b`, 5, `expected a quoted string after '==', found label "b"`},
		{`a`, 1, `after label "a", found end of input`},
		{`a = "b"`, 2, "expected '=='"},
		{`a === "b"`, 4, "expected '==', found a single '='"},
		{`a & b`, 2, "expected '&&', found a single '&'"},
		{`a ~= b`, 2, `after label "a", found character '~'`},
		{`has(a) & has(b)`, 7, "expected '&&'"},
		{`has(a) | has(b)`, 7, "expected '||'"},
		{`a starts "x"`, 9, `expected "with" after "starts"`},
		{`a ends  "x"`, 8, `expected "with" after "ends"`},
		{`a not "x"`, 6, `expected "in" after "not"`},
		{`a like "x"`, 2, `after label "a", found "like"`},
		{`a in "x"`, 5, "expected '{' after 'in', found string"},
		{`a in {"x" "y"}`, 10, "expected ',' or '}' in set"},
		{`a in {,}`, 6, "expected a quoted string or '}' in set, found ','"},
		{`a in {"x"`, 9, "expected ',' or '}' in set, found end of input"},
		{`a in {x}`, 6, `found label "x"`},
		{`a == "b`, 5, "unterminated string: no closing double quote"},
		{`a == 'b"`, 5, "unterminated string: no closing single quote"},
		{`has()`, 4, "expected a label name in has(), found character ')'"},
		{`has(a b)`, 6, "expected ')' to close has("},
		{`has (a)`, 4, `after label "has", found '('`},
		{`all(x)`, 4, "expected ')' after all("},
		{`global(`, 7, "expected ')' after global(, found end of input"},
		{`(has(a)`, 7, "expected ')' to close '(' at position 0, found end of input"},
		{`has(a))`, 6, "unmatched ')'"},
		{`has(a) has(b)`, 7, "expected '&&', '||' or end of input, found 'has(b)'"},
		{`!`, 1, "expected expression, found end of input"},
		{`!= "a"`, 0, "expected expression, found '!='"},
		{`{}`, 0, "expected expression, found '{'"},
		{`a == "b" && é`, 12, "unexpected character 'é'"},
		{"a == \"b\" && \xff", 12, "unexpected byte 0xff"},
		{"a == \"b\"\n", 8, `unexpected character '\n'`}, // newline is not whitespace to Calico
		{`a in {"x"} == "y"`, 11, "expected '&&', '||' or end of input, found '=='"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			sel, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want error", tc.in, sel)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error %T is not a *ParseError", tc.in, err)
			}
			if pe.Pos != tc.pos || !strings.Contains(pe.Msg, tc.want) {
				t.Errorf("Parse(%q) = %v\nwant position %d and message containing %q", tc.in, err, tc.pos, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "selector "+strconv.Quote(tc.in)+": position ") {
				t.Errorf("error %q does not name the selector and position", err)
			}
		})
	}
}

func TestNestingLimit(t *testing.T) {
	deep := strings.Repeat("(", maxNesting) + "has(a)" + strings.Repeat(")", maxNesting)
	sel, err := Parse(deep)
	if err != nil {
		t.Fatalf("%d nested parens: %v", maxNesting, err)
	}
	if sel.String() != "has(a)" {
		t.Errorf("got %q", sel)
	}
	tooDeep := "(" + deep + ")"
	if _, err := Parse(tooDeep); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Errorf("%d nested parens: got %v, want a nesting error", maxNesting+1, err)
	}
}

func TestZeroAndNil(t *testing.T) {
	var zero Selector
	if !zero.Evaluate(nil) || zero.String() != "all()" {
		t.Errorf("zero Selector: Evaluate=%v String=%q, want all()", zero.Evaluate(nil), zero.String())
	}
	sel := MustParse(`a != "x"`)
	if !sel.EvaluateLabels(nil) || !sel.Evaluate(nil) {
		t.Error("nil labels should behave as no labels")
	}
	if MustParse(`has(a)`).EvaluateLabels(nil) {
		t.Error("has(a) matched nil Labels")
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Error("MustParse of an invalid selector did not panic")
		}
	}()
	MustParse("a ==")
}

// TestConcurrentEvaluate is for -race: a Selector is shared read-only.
func TestConcurrentEvaluate(t *testing.T) {
	sel := MustParse(`app in {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} && !has(x) || tier starts with "fr"`)
	labels := m{"app": "e", "tier": "front"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if !sel.Evaluate(labels) || sel.String() == "" {
					t.Error("wrong result")
					return
				}
			}
		}()
	}
	wg.Wait()
}

// pointerLabels is a non-map label source; a pointer so that converting it
// to Labels allocates nothing either.
type pointerLabels struct{ kv []string }

func (p *pointerLabels) Get(k string) (string, bool) {
	for i := 0; i+1 < len(p.kv); i += 2 {
		if p.kv[i] == k {
			return p.kv[i+1], true
		}
	}
	return "", false
}

func TestEvaluateAllocatesNothing(t *testing.T) {
	labels := m{"app": "web", "tier": "frontend", "env": "prod", "version": "v1.2.3",
		"projectcalico.org/namespace": "default", "k": "v09"}
	pl := &pointerLabels{kv: []string{"app", "web", "tier", "frontend", "env", "prod", "version", "v1.2.3"}}
	var src Labels = pl
	for _, s := range []string{
		``,
		`global()`,
		`app == "web"`,
		`app != "db"`,
		`k in {"v00", "v01", "v02", "v03", "v04", "v05", "v06", "v07", "v08", "v09"}`,
		`k not in {"a", "b"}`,
		`app == "web" && tier in {"frontend", "backend"} && has(projectcalico.org/namespace) && env != "dev" && version starts with "v1."`,
		`!(has(x) || app contains "e") || version ends with ".3"`,
	} {
		sel := MustParse(s)
		if n := testing.AllocsPerRun(100, func() { sel.Evaluate(labels) }); n != 0 {
			t.Errorf("Evaluate of %q: %v allocs per run, want 0", s, n)
		}
		if n := testing.AllocsPerRun(100, func() { sel.EvaluateLabels(src) }); n != 0 {
			t.Errorf("EvaluateLabels of %q: %v allocs per run, want 0", s, n)
		}
	}
}

package selector

import (
	"fmt"
	"slices"
)

// maxNesting bounds parenthesis depth so a hostile selector cannot exhaust
// the stack of the parser, evaluator or printer (Calico has no such limit;
// no hand-written selector comes near it).
const maxNesting = 1000

// ParseError is the error Parse returns: what is wrong and where.
type ParseError struct {
	Selector string // the whole input
	Pos      int    // byte offset into Selector; len(Selector) means end of input
	Msg      string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("selector %q: position %d: %s", e.Selector, e.Pos, e.Msg)
}

// Parse parses a Calico selector expression. "" or whitespace-only means all().
func Parse(s string) (*Selector, error) {
	p := parser{lx: lexer{src: s}}
	root, err := p.parseRoot()
	if err != nil {
		return nil, err
	}
	sel := &Selector{root: root}
	sel.str = root.canonical()
	return sel, nil
}

// MustParse is Parse for selectors known to be valid; it panics on error.
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

type parser struct {
	lx  lexer
	tok token // current token, not yet consumed
}

func (p *parser) advance() *ParseError {
	t, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) errorf(pos int, format string, args ...any) *ParseError {
	return p.lx.errAt(pos, format, args...)
}

func (p *parser) parseRoot() (node, *ParseError) {
	if err := p.advance(); err != nil {
		return node{}, err
	}
	if p.tok.kind == tokEOF {
		return node{op: opAll}, nil
	}
	n, err := p.parseOr(0)
	if err != nil {
		return node{}, err
	}
	switch p.tok.kind {
	case tokEOF:
		return n, nil
	case tokRParen:
		return node{}, p.errorf(p.tok.pos, "unmatched ')'")
	}
	return node{}, p.errorf(p.tok.pos, "expected '&&', '||' or end of input, found %s", p.tok)
}

// parseOr parses one or more &&-terms joined by ||. A single term is
// returned unwrapped, as Calico does, which decides where String() puts
// parentheses.
func (p *parser) parseOr(depth int) (node, *ParseError) {
	first, err := p.parseAnd(depth)
	if err != nil || p.tok.kind != tokOr {
		return first, err
	}
	kids := []node{first}
	for p.tok.kind == tokOr {
		if err := p.advance(); err != nil {
			return node{}, err
		}
		n, err := p.parseAnd(depth)
		if err != nil {
			return node{}, err
		}
		kids = append(kids, n)
	}
	return node{op: opOr, kids: slices.Clip(kids)}, nil
}

// parseAnd parses one or more unary terms joined by &&.
func (p *parser) parseAnd(depth int) (node, *ParseError) {
	first, err := p.parseUnary(depth)
	if err != nil || p.tok.kind != tokAnd {
		return first, err
	}
	kids := []node{first}
	for p.tok.kind == tokAnd {
		if err := p.advance(); err != nil {
			return node{}, err
		}
		n, err := p.parseUnary(depth)
		if err != nil {
			return node{}, err
		}
		kids = append(kids, n)
	}
	return node{op: opAnd, kids: slices.Clip(kids)}, nil
}

// parseUnary parses a term with any number of leading '!'.
func (p *parser) parseUnary(depth int) (node, *ParseError) {
	// Calico collapses a run of '!' into at most one negation.
	neg := false
	for p.tok.kind == tokNot {
		neg = !neg
		if err := p.advance(); err != nil {
			return node{}, err
		}
	}
	var n node
	switch p.tok.kind {
	case tokAll:
		n = node{op: opAll}
	case tokGlobal:
		n = node{op: opGlobal}
	case tokHas:
		n = node{op: opHas, key: p.tok.val}
	case tokLabel:
		var err *ParseError
		if n, err = p.parseComparison(); err != nil {
			return node{}, err
		}
		n.neg = neg
		return n, nil
	case tokLParen:
		open := p.tok.pos
		if depth >= maxNesting {
			return node{}, p.errorf(open, "parentheses nested more than %d deep", maxNesting)
		}
		if err := p.advance(); err != nil {
			return node{}, err
		}
		var err *ParseError
		if n, err = p.parseOr(depth + 1); err != nil {
			return node{}, err
		}
		if p.tok.kind != tokRParen {
			return node{}, p.errorf(p.tok.pos, "expected ')' to close '(' at position %d, found %s", open, p.tok)
		}
		// "!(!x)" becomes x rather than Calico's Not(Not(x)): Calico prints
		// that as "!!x", which re-parses to x, so its String() would not be
		// a fixed point. Same meaning, canonical either way.
		n.neg = n.neg != neg
		if err := p.advance(); err != nil {
			return node{}, err
		}
		return n, nil
	default:
		return node{}, p.errorf(p.tok.pos, "expected expression, found %s", p.tok)
	}
	n.neg = neg
	if err := p.advance(); err != nil {
		return node{}, err
	}
	return n, nil
}

var stringOps = [...]op{
	tokEq:         opEq,
	tokNe:         opNe,
	tokContains:   opContains,
	tokStartsWith: opStartsWith,
	tokEndsWith:   opEndsWith,
}

// parseComparison parses label <op> "value" and label [not] in {...}.
func (p *parser) parseComparison() (node, *ParseError) {
	key := p.tok.val
	if err := p.advance(); err != nil {
		return node{}, err
	}
	opTok := p.tok
	switch opTok.kind {
	case tokEq, tokNe, tokContains, tokStartsWith, tokEndsWith:
		if err := p.advance(); err != nil {
			return node{}, err
		}
		if p.tok.kind != tokString {
			return node{}, p.errorf(p.tok.pos, "expected a quoted string after %s, found %s", opTok, p.tok)
		}
		n := node{op: stringOps[opTok.kind], key: key, val: p.tok.val}
		return n, p.advance()
	case tokIn, tokNotIn:
		return p.parseSet(key, opTok)
	}
	return node{}, p.errorf(opTok.pos, "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label %q, found %s", key, opTok)
}

func (p *parser) parseSet(key string, opTok token) (node, *ParseError) {
	if err := p.advance(); err != nil {
		return node{}, err
	}
	if p.tok.kind != tokLBrace {
		return node{}, p.errorf(p.tok.pos, "expected '{' after %s, found %s", opTok, p.tok)
	}
	if err := p.advance(); err != nil {
		return node{}, err
	}
	var vals []string
	afterValue := false
	// Calico accepts a trailing comma: {"a",} is valid.
	for p.tok.kind == tokString {
		vals = append(vals, p.tok.val)
		if err := p.advance(); err != nil {
			return node{}, err
		}
		if p.tok.kind != tokComma {
			afterValue = true
			break
		}
		if err := p.advance(); err != nil {
			return node{}, err
		}
	}
	if p.tok.kind != tokRBrace {
		want := "a quoted string or '}'"
		if afterValue {
			want = "',' or '}'"
		}
		return node{}, p.errorf(p.tok.pos, "expected %s in set, found %s", want, p.tok)
	}
	// Sorted and de-duplicated: that is Calico's canonical form.
	slices.Sort(vals)
	vals = slices.Clip(slices.Compact(vals))
	n := node{op: opIn, key: key, set: vals}
	if opTok.kind == tokNotIn {
		n.op = opNotIn
	}
	n.indexSet()
	return n, p.advance()
}

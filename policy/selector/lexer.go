package selector

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokLabel
	tokString
	tokLBrace
	tokRBrace
	tokComma
	tokEq
	tokNe
	tokIn
	tokNotIn
	tokNot
	tokContains
	tokStartsWith
	tokEndsWith
	tokAll
	tokGlobal
	tokHas
	tokLParen
	tokRParen
	tokAnd
	tokOr
)

// tokText is how a token is named in error messages.
var tokText = [...]string{
	tokEOF:        "end of input",
	tokLBrace:     "'{'",
	tokRBrace:     "'}'",
	tokComma:      "','",
	tokEq:         "'=='",
	tokNe:         "'!='",
	tokIn:         "'in'",
	tokNotIn:      "'not in'",
	tokNot:        "'!'",
	tokContains:   "'contains'",
	tokStartsWith: "'starts with'",
	tokEndsWith:   "'ends with'",
	tokAll:        "'all()'",
	tokGlobal:     "'global()'",
	tokLParen:     "'('",
	tokRParen:     "')'",
	tokAnd:        "'&&'",
	tokOr:         "'||'",
}

type token struct {
	kind tokKind
	pos  int    // byte offset of the token's first character
	val  string // label name, has() label, or string literal contents
}

func (t token) String() string {
	switch t.kind {
	case tokLabel:
		return fmt.Sprintf("label %q", t.val)
	case tokString:
		return fmt.Sprintf("string %q", t.val)
	case tokHas:
		return fmt.Sprintf("'has(%s)'", t.val)
	}
	return tokText[t.kind]
}

// lexer produces tokens on demand. Like Calico's tokenizer it is context
// sensitive in exactly one way: right after a label it looks for a word
// operator (in, not in, contains, starts with, ends with) instead of another
// label, so labels may be named "in" or "contains".
type lexer struct {
	src       string
	pos       int
	last      tokKind
	lastLabel string // value of the last label token, for error messages
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func isKeyChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

func (l *lexer) skipSpace() {
	for l.pos < len(l.src) && isSpace(l.src[l.pos]) {
		l.pos++
	}
}

// keyAt returns the label key starting at byte offset i ("" if none).
func (l *lexer) keyAt(i int) string {
	j := i
	for j < len(l.src) && isKeyChar(l.src[j]) {
		j++
	}
	return l.src[i:j]
}

func (l *lexer) rest() string { return l.src[l.pos:] }

// next returns the next token, or an error naming its position.
func (l *lexer) next() (token, *ParseError) {
	t, err := l.scan()
	if err == nil {
		l.last = t.kind
		if t.kind == tokLabel {
			l.lastLabel = t.val
		}
	}
	return t, err
}

func (l *lexer) errAt(pos int, format string, args ...any) *ParseError {
	return &ParseError{Selector: l.src, Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

func (l *lexer) scan() (token, *ParseError) {
	l.skipSpace()
	start := l.pos
	tok := func(k tokKind, n int) (token, *ParseError) {
		l.pos += n
		return token{kind: k, pos: start}, nil
	}
	if l.pos >= len(l.src) {
		return token{kind: tokEOF, pos: start}, nil
	}
	switch c := l.src[l.pos]; c {
	case '(':
		return tok(tokLParen, 1)
	case ')':
		return tok(tokRParen, 1)
	case '{':
		return tok(tokLBrace, 1)
	case '}':
		return tok(tokRBrace, 1)
	case ',':
		return tok(tokComma, 1)
	case '"', '\'':
		end := strings.IndexByte(l.src[start+1:], c)
		if end < 0 {
			quote := "double quote (\")"
			if c == '\'' {
				quote = "single quote (')"
			}
			return token{}, l.errAt(start, "unterminated string: no closing %s", quote)
		}
		l.pos = start + 1 + end + 1
		return token{kind: tokString, pos: start, val: l.src[start+1 : start+1+end]}, nil
	case '=':
		if strings.HasPrefix(l.rest(), "==") {
			return tok(tokEq, 2)
		}
		return token{}, l.errAt(start, "expected '==', found a single '='")
	case '!':
		if strings.HasPrefix(l.rest(), "!=") {
			return tok(tokNe, 2)
		}
		return tok(tokNot, 1)
	case '&':
		if strings.HasPrefix(l.rest(), "&&") {
			return tok(tokAnd, 2)
		}
		return token{}, l.errAt(start, "expected '&&', found a single '&'")
	case '|':
		if strings.HasPrefix(l.rest(), "||") {
			return tok(tokOr, 2)
		}
		return token{}, l.errAt(start, "expected '||', found a single '|'")
	}
	if l.last == tokLabel {
		return l.scanOperator()
	}
	switch r := l.rest(); {
	case strings.HasPrefix(r, "has("):
		l.pos += len("has(")
		l.skipSpace()
		key := l.keyAt(l.pos)
		if key == "" {
			return token{}, l.errAt(l.pos, "expected a label name in has(), found %s", l.describeAt(l.pos))
		}
		l.pos += len(key)
		l.skipSpace()
		if l.pos >= len(l.src) || l.src[l.pos] != ')' {
			return token{}, l.errAt(l.pos, "expected ')' to close has(, found %s", l.describeAt(l.pos))
		}
		l.pos++
		return token{kind: tokHas, pos: start, val: key}, nil
	case strings.HasPrefix(r, "all("):
		return l.scanEmptyCall(start, tokAll, "all(")
	case strings.HasPrefix(r, "global("):
		return l.scanEmptyCall(start, tokGlobal, "global(")
	}
	if key := l.keyAt(l.pos); key != "" {
		l.pos += len(key)
		return token{kind: tokLabel, pos: start, val: key}, nil
	}
	return token{}, l.errAt(start, "unexpected %s", l.describeAt(start))
}

// scanEmptyCall finishes all( ) or global( ); only spaces may sit inside.
func (l *lexer) scanEmptyCall(start int, k tokKind, prefix string) (token, *ParseError) {
	l.pos += len(prefix)
	l.skipSpace()
	if l.pos >= len(l.src) || l.src[l.pos] != ')' {
		return token{}, l.errAt(l.pos, "expected ')' after %s, found %s", prefix, l.describeAt(l.pos))
	}
	l.pos++
	return token{kind: k, pos: start}, nil
}

// scanOperator reads the word operator that must follow a label. As in
// Calico these are prefix matches: "startswith" and "notin" are accepted.
func (l *lexer) scanOperator() (token, *ParseError) {
	start := l.pos
	r := l.rest()
	twoWords := func(first string, k tokKind) (token, *ParseError) {
		l.pos += len(first)
		l.skipSpace()
		second := "with"
		if k == tokNotIn {
			second = "in"
		}
		if !strings.HasPrefix(l.rest(), second) {
			return token{}, l.errAt(l.pos, "expected %q after %q, found %s", second, first, l.describeAt(l.pos))
		}
		l.pos += len(second)
		return token{kind: k, pos: start}, nil
	}
	switch {
	case strings.HasPrefix(r, "contains"):
		l.pos += len("contains")
		return token{kind: tokContains, pos: start}, nil
	case strings.HasPrefix(r, "starts"):
		return twoWords("starts", tokStartsWith)
	case strings.HasPrefix(r, "ends"):
		return twoWords("ends", tokEndsWith)
	case strings.HasPrefix(r, "not"):
		return twoWords("not", tokNotIn)
	case strings.HasPrefix(r, "in"):
		l.pos += len("in")
		return token{kind: tokIn, pos: start}, nil
	}
	return token{}, l.errAt(start, "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label %q, found %s", l.lastLabel, l.describeAt(start))
}

// describeAt names what sits at byte offset i, for error messages.
func (l *lexer) describeAt(i int) string {
	if i >= len(l.src) {
		return "end of input"
	}
	if key := l.keyAt(i); key != "" {
		return fmt.Sprintf("%q", key)
	}
	r, _ := utf8.DecodeRuneInString(l.src[i:])
	if r == utf8.RuneError {
		return fmt.Sprintf("byte %#02x", l.src[i])
	}
	return fmt.Sprintf("character %q", r)
}

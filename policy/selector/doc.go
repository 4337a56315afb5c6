// Package selector owns tabby's label selector language: Calico's selector
// syntax (as parsed by libcalico-go's lib/selector/parser), parsed once into an
// immutable Selector that evaluates against an endpoint's labels without
// allocating, and prints back in Calico's canonical form.
//
// Grammar, loosest binding first:
//
//	selector  = "" | or
//	or        = and { "||" and }
//	and       = unary { "&&" unary }
//	unary     = { "!" } primary
//	primary   = "all()" | "global()" | "has(" key ")" | "(" or ")"
//	          | key ( "==" | "!=" | "contains" | "starts with" | "ends with" ) string
//	          | key ( "in" | "not in" ) "{" [ string { "," string } [ "," ] ] "}"
//	key       = 1*( ALPHA | DIGIT | "_" | "." | "/" | "-" )
//	string    = "'" *(any byte but "'") "'" | `"` *(any byte but `"`) `"`
//
// Only space and tab separate tokens. There are no escapes inside strings.
// As in Calico, != and "not in" match when the label is absent, and global()
// evaluates to true against any label set: restricting it to non-namespaced
// resources is the job of whoever applies a namespaceSelector.
package selector

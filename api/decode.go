package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	yamlv2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// DecodeError is one problem with one document of a manifest.
type DecodeError struct {
	Source   string // the name the caller gave the input, such as a file name
	Document int    // 1-based position of the YAML document in the source
	Kind     string // the resource's kind, when known
	Name     string // the resource's metadata.name, when known
	Field    string // path of the offending field from the document root, when there is one
	Message  string // the complete description, naming Field: `unknown field "spec.cidrr"`
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source + ": ")
	}
	fmt.Fprintf(&b, "document %d", e.Document)
	switch {
	case e.Kind != "" && e.Name != "":
		fmt.Fprintf(&b, " (%s %q)", e.Kind, e.Name)
	case e.Kind != "":
		fmt.Fprintf(&b, " (%s)", e.Kind)
	}
	b.WriteString(": " + e.Message)
	return b.String()
}

// DecodeErrors is every problem Decode found, in document order.
type DecodeErrors []*DecodeError

func (e DecodeErrors) Error() string {
	msgs := make([]string, len(e))
	for i, de := range e {
		msgs[i] = de.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.As find a *DecodeError.
func (e DecodeErrors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, de := range e {
		errs[i] = de
	}
	return errs
}

// Decode parses a manifest: YAML documents separated by "---" lines (empty ones are
// skipped) or JSON, each a resource or a List of them ("kind: List", or "<Kind>List" as
// calicoctl writes, whose items may omit apiVersion and kind). Decoding is strict: an
// unknown field, a value of the wrong type or an unknown kind is an error naming the
// document and the field's full path. Decode applies SetDefaults but not Validate.
// On error it returns DecodeErrors listing the problems of every document.
func Decode(data []byte, source string) ([]Resource, error) {
	var (
		out  []Resource
		errs DecodeErrors
	)
	for _, doc := range splitDocuments(data) {
		d := docDecoder{source: source, doc: doc.index}
		d.decode(doc.text, doc.firstLine)
		out = append(out, d.resources...)
		errs = append(errs, d.errs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

type document struct {
	index     int // 1-based
	firstLine int // 1-based line of the document's first line in the source
	text      []byte
}

// splitDocuments cuts a YAML stream at "---" lines, as kubectl does: a separator line
// holds "---" and at most a comment. A blank stretch before the first separator is not
// counted as a document.
func splitDocuments(data []byte) []document {
	var (
		docs  []document
		start = 0
		line  = 1
		first = 1
	)
	cut := func(end, next, nextLine int) {
		docs = append(docs, document{index: len(docs) + 1, firstLine: first, text: data[start:end]})
		start, first = next, nextLine
	}
	for pos := 0; pos < len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		next := len(data)
		if end >= 0 {
			end += pos
			next = end + 1
		} else {
			end = len(data)
		}
		if isSeparator(data[pos:end]) {
			cut(pos, next, line+1)
		}
		pos = next
		line++
	}
	cut(len(data), len(data), line)
	if len(docs) > 1 && isBlank(docs[0].text) {
		docs = docs[1:]
		for i := range docs {
			docs[i].index = i + 1
		}
	}
	return docs
}

func isSeparator(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	rest = bytes.TrimSpace(rest)
	return ok && (len(rest) == 0 || rest[0] == '#')
}

// isBlank says whether a document holds only whitespace and comments.
func isBlank(text []byte) bool {
	for _, l := range bytes.Split(text, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) > 0 && l[0] != '#' {
			return false
		}
	}
	return true
}

// docDecoder decodes one document, collecting its resources and problems.
type docDecoder struct {
	source    string
	doc       int
	resources []Resource
	errs      DecodeErrors
}

func (d *docDecoder) fail(kind, name, field, format string, args ...any) {
	d.errs = append(d.errs, &DecodeError{
		Source: d.source, Document: d.doc, Kind: kind, Name: name, Field: field,
		Message: fmt.Sprintf(format, args...),
	})
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func (d *docDecoder) decode(text []byte, firstLine int) {
	j, err := yaml.YAMLToJSONStrict(text)
	if err != nil && d.nonFinite(text) {
		return
	}
	if err != nil {
		// Report lines of the source, not of the document.
		msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(m string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
			return "line " + strconv.Itoa(n+firstLine-1)
		})
		msg = strings.TrimPrefix(msg, "yaml: ")
		msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "unmarshal errors:\n", "")), " ")
		d.fail("", "", "", "invalid YAML: %s", msg)
		return
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		d.fail("", "", "", "invalid document: %v", err)
		return
	}
	if v == nil {
		return // an empty document
	}
	obj, ok := v.(map[string]any)
	if !ok {
		d.fail("", "", "", "expected a resource (an object with apiVersion and kind), got %s", describeValue(v))
		return
	}
	apiVersion, kind, ok := d.typeOf(obj, "")
	if !ok {
		return
	}
	if kind == "List" {
		d.decodeList(obj, "", "")
		return
	}
	if item, isList := strings.CutSuffix(kind, "List"); isList {
		if _, err := KindFor(apiVersion, item); err == nil {
			d.decodeList(obj, apiVersion, item)
			return
		}
	}
	d.decodeResource(obj, "", apiVersion, kind)
}

// nonFinite reports each .inf, -.inf or .nan in a document, which YAML has and JSON
// (tabby's storage) has not, by its field path; false if there is none.
func (d *docDecoder) nonFinite(text []byte) bool {
	var v any
	if yamlv2.Unmarshal(text, &v) != nil {
		return false
	}
	kind, name := "", ""
	if m, ok := v.(map[any]any); ok {
		kind, _ = m["kind"].(string)
		if md, ok := m["metadata"].(map[any]any); ok {
			name, _ = md["name"].(string)
		}
	}
	found := false
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case float64:
			if math.IsInf(v, 0) || math.IsNaN(v) {
				found = true
				yv := map[bool]string{true: ".inf", false: "-.inf"}[v > 0]
				if math.IsNaN(v) {
					yv = ".nan"
				}
				d.fail(kind, name, path, "%s: expected a finite number, got %s", path, yv)
			}
		case map[any]any:
			keys := make([]string, 0, len(v))
			byKey := make(map[string]any, len(v))
			for k, e := range v {
				ks := fmt.Sprint(k)
				keys = append(keys, ks)
				byKey[ks] = e
			}
			slices.Sort(keys)
			for _, k := range keys {
				walk(mapPath(path, k), byKey[k])
			}
		case []any:
			for i, e := range v {
				walk(path+"["+strconv.Itoa(i)+"]", e)
			}
		}
	}
	walk("", v)
	return found
}

// typeOf reads apiVersion and kind, reporting them missing or mistyped.
func (d *docDecoder) typeOf(obj map[string]any, path string) (apiVersion, kind string, ok bool) {
	name := nameOf(obj)
	get := func(key string) (string, bool) {
		f := mapPath(path, key)
		switch v := obj[key].(type) {
		case nil:
			d.fail("", name, f, "missing %q", f)
		case string:
			if v != "" {
				return v, true
			}
			d.fail("", name, f, "missing %q", f)
		default:
			d.fail("", name, f, "%s: expected string, got %s", f, describeValue(v))
		}
		return "", false
	}
	kind, kindOK := get("kind")
	apiVersion, versionOK := get("apiVersion")
	return apiVersion, kind, kindOK && versionOK
}

// nameOf returns metadata.name, for error messages, if it is there.
func nameOf(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	return name
}

// decodeList decodes the items of a List. itemVersion and itemKind are set for a typed
// list ("IPPoolList"), whose items may leave them out.
func (d *docDecoder) decodeList(obj map[string]any, itemVersion, itemKind string) {
	listKind := obj["kind"].(string)
	for _, k := range sortedKeys(obj) {
		switch k {
		case "apiVersion", "kind":
		case "metadata":
			// List metadata (resourceVersion, continue) describes a read, not the items.
			if _, ok := obj[k].(map[string]any); !ok && obj[k] != nil {
				d.fail(listKind, "", k, "metadata: expected object, got %s", describeValue(obj[k]))
			}
		case "items":
		default:
			d.fail(listKind, "", mapPath("", k), "unknown field %q", mapPath("", k))
		}
	}
	items, ok := obj["items"].([]any)
	if !ok {
		if obj["items"] != nil {
			d.fail(listKind, "", "items", "items: expected array, got %s", describeValue(obj["items"]))
		}
		return
	}
	for i, it := range items {
		path := index("items", i)
		item, ok := it.(map[string]any)
		if !ok {
			d.fail(listKind, "", path, "%s: expected a resource object, got %s", path, describeValue(it))
			continue
		}
		if itemKind != "" {
			if item["apiVersion"] == nil {
				item["apiVersion"] = itemVersion
			}
			if item["kind"] == nil {
				item["kind"] = itemKind
			}
		}
		apiVersion, kind, ok := d.typeOf(item, path)
		if !ok {
			continue
		}
		if itemKind != "" && (kind != itemKind || apiVersion != itemVersion) {
			d.fail(kind, nameOf(item), mapPath(path, "kind"), "%s: %s %s in a %s", mapPath(path, "kind"), apiVersion, kind, listKind)
			continue
		}
		if kind == "List" || strings.HasSuffix(kind, "List") {
			d.fail(kind, nameOf(item), mapPath(path, "kind"), "%s: lists cannot be nested", mapPath(path, "kind"))
			continue
		}
		d.decodeResource(item, path, apiVersion, kind)
	}
}

// decodeResource checks obj strictly against its kind's type, then decodes and defaults it.
func (d *docDecoder) decodeResource(obj map[string]any, path, apiVersion, kind string) {
	name := nameOf(obj)
	k, err := KindFor(apiVersion, kind)
	if err != nil {
		d.fail(kind, name, mapPath(path, "kind"), "%v", err)
		return
	}
	r := k.New()
	problems := checkStrict(path, obj, r)
	for _, p := range problems {
		d.fail(kind, name, p.field, "%s", p.message)
	}
	if len(problems) > 0 {
		return
	}
	j, err := json.Marshal(obj)
	if err == nil {
		err = json.Unmarshal(j, r)
	}
	if err != nil {
		d.fail(kind, name, path, "%v", err)
		return
	}
	SetDefaults(r)
	d.resources = append(d.resources, r)
}

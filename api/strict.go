package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// Strict checking walks a decoded JSON value (objects as map[string]any, numbers as
// json.Number) alongside the Go type it will be decoded into, and reports every field the
// type does not have and every value of the wrong JSON type, with its full path.
// encoding/json's DisallowUnknownFields stops at the first unknown field and names it
// without its path, and matches field names case-insensitively; this does neither.

// problem is one strict-checking failure; message is complete and names field.
type problem struct {
	field   string
	message string
}

type strictChecker struct {
	problems []problem
}

// checkStrict checks obj, found at path, against the type of r.
func checkStrict(path string, obj map[string]any, r Resource) []problem {
	var c strictChecker
	c.check(path, obj, reflect.TypeOf(r).Elem())
	return c.problems
}

func (c *strictChecker) fail(path, format string, args ...any) {
	c.problems = append(c.problems, problem{field: path, message: fmt.Sprintf(format, args...)})
}

func (c *strictChecker) mismatch(path, want string, v any) {
	c.fail(path, "%s: expected %s, got %s", path, want, describeValue(v))
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// notImplementer is implemented by the Calico types of which tabby implements only some
// fields: a field of Calico's that tabby lacks is refused as not implemented rather than
// reported as unknown, so the user knows the manifest is right and tabby is not.
type notImplementer interface{ notImplemented(name string) bool }

// notImplementedField says whether name is a field of the Calico type t that tabby does not
// implement.
func notImplementedField(t reflect.Type, name string) bool {
	ni, ok := reflect.Zero(t).Interface().(notImplementer)
	return ok && ni.notImplemented(name)
}

func (c *strictChecker) check(path string, v any, t reflect.Type) {
	if v == nil {
		return // null leaves the zero value, as in encoding/json and Kubernetes
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// Types with their own JSON forms (ports, protocols, durations, ...) judge
		// their values themselves.
		b, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(b)
		}
		if err != nil {
			c.fail(path, "%s: %v", path, err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		c.check(path, v, t.Elem())
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			c.mismatch(path, "object", v)
			return
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(obj) {
			f := mapPath(path, k)
			ft, known := fields[k]
			switch {
			case !known && notImplementedField(t, k):
				c.fail(f, "%s: not implemented: tabby does not implement this field of Calico's %s", f, t.Name())
				continue
			case !known:
				c.fail(f, "unknown field %q", f)
				continue
			}
			c.check(f, obj[k], ft)
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			c.mismatch(path, "object", v)
			return
		}
		for _, k := range sortedKeys(obj) {
			c.check(mapPath(path, k), obj[k], t.Elem())
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			c.mismatch(path, "array", v)
			return
		}
		for i, e := range arr {
			c.check(index(path, i), e, t.Elem())
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			c.mismatch(path, "string", v)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.mismatch(path, "bool", v)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		i, err := strconv.ParseInt(string(n), 10, 64)
		switch {
		case !ok || err != nil:
			c.mismatch(path, "integer", v)
		case reflect.Zero(t).OverflowInt(i):
			bits := t.Bits() - 1
			c.fail(path, "%s: %d is out of range %d-%d", path, i, -(int64(1) << bits), int64(1)<<bits-1)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		u, err := strconv.ParseUint(string(n), 10, 64)
		switch {
		case !ok || (err != nil && strings.HasPrefix(string(n), "-")):
			c.mismatch(path, "non-negative integer", v)
		case err != nil:
			c.mismatch(path, "integer", v)
		case reflect.Zero(t).OverflowUint(u):
			c.fail(path, "%s: %d is out of range 0-%d", path, u, uint64(1)<<t.Bits()-1)
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			c.mismatch(path, "number", v)
		}
	default:
		// Every type in this package is covered above; a new one must be added there.
		c.fail(path, "%s: cannot decode into %s", path, t)
	}
}

// describeValue names a decoded JSON value for an error message.
func describeValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + strconv.Quote(v)
	case json.Number:
		return "number " + v.String()
	case bool:
		return "bool " + strconv.FormatBool(v)
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// jsonFields maps the JSON names of a struct's fields to their types, as encoding/json
// sees them: embedded structs without a name of their own are flattened.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
			for n, ft := range jsonFields(sf.Type) {
				fields[n] = ft
			}
			continue
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		fields[name] = sf.Type
	}
	fieldCache.Store(t, fields)
	return fields
}

package api

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// FuzzDecode checks that no input makes Decode or Validate panic, and that whatever
// Decode accepts marshals to JSON that decodes back to the same JSON.
func FuzzDecode(f *testing.F) {
	for _, file := range testdataFiles(f) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, tt := range decodeErrorCases {
		f.Add([]byte(tt.input))
	}
	for _, tt := range validationCases {
		f.Add([]byte(tt.manifest))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Decode(data, "fuzz")
		if err != nil {
			return
		}
		for _, r := range rs {
			_ = Validate(r)
			j, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			again, err := Decode(j, "marshalled")
			if err != nil {
				t.Fatalf("decoding the marshalled form: %v\n%s", err, j)
			}
			if len(again) != 1 {
				t.Fatalf("marshalled form holds %d resources", len(again))
			}
			j2, err := json.Marshal(again[0])
			if err != nil || !bytes.Equal(j, j2) {
				t.Fatalf("round trip changed the resource:\n%s\n%s", j, j2)
			}
		}
	})
}

package config

import (
	"errors"
	"testing"
)

// FuzzParse checks that no input panics, that every failure is an
// ErrInvalidConfig, and that whatever Parse accepts also passes Validate.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"name = \"counter\"\n[[durable_objects.bindings]]\nname = \"COUNTER\"\nclass_name = \"Counter\"\n",
		"durable_objects.bindings = [{name = \"A\", class_name = \"X\"}]",
		"[durable_objects]\nbindings = [{name = \"A\", class_name = \"X\"}]",
		"kv_namespaces = [{binding = \"C\", id = \"1\"}]",
		"[vars]\nA = 1\nB = [1, {c = nan}]\nD = 1979-05-27T07:32:00",
		"[[migrations]]\ntag = \"v1\"",
		"[node]\nhttp = \":0\"\njoin = [\"a:1\"]\n[cluster]\nshards = 0\n[runtime]\nidle_timeout = \"1s\"",
		"[node\n",
		"node = 5",
		"[[node]]\nx = 1",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if err := file.Validate(); err != nil {
			t.Fatalf("Parse accepted a file Validate rejects: %v", err)
		}
	})
}

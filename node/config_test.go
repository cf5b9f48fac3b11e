package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/roostdb/roost/durable"
)

// TestConfigValidateInput: settings that would fail only once the node
// ran (after it had claimed its data dir) are refused by Validate.
func TestConfigValidateInput(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"port out of range", func(c *Config) { c.HTTPAddr = "127.0.0.1:99999" }, `http address "127.0.0.1:99999": the port must be a number from 0 to 65535`},
		{"port not a number", func(c *Config) { c.GossipAddr = "127.0.0.1:gossip" }, `gossip address "127.0.0.1:gossip": the port must be a number`},
		{"no port", func(c *Config) { c.AdminAddr = "127.0.0.1" }, `admin address "127.0.0.1"`},
		{"two listeners on one address", func(c *Config) { c.GRPCAddr = c.HTTPAddr }, "http and grpc both listen on 127.0.0.1:8787"},
		{"any free port twice", func(c *Config) { c.HTTPAddr, c.AdminAddr = "127.0.0.1:0", "127.0.0.1:0" }, ""},
		{"token with a space", func(c *Config) { c.AdminToken = "abc " }, "the admin token has spaces around it"},
		{"token of spaces", func(c *Config) { c.AdminToken = " " }, "the admin token has spaces around it"},
		{"KV binding named like an object binding", func(c *Config) {
			c.Bindings = []durable.Binding{{Name: "COUNTER", ClassName: "Counter"}}
			c.KVNamespaces = []durable.KVBinding{{Binding: "COUNTER", ID: "x"}}
		}, `"COUNTER" is both a Durable Object binding and a KV binding`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultClusterConfig("n1")
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig saying %q", err, tt.wantErr)
			}
		})
	}
}

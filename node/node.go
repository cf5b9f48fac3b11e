package node

import (
	"context"
	"errors"
	"net"

	"github.com/roostdb/roost/durable"
)

// Node is one roost node: app and admin listeners, the instance manager and
// the shards' storage.
type Node struct {
	cfg Config
	app *durable.App
}

// New checks cfg and app and prepares a node; Start opens its data dir and listeners.
func New(cfg Config, app *durable.App) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := app.Validate(); err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, app: app}, nil
}

// Start opens storage, starts every shard and begins serving. It returns
// once the listeners are bound.
func (n *Node) Start(ctx context.Context) error { return errors.New("node: not built yet") }

// Close stops serving, waits for in-flight requests (bounded by ctx) and
// closes storage.
func (n *Node) Close(ctx context.Context) error { return nil }

// Run is Start, then waiting for ctx to end, then Close.
func (n *Node) Run(ctx context.Context) error { return errors.New("node: not built yet") }

// HTTPAddr is the bound app listener address (valid after Start).
func (n *Node) HTTPAddr() net.Addr { return nil }

// AdminAddr is the bound admin listener address (valid after Start).
func (n *Node) AdminAddr() net.Addr { return nil }

package placement

import (
	"fmt"
	"time"
)

// Operation kinds the meta group records.
const (
	OperationRebalance = "rebalance"
	OperationDrain     = "drain"
)

// MaxOperationIDLen bounds Operation.ID.
const MaxOperationIDLen = 128

// Operation is a rebalance or drain under way, as the meta group records it
// (BeginOperationCmd) so that a new meta leader carries it on where the old
// one stopped: the moves themselves are planned afresh from the map at
// every step, so what to do is all an operation needs to remember. At most
// one is recorded at a time; EndOperationCmd clears it.
type Operation struct {
	ID   string `json:"id"`
	Kind string `json:"kind"` // OperationRebalance or OperationDrain
	// Node is the node a drain empties; empty for a rebalance.
	Node          NodeID    `json:"node,omitempty"`
	MaxConcurrent int       `json:"max_concurrent"`
	Started       time.Time `json:"started"`
	// Planned is how many moves the operation had when it started (0 in
	// records written before it was kept): a meta leader that carries it
	// on counts the moves made before it as Planned less those it finds
	// left, so that its progress goes on from where the last one's was.
	Planned int `json:"planned,omitempty"`
}

// Operation outcomes, EndOperationCmd.State.
const (
	OperationDone   = "done"
	OperationFailed = "failed"
)

// MaxOperationErrorLen bounds EndOperationCmd.Error.
const MaxOperationErrorLen = 1024

// OperationOutcome is how an operation ended.
type OperationOutcome struct {
	State string `json:"state"` // OperationDone or OperationFailed
	// Done is the moves made: by the meta leader that ended it, and, as it
	// counted them (Operation.Planned), by those before it.
	Done int `json:"done"`
	// Total is the moves that meta leader had planned, Done included (a
	// failed operation's are more); 0 in records written before it was
	// kept, which mean Done.
	Total    int       `json:"total,omitempty"`
	Error    string    `json:"error,omitempty"`
	Finished time.Time `json:"finished"`
}

func (o OperationOutcome) validate() error {
	switch {
	case o.State != OperationDone && o.State != OperationFailed:
		return fmt.Errorf("%w: state %q (want %s or %s)", ErrBadCommand, o.State, OperationDone, OperationFailed)
	case o.Done < 0:
		return fmt.Errorf("%w: done %d", ErrBadCommand, o.Done)
	case o.Total != 0 && o.Total < o.Done:
		return fmt.Errorf("%w: total %d is less than done %d", ErrBadCommand, o.Total, o.Done)
	case len(o.Error) > MaxOperationErrorLen:
		return fmt.Errorf("%w: error of %d bytes (at most %d)", ErrBadCommand, len(o.Error), MaxOperationErrorLen)
	}
	return nil
}

// EndedOperation is the last operation that ended, kept so that a new meta
// leader can still tell how an operation it did not run ended.
type EndedOperation struct {
	Operation
	OperationOutcome
}

// validate checks what can be checked without the map.
func (o Operation) validate() error {
	if o.ID == "" || len(o.ID) > MaxOperationIDLen {
		return fmt.Errorf("%w: operation id must be 1 to %d characters long", ErrBadCommand, MaxOperationIDLen)
	}
	for i := 0; i < len(o.ID); i++ {
		if c := o.ID[i]; c <= ' ' || c > '~' || c == '/' {
			return fmt.Errorf("%w: operation id %q has %q at offset %d", ErrBadCommand, o.ID, c, i)
		}
	}
	switch o.Kind {
	case OperationRebalance:
		if o.Node != "" {
			return fmt.Errorf("%w: a rebalance names no node (got %q)", ErrBadCommand, o.Node)
		}
	case OperationDrain:
		if err := o.Node.Validate(); err != nil {
			return fmt.Errorf("%w: drain: %w", ErrBadCommand, err)
		}
	default:
		return fmt.Errorf("%w: unknown operation kind %q (want %s or %s)", ErrBadCommand, o.Kind, OperationRebalance, OperationDrain)
	}
	if o.MaxConcurrent < 1 {
		return fmt.Errorf("%w: max_concurrent must be at least 1, got %d", ErrBadCommand, o.MaxConcurrent)
	}
	if o.Planned < 0 {
		return fmt.Errorf("%w: planned %d", ErrBadCommand, o.Planned)
	}
	return nil
}

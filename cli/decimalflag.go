package cli

import (
	"errors"
	"strconv"

	"github.com/spf13/pflag"
)

// decimal is an integer flag read in base 10 only, as the ROOST_*
// variables are: pflag's IntVar also reads 0x10 and 0b11, and 010 as
// octal 8, so `--shards 010` would have made 8 shards.
type decimal[T int | int64] struct{ p *T }

func (d decimal[T]) String() string {
	if d.p == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*d.p), 10)
}

func (d decimal[T]) Type() string { return "int" }

func (d decimal[T]) Set(s string) error {
	var zero T
	bits := 64
	if _, ok := any(zero).(int); ok {
		bits = strconv.IntSize
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		return errors.New("not a whole number")
	}
	*d.p = T(n)
	return nil
}

// decimalIntVar is pflag's IntVarP read in base 10 only.
func decimalIntVar(f *pflag.FlagSet, p *int, name string, value int, usage string) {
	decimalIntVarP(f, p, name, "", value, usage)
}

// decimalIntVarP is pflag's IntVarP read in base 10 only.
func decimalIntVarP(f *pflag.FlagSet, p *int, name, shorthand string, value int, usage string) {
	*p = value
	f.VarP(decimal[int]{p}, name, shorthand, usage)
}

// decimalInt64Var is pflag's Int64Var read in base 10 only.
func decimalInt64Var(f *pflag.FlagSet, p *int64, name string, value int64, usage string) {
	*p = value
	f.Var(decimal[int64]{p}, name, usage)
}

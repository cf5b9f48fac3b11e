// Command kvreader serves the KV reader example (package kvreader) with the
// roost command line: `kvreader dev`, `kvreader node`, ….
package main

import (
	"os"

	"github.com/roostdb/roost/cli"
	"github.com/roostdb/roost/examples/kvreader"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], kvreader.App()))
}

// Command jobqueue serves the job queue example (package jobqueue) with the
// roost command line: `jobqueue dev`, `jobqueue node`, ….
package main

import (
	"os"

	"github.com/roostdb/roost/cli"
	"github.com/roostdb/roost/examples/jobqueue"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], jobqueue.App()))
}

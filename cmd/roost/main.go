// Command roost is the stock roost binary: the command line of package cli
// serving the examples (package examples/all: the counter at the root, the
// others under /examples/NAME/). To serve your own Durable Objects, build
// a binary like this one with your own *durable.App.
package main

import (
	"os"

	"github.com/roostdb/roost/cli"
	"github.com/roostdb/roost/examples/all"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], all.App()))
}

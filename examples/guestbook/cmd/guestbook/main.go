// Command guestbook serves the guestbook example with every roost command
// (guestbook dev, guestbook bench, ...): a binary of your own is this file.
package main

import (
	"os"

	"github.com/roostdb/roost/cli"
	"github.com/roostdb/roost/examples/guestbook"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], guestbook.App()))
}

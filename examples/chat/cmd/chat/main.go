// Command chat serves the chat room example: `chat dev` runs it on one
// node, `chat node` as a cluster member, like the stock roost binary.
package main

import (
	"os"

	"github.com/roostdb/roost/cli"
	"github.com/roostdb/roost/examples/chat"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], chat.App()))
}

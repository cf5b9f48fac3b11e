// Command healthcheck GETs one URL and exits 0 if the answer is 200 OK, 1
// otherwise. It is the container health check of the roost image, which is
// built FROM scratch and so has no shell or curl:
//
//	/healthcheck                                   # http://127.0.0.1:8789/readyz
//	/healthcheck http://127.0.0.1:8789/healthz
//
// It uses only the standard library and is built static (CGO_ENABLED=0).
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

const (
	defaultURL = "http://127.0.0.1:8789/readyz"
	timeout    = 5 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	url := defaultURL
	switch {
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help"):
		fmt.Fprintf(stdout, "usage: healthcheck [URL]\nGET URL (default %s); exit 0 on 200 OK, else 1.\n", defaultURL)
		return 0
	case len(args) == 1:
		url = args[0]
	case len(args) > 1:
		fmt.Fprintln(stderr, "usage: healthcheck [URL]")
		return 2
	}
	client := &http.Client{
		Timeout: timeout,
		// The answer of the URL itself is the health; a redirect is not.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s: %s %s\n", url, resp.Status, msg)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s %s\n", url, resp.Status, msg)
	return 0
}

package node

import (
	"embed"
	"io/fs"
	"net/http"
)

// The dashboard (docs/admin-api.md, "Dashboard"): a static page on the
// admin listener at /ui/ that polls this node's /v1/status, /v1/members
// and /v1/shards and shows them. The page holds no data, so it is served
// without the admin token; its calls send the token the user types, kept
// in the browser tab's sessionStorage.

//go:embed ui
var uiFiles embed.FS

// uiHandler serves the dashboard's files under /ui/.
func uiHandler() http.Handler {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Only the page's own script, style and API calls; no framing.
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

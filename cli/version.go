package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit are set by release builds:
//
//	go build -ldflags "-X github.com/roostdb/roost/cli.version=v0.3.0 -X github.com/roostdb/roost/cli.commit=$(git rev-parse HEAD)" ./cmd/roost
//
// They are package variables only because -X can set nothing else; nothing
// in the program writes them. Empty means "ask the build info".
var (
	version = ""
	commit  = ""
)

// modulePath is roost's module, looked up among the dependencies when roost
// is built into someone else's binary.
const modulePath = "github.com/roostdb/roost"

func newVersionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print roost's version, commit and Go version",
		Long: `Print the version and commit roost was built from and the Go toolchain that
built it. Release builds set the version with -ldflags; other builds report
what 'go build' recorded (a module version, or "devel" and the VCS commit).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				bi = nil
			}
			writeVersion(stdout, buildVersion(version, commit, bi))
			return nil
		},
	}
}

// versionInfo is what `roost version` prints.
type versionInfo struct {
	Version   string
	Commit    string // "" when unknown
	Modified  bool   // built from a work tree with uncommitted changes
	Time      string // commit time, "" when unknown
	GoVersion string
	Platform  string
}

// buildVersion prefers what the linker was told (a release), then what the
// go command recorded; bi may be nil (a binary built without module support).
func buildVersion(ldVersion, ldCommit string, bi *debug.BuildInfo) versionInfo {
	v := versionInfo{
		Version:   "devel",
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi != nil {
		if bi.GoVersion != "" {
			v.GoVersion = bi.GoVersion
		}
		mod := &bi.Main
		if mod.Path != modulePath {
			// A user's own binary: roost's version is that of the dependency.
			for _, d := range bi.Deps {
				if d.Path == modulePath {
					mod = d
					if d.Replace != nil {
						mod = d.Replace
					}
					break
				}
			}
		}
		if mod.Version != "" && mod.Version != "(devel)" {
			v.Version = mod.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if ldVersion != "" {
		v.Version = ldVersion
	}
	if ldCommit != "" {
		// The recorded VCS state may be of another tree than the one the
		// release names, so none of it is kept.
		v.Commit, v.Modified, v.Time = ldCommit, false, ""
	}
	return v
}

func writeVersion(w io.Writer, v versionInfo) {
	fmt.Fprintf(w, "roost %s\n", v.Version)
	commit := v.Commit
	if commit == "" {
		commit = "unknown"
	}
	if v.Modified {
		commit += " (modified)"
	}
	if v.Time != "" {
		commit += " " + v.Time
	}
	fmt.Fprintf(w, "commit  %s\n", commit)
	fmt.Fprintf(w, "go      %s %s\n", v.GoVersion, v.Platform)
}

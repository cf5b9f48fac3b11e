package cli

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc123"},
		{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	tests := []struct {
		name             string
		ldVersion, ldCmt string
		bi               *debug.BuildInfo
		want             versionInfo
	}{
		{
			name: "no build info",
			want: versionInfo{Version: "devel"},
		},
		{
			name: "local build from a work tree",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: modulePath, Version: "(devel)"}, Settings: vcs},
			want: versionInfo{Version: "devel", Commit: "abc123", Modified: true, Time: "2026-01-02T03:04:05Z", GoVersion: "go1.26.8"},
		},
		{
			name: "go install of a release",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: modulePath, Version: "v0.3.0"}},
			want: versionInfo{Version: "v0.3.0", GoVersion: "go1.26.8"},
		},
		{
			name: "roost as a dependency of a user's binary",
			bi: &debug.BuildInfo{Main: debug.Module{Path: "example.com/mine", Version: "(devel)"},
				Deps: []*debug.Module{{Path: "other/x", Version: "v9.9.9"}, {Path: modulePath, Version: "v0.2.1"}}},
			want: versionInfo{Version: "v0.2.1"},
		},
		{
			name:      "ldflags win",
			ldVersion: "v1.0.0", ldCmt: "fff",
			bi:   &debug.BuildInfo{Main: debug.Module{Path: modulePath, Version: "(devel)"}, Settings: vcs},
			want: versionInfo{Version: "v1.0.0", Commit: "fff"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := buildVersion(tt.ldVersion, tt.ldCmt, tt.bi)
			if tt.want.GoVersion == "" {
				tt.want.GoVersion = runtime.Version()
			}
			tt.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
			if got != tt.want {
				t.Errorf("buildVersion =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestWriteVersion(t *testing.T) {
	var b bytes.Buffer
	writeVersion(&b, versionInfo{Version: "v1.2.3", Commit: "abc", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"})
	want := "roost v1.2.3\ncommit  abc (modified)\ngo      go1.26.8 linux/amd64\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestVersionCommand(t *testing.T) {
	code, stdout, stderr := runCLI(t, nil, "version")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stdout, "roost ") || !strings.Contains(stdout, runtime.Version()) || !strings.Contains(stdout, "commit  ") {
		t.Errorf("version output:\n%s", stdout)
	}
}

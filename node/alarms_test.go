package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/roostdb/roost/durable"
)

// alarmObject records deliveries in storage. /set?ms=N&fail=K&rearm=R sets
// an alarm N ms ahead whose first K deliveries fail and which re-arms itself
// R times; /state answers "fired=F retries=MAXRETRY alarm=BOOL".
type alarmObject struct{ st *durable.State }

func newAlarmObject(state *durable.State, _ *durable.Env) durable.Object {
	return &alarmObject{st: state}
}

func (o *alarmObject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := o.st.Storage
	q := r.URL.Query()
	switch r.URL.Path {
	case "/set":
		ms, _ := strconv.Atoi(q.Get("ms"))
		fail, _ := strconv.Atoi(q.Get("fail"))
		rearm, _ := strconv.Atoi(q.Get("rearm"))
		durable.PutJSON(s, "fail", fail)
		durable.PutJSON(s, "rearm", rearm)
		if err := s.SetAlarm(time.Now().Add(time.Duration(ms) * time.Millisecond)); err != nil {
			durable.WriteError(w, err)
			return
		}
		fmt.Fprint(w, "set")
	case "/state":
		fired, _, _ := durable.GetJSON[int](s, "fired")
		retries, _, _ := durable.GetJSON[int](s, "retries")
		_, set, _ := s.GetAlarm()
		fmt.Fprintf(w, "fired=%d retries=%d alarm=%v", fired, retries, set)
	}
}

func (o *alarmObject) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	s := o.st.Storage
	if fail, _, _ := durable.GetJSON[int](s, "fail"); fail > 0 {
		durable.PutJSON(s, "fail", fail-1)
		return errors.New("injected alarm failure")
	}
	fired, _, _ := durable.GetJSON[int](s, "fired")
	durable.PutJSON(s, "fired", fired+1)
	durable.PutJSON(s, "retries", info.RetryCount)
	if rearm, _, _ := durable.GetJSON[int](s, "rearm"); rearm > 0 {
		durable.PutJSON(s, "rearm", rearm-1)
		return s.SetAlarm(time.Now().Add(50 * time.Millisecond))
	}
	return nil
}

func alarmApp() *durable.App {
	app := testApp()
	app.Classes["Alarmed"] = newAlarmObject
	app.Bindings = append(app.Bindings, durable.Binding{Name: "ALARM", ClassName: "Alarmed"})
	return app
}

func startAlarmNode(t *testing.T, dir string) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.AdminAddr, cfg.Shards = dir, "127.0.0.1:0", "127.0.0.1:0", 4
	cfg.Logger = quietLogger
	n, err := New(cfg, alarmApp())
	if err != nil {
		t.Fatal(err)
	}
	n.alarmBackoff = 20 * time.Millisecond
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitState(t *testing.T, n *Node, name, want string) {
	t.Helper()
	params := url.Values{"ns": {"ALARM"}, "name": {name}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, n, "/state", params)
		if body == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("object %s: state %q, want %q", name, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAlarms(t *testing.T) {
	n := startAlarmNode(t, t.TempDir())
	defer closeNode(t, n)
	for _, tc := range []struct {
		name, set, want string
	}{
		{"fires once and is deleted", "ms=100", "fired=1 retries=0 alarm=false"},
		{"retries failures with backoff", "ms=0&fail=2", "fired=1 retries=2 alarm=false"},
		{"handler may set the next alarm", "ms=0&rearm=2", "fired=3 retries=0 alarm=false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.set)
			q.Set("ns", "ALARM")
			q.Set("name", tc.name)
			if _, body := get(t, n, "/set", q); body != "set" {
				t.Fatalf("set: %q", body)
			}
			waitState(t, n, tc.name, tc.want)
		})
	}
}

func TestAlarmSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	n := startAlarmNode(t, dir)
	get(t, n, "/set", url.Values{"ns": {"ALARM"}, "name": {"R"}, "ms": {"700"}})
	closeNode(t, n)
	n = startAlarmNode(t, dir)
	defer closeNode(t, n)
	waitState(t, n, "R", "fired=1 retries=0 alarm=false")
}

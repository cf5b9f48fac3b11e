// Package jobqueue is the alarms example of the seeds (the Dart bindings'
// "State, Storage & Alarms"): each queue is a Durable Object that stores
// the jobs it is given and processes them in batches when its alarm fires.
//
// POST /?queue=Q with a body enqueues a job; if no alarm is set, one is set
// for the delay ?delay= gives from now (such as ?delay=2s; default 60s as
// in the seed, 1s to 1h; there is no --delay flag)
// and the answer says "Job queued!". When the alarm fires, the oldest
// queued jobs (up to jobsPerAlarm) are processed — here: moved to the done
// list with the time — in one turn, and if more remain the alarm is set
// again for now. A job's move is one put and one delete in the same turn,
// so a job is processed once even if the alarm is retried. GET /?queue=Q
// answers {"queued": N, "done": [{"job", "queued_at", "done_at"}]}.
package jobqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/roostdb/roost/durable"
)

// App is what cmd/jobqueue serves.
func App() *durable.App {
	return &durable.App{
		Name:     "jobqueue",
		Worker:   Worker,
		Classes:  map[string]durable.Class{"JobQueue": NewQueue},
		Bindings: []durable.Binding{{Name: "QUEUES", ClassName: "JobQueue"}},
	}
}

// Worker sends the request to the queue it names.
func Worker(w http.ResponseWriter, r *http.Request, env *durable.Env) {
	name := r.URL.Query().Get("queue")
	if name == "" {
		http.Error(w, "name a queue: ?queue=NAME", http.StatusBadRequest)
		return
	}
	ns, err := env.Namespace("QUEUES")
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	resp, err := ns.Get(ns.IDFromName(name)).Fetch(r)
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	durable.WriteResponse(w, resp)
}

// Queue is one job queue.
type Queue struct {
	storage durable.Storage
}

// NewQueue is the class constructor.
func NewQueue(state *durable.State, _ *durable.Env) durable.Object {
	return &Queue{storage: state.Storage}
}

// Job is a processed job, as GET shows it.
type Job struct {
	Job      string    `json:"job"`
	QueuedAt time.Time `json:"queued_at"`
	DoneAt   time.Time `json:"done_at"`
}

const (
	defaultDelay = 60 * time.Second
	maxJob       = 16 << 10
	// jobsPerAlarm bounds one alarm turn's writes well inside what a turn
	// may commit (5 MiB): a done entry is a job in JSON, at most about six
	// times its bytes (\u00XX escapes), so 32 of them stay under 3.1 MiB.
	jobsPerAlarm = 32
	// keyTime is RFC 3339 with every digit of the nanoseconds kept, so
	// that the keys sort in time order (RFC3339Nano drops trailing zeros).
	keyTime = "2006-01-02T15:04:05.000000000Z07:00"
)

func (q *Queue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		q.enqueue(w, r)
	case http.MethodGet:
		q.show(w)
	default:
		w.Header().Set("Allow", "GET, POST") // RFC 9110: a 405 says what is allowed
		http.Error(w, "POST a job or GET the queue", http.StatusMethodNotAllowed)
	}
}

func (q *Queue) enqueue(w http.ResponseWriter, r *http.Request) {
	delay := defaultDelay
	if s := r.URL.Query().Get("delay"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second || d > time.Hour {
			http.Error(w, "delay is a duration from 1s to 1h, such as 2s", http.StatusBadRequest)
			return
		}
		delay = d
	}
	job, err := io.ReadAll(io.LimitReader(r.Body, maxJob+1))
	if err != nil || len(job) == 0 || len(job) > maxJob {
		http.Error(w, fmt.Sprintf("a job is 1 to %d bytes", maxJob), http.StatusBadRequest)
		return
	}
	now := time.Now().UTC()
	// The key orders jobs by arrival; the nanoseconds keep two jobs of one
	// instant apart (turns of one object never overlap).
	if err := q.storage.Put("queued:"+now.Format(keyTime), job); err != nil {
		durable.WriteError(w, err)
		return
	}
	// If not already set, set an alarm for delay from now.
	if _, set, err := q.storage.GetAlarm(); err != nil {
		durable.WriteError(w, err)
		return
	} else if !set {
		if err := q.storage.SetAlarm(now.Add(delay)); err != nil {
			durable.WriteError(w, err)
			return
		}
	}
	io.WriteString(w, "Job queued!\n")
}

// Alarm processes the oldest jobsPerAlarm queued jobs in one turn and, if
// more are queued, sets the alarm again for now. The writes of a turn are
// committed even when the handler returns an error (as a fetch handler's
// are), and the runtime then retries the alarm, which takes up the jobs
// still queued.
func (q *Queue) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	jobs, err := q.storage.List(durable.ListOptions{Prefix: "queued:", Limit: jobsPerAlarm + 1})
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	if len(jobs) > jobsPerAlarm {
		jobs = jobs[:jobsPerAlarm]
		if err := q.storage.SetAlarm(now); err != nil {
			return err
		}
	}
	for _, kv := range jobs {
		queuedAt, _ := time.Parse(keyTime, strings.TrimPrefix(kv.Key, "queued:"))
		done, err := json.Marshal(Job{Job: string(kv.Value), QueuedAt: queuedAt, DoneAt: now})
		if err != nil {
			return err
		}
		if err := q.storage.Put("done:"+strings.TrimPrefix(kv.Key, "queued:"), done); err != nil {
			return err
		}
		if _, err := q.storage.Delete(kv.Key); err != nil {
			return err
		}
	}
	return nil
}

func (q *Queue) show(w http.ResponseWriter) {
	queued, err := q.storage.List(durable.ListOptions{Prefix: "queued:"})
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	doneKVs, err := q.storage.List(durable.ListOptions{Prefix: "done:"})
	if err != nil {
		durable.WriteError(w, err)
		return
	}
	out := struct {
		Queued int   `json:"queued"`
		Done   []Job `json:"done"`
	}{Queued: len(queued), Done: []Job{}}
	for _, kv := range doneKVs {
		var j Job
		if err := json.Unmarshal(kv.Value, &j); err != nil {
			durable.WriteError(w, err)
			return
		}
		out.Done = append(out.Done, j)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

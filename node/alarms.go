package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/roostdb/roost/durable"
	"github.com/roostdb/roost/raftstore"
)

// alarmReader finds a shard's due alarms; *raftstore.Store is one.
type alarmReader interface {
	DueAlarms(g raftstore.GroupID, notAfterMillis int64, limit int) ([]raftstore.DueAlarm, error)
}

var _ alarmReader = (*raftstore.Store)(nil)

// Alarm delivery follows Workers: at least once, retried with exponential
// backoff from alarmBackoff for at most alarmMaxRetries retries, then
// dropped. The alarm stays in storage until it succeeds (or is dropped), so
// a restart or failover delivers it again.
const (
	alarmPollInterval = 250 * time.Millisecond
	alarmMaxRetries   = 6
	alarmBatch        = 128
)

// alarmScheduler fires one shard's due alarms while this node serves it.
type alarmScheduler struct {
	m       *manager
	sh      *shard
	reader  alarmReader
	backoff time.Duration

	mu      sync.Mutex
	running map[[32]byte]bool
	retries map[[32]byte]alarmRetry
}

type alarmRetry struct {
	at        int64 // the alarm time the retries are for
	count     int
	notBefore time.Time
}

func newAlarmScheduler(m *manager, sh *shard, reader alarmReader, backoff time.Duration) *alarmScheduler {
	return &alarmScheduler{m: m, sh: sh, reader: reader, backoff: backoff,
		running: make(map[[32]byte]bool), retries: make(map[[32]byte]alarmRetry)}
}

// run polls for due alarms until ctx ends.
func (a *alarmScheduler) run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		var fires sync.WaitGroup
		defer fires.Wait()
		t := time.NewTicker(alarmPollInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if a.sh.isReady() {
					a.poll(ctx, now, &fires)
				}
			}
		}
	}()
}

func (a *alarmScheduler) poll(ctx context.Context, now time.Time, fires *sync.WaitGroup) {
	due, err := a.reader.DueAlarms(a.sh.id, now.UnixMilli(), alarmBatch)
	if err != nil {
		a.m.cfg.Logger.Warn("reading due alarms", "shard", a.sh.id.String(), "err", err)
		return
	}
	for _, d := range due {
		a.mu.Lock()
		r, retrying := a.retries[d.Object]
		if retrying && r.at != d.At {
			delete(a.retries, d.Object) // the object moved its alarm: start afresh
			r, retrying = alarmRetry{}, false
		}
		if a.running[d.Object] || retrying && now.Before(r.notBefore) {
			a.mu.Unlock()
			continue
		}
		a.running[d.Object] = true
		a.mu.Unlock()
		fires.Add(1)
		go func() {
			defer fires.Done()
			a.fire(ctx, d, r)
		}()
	}
}

// fire delivers one alarm and records the outcome for the next poll.
func (a *alarmScheduler) fire(ctx context.Context, d raftstore.DueAlarm, r alarmRetry) {
	defer func() {
		a.mu.Lock()
		delete(a.running, d.Object)
		a.mu.Unlock()
	}()
	class, id, ok := a.m.classOf(d.Object)
	if !ok {
		a.m.cfg.Logger.Warn("alarm of an object of no registered class; dropping it", "shard", a.sh.id.String(), "object", durable.IDFromBytes(d.Object).String())
		return
	}
	info := durable.AlarmInfo{ScheduledTime: time.UnixMilli(d.At), RetryCount: r.count, IsRetry: r.count > 0}
	giveUp := r.count >= alarmMaxRetries
	err := a.m.deliverAlarm(ctx, a.sh, class, id, d.At, info, giveUp)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err == nil || giveUp:
		delete(a.retries, d.Object)
		if err == nil {
			a.m.metrics.alarmsFired.Inc()
		}
	default:
		a.m.metrics.alarmFailures.Inc()
		a.m.cfg.Logger.Warn("alarm failed; will retry", "class", class, "id", id.String(), "retry", r.count+1, "err", err)
		a.retries[d.Object] = alarmRetry{at: d.At, count: r.count + 1, notBefore: time.Now().Add(a.backoff << r.count)}
	}
}

// classOf finds the class an object belongs to from its ID's mac.
func (m *manager) classOf(obj [32]byte) (string, durable.ID, bool) {
	hex := durable.IDFromBytes(obj).String()
	for class, key := range m.keys {
		if id, err := durable.ParseID(key, hex); err == nil {
			return class, id, true
		}
	}
	return "", durable.ID{}, false
}

// deliverAlarm runs the object's Alarm handler as a turn scheduled for at.
// On success, or when giveUp, the alarm is deleted unless the handler set a
// new one. It returns once that deletion is committed.
func (m *manager) deliverAlarm(ctx context.Context, sh *shard, class string, id durable.ID, at int64, info durable.AlarmInfo, giveUp bool) error {
	key := id.Bytes()
	for attempt := 0; ; attempt++ {
		in, err := m.acquire(ctx, key, id, class, m.classes[class], sh)
		if err != nil {
			return err
		}
		err = in.alarm(ctx, at, info, giveUp)
		m.release(in)
		if errors.Is(err, errInstanceReset) && attempt < maxResets {
			continue
		}
		return err
	}
}

// alarm runs one alarm delivery as a turn of the instance.
func (in *instance) alarm(ctx context.Context, at int64, info durable.AlarmInfo, giveUp bool) error {
	if err := in.lock(ctx); err != nil {
		return err
	}
	if in.retired.Load() {
		in.unlock()
		return errInstanceReset
	}
	var handlerErr error
	exc := in.runTurn(func() error {
		if err := in.activate(); err != nil {
			return err
		}
		if giveUp {
			return nil
		}
		if h, ok := in.obj.(durable.Alarmer); ok {
			// A panic here reaches runTurn: the instance is reset and the
			// alarm retried; a returned error only retries.
			handlerErr = h.Alarm(context.WithValue(ctx, turnKey{}, &turnMark{inst: in}), info)
		}
		return nil
	})
	if exc == nil && handlerErr == nil {
		// Delete the alarm we delivered, unless the handler moved it.
		if cur, ok, err := in.storage.GetAlarm(); err == nil && ok && cur.UnixMilli() == at {
			handlerErr = in.storage.DeleteAlarm()
		}
	}
	last := in.storage.flush()
	if exc != nil {
		in.retire(exc)
	}
	in.unlock()
	if last != nil {
		if err := last.wait(ctx); err != nil {
			return storageFailure(err)
		}
	}
	if exc != nil {
		return exc
	}
	if handlerErr != nil {
		return fmt.Errorf("alarm handler of %s %s: %w", in.class, in.id, handlerErr)
	}
	return nil
}

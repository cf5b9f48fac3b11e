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

// alarmReader finds a shard's due and next alarms; *raftstore.Store is one.
type alarmReader interface {
	DueAlarms(g raftstore.GroupID, notAfterMillis int64, limit int) ([]raftstore.DueAlarm, error)
	DueAlarmsAfter(g raftstore.GroupID, after raftstore.DueAlarm, notAfterMillis int64, limit int) ([]raftstore.DueAlarm, error)
	NextAlarm(g raftstore.GroupID, afterMillis int64) (int64, bool, error)
}

var _ alarmReader = (*raftstore.Store)(nil)

// Alarm delivery follows Workers: at least once, retried with exponential
// backoff for at most alarmMaxRetries retries, then dropped. The alarm
// stays in storage until it succeeds (or is dropped), so a restart or
// failover delivers it again.
const (
	alarmMaxRetries = 6
	alarmBatch      = 128
)

// alarmSettings tune the alarm schedulers of a node; tests change them.
type alarmSettings struct {
	// backoff is the first retry delay of a failed alarm, and the delay
	// before reading again after a failed read.
	backoff time.Duration
	// maxSleep bounds a scheduler's sleep when no wake-up comes: a safety
	// net for a change no wake-up announces, such as the wall clock (which
	// alarm times use) stepping forward under the monotonic timer. 30 s:
	// at 5 s the schedulers of a node's shards woke it four times a second
	// while idle.
	maxSleep time.Duration
	// wrapReader, when set, wraps the store the schedulers read.
	wrapReader func(alarmReader) alarmReader
}

func defaultAlarmSettings() alarmSettings {
	return alarmSettings{backoff: 2 * time.Second, maxSleep: 30 * time.Second}
}

// alarmScheduler fires one shard's due alarms while this node serves it.
// It sleeps until the earliest of the shard's next alarm, the next retry
// and maxSleep, unless woken (sh.alarmWake) by a committed write that sets
// an alarm, by this node becoming the shard's leader, or by the end of a
// delivery. An idle shard therefore costs one look per maxSleep.
type alarmScheduler struct {
	m        *manager
	sh       *shard
	reader   alarmReader
	backoff  time.Duration
	maxSleep time.Duration

	mu      sync.Mutex
	running map[[32]byte]bool
	retries map[[32]byte]alarmRetry
	// unknown holds alarms of objects of no registered class (object →
	// alarm time), reported once and then left alone: nothing can deliver
	// or delete them.
	unknown map[[32]byte]int64
}

type alarmRetry struct {
	at        int64 // the alarm time the retries are for
	count     int
	notBefore time.Time
	// term is the shard's leadership term here (shard.losses) the retry
	// was recorded in. A retry of an earlier term is forgotten: a
	// failover starts the count again on the new leader, and a node that
	// leads the shard again must neither wait out nor count on from what
	// it kept of its earlier term.
	term uint64
}

func newAlarmScheduler(m *manager, sh *shard, reader alarmReader, set alarmSettings) *alarmScheduler {
	if set.wrapReader != nil {
		reader = set.wrapReader(reader)
	}
	return &alarmScheduler{m: m, sh: sh, reader: reader, backoff: set.backoff, maxSleep: set.maxSleep,
		running: make(map[[32]byte]bool), retries: make(map[[32]byte]alarmRetry), unknown: make(map[[32]byte]int64)}
}

// run delivers due alarms until ctx ends. While this node does not serve
// the shard it only waits for a wake-up: becoming ready sends one.
func (a *alarmScheduler) run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		var fires sync.WaitGroup
		defer fires.Wait()
		timer := time.NewTimer(a.maxSleep)
		defer timer.Stop()
		for {
			var sleep <-chan time.Time
			if a.sh.isReady() {
				now := time.Now()
				timer.Reset(a.poll(ctx, now, &fires).Sub(now))
				sleep = timer.C
			}
			select {
			case <-ctx.Done():
				return
			case <-a.sh.alarmWake:
			case <-sleep:
			}
		}
	}()
}

// poll starts the delivery of every due alarm that is neither running nor
// waiting for its retry (at most alarmBatch running at a time), and returns when to
// look again if nothing wakes the scheduler sooner. Running deliveries wake
// it when they end. Due alarms it skips (running, waiting for a retry, of
// no registered class) do not count: it reads on past them, so that they
// cannot keep the alarms after them from being delivered.
func (a *alarmScheduler) poll(ctx context.Context, now time.Time, fires *sync.WaitGroup) time.Time {
	next := now.Add(a.maxSleep)
	nowMs := now.UnixMilli()
	term := a.sh.losses.Load()
	// At most alarmBatch deliveries run at a time: those running now
	// count against this poll's.
	a.mu.Lock()
	budget := alarmBatch - len(a.running)
	// seen collects the due alarms read, if the scheduler keeps any
	// retries or unknown alarms: after reading every due alarm, those of
	// objects not among them (the alarm deleted or moved on) are dropped.
	var seen map[[32]byte]bool
	if len(a.retries)+len(a.unknown) > 0 {
		seen = make(map[[32]byte]bool)
	}
	a.mu.Unlock()
	started := 0
	var due []raftstore.DueAlarm
	var err error
	if budget > 0 {
		due, err = a.reader.DueAlarms(a.sh.id, nowMs, alarmBatch)
	}
	for err == nil && len(due) > 0 {
		for _, d := range due {
			if started == budget {
				break
			}
			if seen != nil {
				seen[d.Object] = true
			}
			a.mu.Lock()
			r, retrying := a.retries[d.Object]
			if retrying && (r.at != d.At || r.term != term) {
				// The object moved its alarm, or the retry is of an
				// earlier term: start afresh.
				delete(a.retries, d.Object)
				r, retrying = alarmRetry{}, false
			}
			r.term = term
			if at, ok := a.unknown[d.Object]; (ok && at == d.At) || a.running[d.Object] {
				a.mu.Unlock()
				continue
			}
			if retrying && now.Before(r.notBefore) {
				a.mu.Unlock()
				next = earlier(next, r.notBefore)
				continue
			}
			a.running[d.Object] = true
			a.mu.Unlock()
			started++
			fires.Add(1)
			go func() {
				defer fires.Done()
				a.fire(ctx, d, r)
			}()
		}
		if started == budget || len(due) < alarmBatch {
			break // the rest are reached as the deliveries started end
		}
		due, err = a.reader.DueAlarmsAfter(a.sh.id, due[len(due)-1], nowMs, alarmBatch)
	}
	if err != nil {
		a.m.cfg.Logger.Warn("reading due alarms", "shard", a.sh.id.String(), "err", err)
		return earlier(next, now.Add(a.backoff))
	}
	if seen != nil && budget > 0 && started < budget && len(due) < alarmBatch {
		// Every due alarm was read: a retry or unknown alarm not among
		// them is of an alarm no longer set for that time (a retry's
		// alarm time is due, and so is an unknown alarm's).
		a.mu.Lock()
		for obj := range a.retries {
			if !seen[obj] {
				delete(a.retries, obj)
			}
		}
		for obj := range a.unknown {
			if !seen[obj] {
				delete(a.unknown, obj)
			}
		}
		a.mu.Unlock()
	}
	// Alarms at nowMs or before are in due (or, past a full batch, are
	// reached as the deliveries above end): wait for the first one after.
	at, ok, err := a.reader.NextAlarm(a.sh.id, nowMs)
	switch {
	case err != nil:
		a.m.cfg.Logger.Warn("reading the next alarm", "shard", a.sh.id.String(), "err", err)
		next = earlier(next, now.Add(a.backoff))
	case ok:
		next = earlier(next, time.UnixMilli(at))
	}
	return next
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// fire delivers one alarm, records the outcome for the next poll and wakes
// the scheduler: a retry changes when to look next, and a due alarm skipped
// while this one ran (the object set it anew meanwhile) can run now.
func (a *alarmScheduler) fire(ctx context.Context, d raftstore.DueAlarm, r alarmRetry) {
	class, id, ok := a.m.classOf(d.Object)
	if !ok {
		a.m.cfg.Logger.Warn("alarm of an object of no registered class; ignoring it", "shard", a.sh.id.String(), "object", durable.IDFromBytes(d.Object).String())
		a.mu.Lock()
		a.unknown[d.Object] = d.At
		delete(a.running, d.Object)
		a.mu.Unlock()
		return // no wake-up: there is nothing new to do
	}
	info := durable.AlarmInfo{ScheduledTime: time.UnixMilli(d.At), RetryCount: r.count, IsRetry: r.count > 0}
	// Deliveries 0..alarmMaxRetries run the handler; the last of them
	// deletes the alarm even if the handler fails. Only a last delivery
	// that panicked (its instance reset, the alarm not deleted) leaves one
	// more pass, which deletes without running the handler.
	run, last := r.count <= alarmMaxRetries, r.count >= alarmMaxRetries
	err := a.m.deliverAlarm(ctx, a.sh, class, id, d.At, info, run, last)
	a.mu.Lock()
	switch {
	case err == nil:
		delete(a.retries, d.Object)
		if run {
			a.m.metrics.alarmsFired.Inc()
		}
	case errors.Is(err, errAlarmNotSet):
		delete(a.retries, d.Object)
	case errors.Is(err, errAlarmRewritten):
		delete(a.retries, d.Object)
		a.m.metrics.alarmFailures.Inc()
		a.m.cfg.Logger.Warn("alarm failed after it set or deleted its alarm: what it set is a new alarm, delivered at its time", "class", class, "id", id.String(), "err", err)
	case errors.Is(err, errAlarmDropped):
		delete(a.retries, d.Object)
		a.m.metrics.alarmFailures.Inc()
		a.m.cfg.Logger.Warn("alarm failed on its last retry; dropped", "class", class, "id", id.String(), "retries", r.count, "err", err)
	case errors.As(err, new(*routingError)):
		// Refused before it ran (the shard's leadership is moving): not a
		// failed delivery. The next leader delivers it, or this node again
		// if the hand-over fails.
		a.retries[d.Object] = alarmRetry{at: d.At, count: r.count, notBefore: time.Now().Add(a.backoff), term: r.term}
	default:
		a.m.metrics.alarmFailures.Inc()
		next := r.count + 1
		delay := a.backoff << r.count
		if !run {
			next, delay = r.count, a.backoff // the deleting pass failed: again soon
		} else if last {
			delay = a.backoff // only the deleting pass is left
		}
		a.m.cfg.Logger.Warn("alarm failed; will retry", "class", class, "id", id.String(), "retry", next, "err", err)
		a.retries[d.Object] = alarmRetry{at: d.At, count: next, notBefore: time.Now().Add(delay), term: r.term}
	}
	delete(a.running, d.Object)
	a.mu.Unlock()
	a.sh.wakeAlarms()
}

// classOf finds the class an object belongs to from its ID's mac.
func (m *manager) classOf(obj [32]byte) (string, durable.ID, bool) {
	for class, key := range m.keys {
		if id, err := key.Check(obj); err == nil {
			return class, id, true
		}
	}
	return "", durable.ID{}, false
}

// errAlarmDropped: the alarm's last delivery failed, and the alarm was
// deleted all the same.
var errAlarmDropped = errors.New("alarm dropped")

// errAlarmRewritten: the handler failed after it set or deleted its
// alarm. What it set is a new alarm, whose retries count from 0 again,
// even when it is set for the very millisecond delivered: that time alone
// cannot tell it from the old alarm's retry.
var errAlarmRewritten = errors.New("alarm set again by its failed handler")

// errAlarmNotSet: the alarm was deleted or moved before its delivery
// began; nothing ran.
var errAlarmNotSet = errors.New("alarm no longer set")

// deliverAlarm runs the object's Alarm handler (if run) as a turn
// scheduled for at. On success, or on the last try whatever the handler
// returned, the alarm is deleted unless the handler set a new one. It
// returns once that deletion is committed; a handler error after which the
// alarm was deleted wraps errAlarmDropped. An alarm no longer set for at
// when the turn begins is not delivered (errAlarmNotSet).
func (m *manager) deliverAlarm(ctx context.Context, sh *shard, class string, id durable.ID, at int64, info durable.AlarmInfo, run, lastTry bool) error {
	key := id.Bytes()
	for attempt := 0; ; attempt++ {
		in, err := m.acquire(ctx, key, id, class, m.classes[class], sh)
		if err != nil {
			return err
		}
		err = in.alarm(ctx, at, info, run, lastTry)
		m.release(in)
		if errors.Is(err, errInstanceReset) && attempt < maxResets {
			continue
		}
		return err
	}
}

// alarm runs one alarm delivery as a turn of the instance (deliverAlarm).
func (in *instance) alarm(ctx context.Context, at int64, info durable.AlarmInfo, run, lastTry bool) error {
	prior, err := in.beginTurn(ctx, true)
	if err != nil {
		return err
	}
	// The alarm may have been deleted or moved since the scheduler read it
	// as due (a turn ahead of this one, its commit maybe still in flight):
	// that alarm is not set any more, and is not delivered.
	if cur, ok, err := in.storage.GetAlarm(); err == nil && (!ok || cur.UnixMilli() != at) {
		if last, _ := in.endTurn(prior, nil); last != nil {
			// Once the change is committed the scheduler's next read
			// sees it, rather than this alarm due again.
			if err := last.wait(ctx); err != nil {
				return storageFailure(err)
			}
		}
		return errAlarmNotSet
	}
	var handlerErr error
	endDelivery := in.storage.deliveringAlarm(at)
	turnCtx, mark := in.markTurn(ctx)
	exc := in.runTurn(func() error {
		if err := in.activate(); err != nil {
			return err
		}
		if !run {
			return nil
		}
		h, ok := in.obj.(durable.Alarmer)
		if !ok {
			// Set before the class lost its Alarm method, or in the
			// constructor (SetAlarm refuses an object without one).
			in.m.cfg.Logger.Warn("alarm deleted undelivered: the class has no Alarm method", "class", in.class, "id", in.id.String())
			return nil
		}
		// A panic here reaches runTurn: the instance is reset and the
		// alarm retried; a returned error only retries.
		handlerErr = h.Alarm(turnCtx, info)
		return nil
	})
	mark.end()
	// Delete the alarm delivered, unless it was written while it ran: a
	// handler that sets it for now re-arms it, though "now" may be the
	// very millisecond it was delivered for.
	del := exc == nil && (handlerErr == nil || lastTry)
	written, err := endDelivery(del)
	dropped := del && handlerErr != nil && err == nil && !written // the handler failed and the alarm is deleted all the same
	handlerErr = errors.Join(handlerErr, err)
	last, _ := in.endTurn(prior, exc)
	if last != nil {
		if err := last.wait(ctx); err != nil {
			return storageFailure(err)
		}
	}
	if exc != nil && written {
		// The turn's writes are committed before its instance is reset,
		// the alarm it set among them: a new alarm, as after an error.
		return fmt.Errorf("%w: %w", errAlarmRewritten, exc)
	}
	if exc != nil {
		return exc
	}
	// The handler's error is not wrapped: it may carry a routing error or
	// errInstanceReset of a fetch it made, which deliverAlarm and fire
	// would take for this delivery's own (refused before it ran).
	if handlerErr != nil && dropped {
		return fmt.Errorf("%w: alarm handler of %s %s: %v", errAlarmDropped, in.class, in.id, handlerErr)
	}
	if handlerErr != nil && written {
		return fmt.Errorf("%w: alarm handler of %s %s: %v", errAlarmRewritten, in.class, in.id, handlerErr)
	}
	if handlerErr != nil {
		return fmt.Errorf("alarm handler of %s %s: %v", in.class, in.id, handlerErr)
	}
	return nil
}

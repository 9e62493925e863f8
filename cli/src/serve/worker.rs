//! The engine thread: the one place the engine lives. HTTP handlers send it [`Command`]s
//! and receive their request's [`Event`]s on a channel of their own.
//!
//! ```text
//!   handlers ──Command (std mpsc)──► engine thread: add, cancel, step(), route
//!   handler  ◄──Event (tokio mpsc, one per request)── tokens, Done(output) | Failed
//! ```
//!
//! The thread blocks on the command channel while the engine is idle and otherwise steps
//! as fast as it can, taking new commands between steps. A request whose event channel
//! is closed (its client went away) is cancelled at once: its pages return to the pool.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagoda_cpu::engine::{Engine, EngineError, Request, RequestId, RequestOutput, TokenEvent};
use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;

/// What a handler asks of the engine thread.
pub enum Command {
    /// Queue a request; its events go to `events`.
    Submit { request: Box<Request>, events: UnboundedSender<Event> },
    /// Drop a request (its handler went away with its client): pages back to the pool at once.
    Cancel(RequestId),
    /// Cancel everything (shutdown grace period over); the thread keeps serving.
    CancelAll,
    /// Leave the loop (after `CancelAll`; the server has stopped).
    Exit,
}

/// What the engine thread tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// A token was chosen for one of its samples.
    Token(TokenEvent),
    /// Every sample finished.
    Done(RequestOutput),
    /// The engine refused the request (`submit`'s error).
    Refused(EngineError),
    /// The engine failed while running it (a bug: logged, the request ends with a 500).
    Failed(String),
    /// Cancelled by the server (shutdown).
    Cancelled,
}

/// Runs the engine until [`Command::Exit`] or every sender is gone. Engine errors fail the
/// requests in flight and are logged; the loop goes on with an empty engine. With `check`,
/// the pool's invariants are checked after every step and command.
pub fn run(
    mut engine: Engine<'_>,
    commands: Receiver<Command>,
    metrics: Arc<Metrics>,
    check: bool,
) {
    let mut routes: HashMap<RequestId, Route> = HashMap::new();
    loop {
        // Idle: wait for work (waking now and then to refresh the gauges).
        if !engine.has_unfinished() {
            publish(&engine, &metrics, &routes);
            match commands.recv_timeout(Duration::from_millis(500)) {
                Ok(c) => {
                    if !apply(&mut engine, &mut routes, &metrics, c) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        loop {
            match commands.try_recv() {
                Ok(c) => {
                    if !apply(&mut engine, &mut routes, &metrics, c) {
                        return;
                    }
                    if check {
                        check_invariants(&engine, &metrics);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if !engine.has_unfinished() {
            continue;
        }
        let step = match engine.step() {
            Ok(s) => s,
            Err(e) => {
                log::error!("engine step failed: {e}; failing {} requests", routes.len());
                for (id, r) in routes.drain() {
                    if r.first_token.is_none() {
                        metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    }
                    let _ = engine.cancel(id);
                    let _ = r.events.send(Event::Failed(e.to_string()));
                }
                continue;
            }
        };
        let now = Instant::now();
        let mut gone = Vec::new();
        for t in step.tokens {
            let Some(r) = routes.get_mut(&t.id) else { continue };
            if r.first_token.is_none() {
                r.first_token = Some(now);
                metrics.queued.fetch_sub(1, Ordering::Relaxed);
                metrics.ttft.observe(now.duration_since(r.submitted).as_secs_f64());
            } else if let Some(prev) = r.last_token.get(&t.sample) {
                metrics.itl.observe(now.duration_since(*prev).as_secs_f64());
            }
            r.last_token.insert(t.sample, now);
            metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
            let id = t.id;
            if r.events.send(Event::Token(t)).is_err() {
                gone.push(id);
            }
        }
        for out in step.finished {
            if let Some(r) = routes.remove(&out.id) {
                let _ = r.events.send(Event::Done(out));
            }
        }
        for id in gone {
            if routes.remove(&id).is_some() {
                let _ = engine.cancel(id);
                metrics.count_outcome("disconnected");
            }
        }
        publish(&engine, &metrics, &routes);
        if check {
            check_invariants(&engine, &metrics);
        }
    }
}

fn check_invariants(engine: &Engine<'_>, metrics: &Metrics) {
    if let Err(e) = engine.check_invariants() {
        log::error!("page pool invariant violated: {e}");
        metrics.invariant_violations.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a request's events go, and its timing.
struct Route {
    events: UnboundedSender<Event>,
    submitted: Instant,
    first_token: Option<Instant>,
    last_token: HashMap<usize, Instant>,
}

/// Applies one command; `false` means leave the loop.
fn apply(
    engine: &mut Engine<'_>,
    routes: &mut HashMap<RequestId, Route>,
    metrics: &Metrics,
    command: Command,
) -> bool {
    match command {
        Command::Submit { request, events } => {
            let id = request.id;
            match engine.submit(*request) {
                Ok(_) => {
                    let route = Route {
                        events,
                        submitted: Instant::now(),
                        first_token: None,
                        last_token: HashMap::new(),
                    };
                    routes.insert(id, route);
                }
                Err(e) => {
                    metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    let _ = events.send(Event::Refused(e));
                }
            }
        }
        Command::Cancel(id) => {
            if let Some(r) = routes.remove(&id) {
                metrics.count_outcome("disconnected");
                if r.first_token.is_none() {
                    metrics.queued.fetch_sub(1, Ordering::Relaxed);
                }
                if let Err(e) = engine.cancel(id) {
                    log::error!("cancelling {id}: {e}");
                }
            }
        }
        Command::CancelAll => {
            for (id, r) in routes.drain() {
                if r.first_token.is_none() {
                    metrics.queued.fetch_sub(1, Ordering::Relaxed);
                }
                let _ = engine.cancel(id);
                let _ = r.events.send(Event::Cancelled);
            }
        }
        Command::Exit => return false,
    }
    true
}

/// Copies the engine's gauges into the metrics.
fn publish(engine: &Engine<'_>, metrics: &Metrics, routes: &HashMap<RequestId, Route>) {
    let pool = engine.cache().pool();
    let s = engine.stats();
    let g = &metrics.gauges;
    g.running.store(engine.num_running(), Ordering::Relaxed);
    g.waiting.store(engine.num_waiting(), Ordering::Relaxed);
    g.in_flight.store(routes.len(), Ordering::Relaxed);
    g.pages_total.store(pool.capacity(), Ordering::Relaxed);
    g.pages_free.store(pool.free_count(), Ordering::Relaxed);
    g.pages_held.store(engine.pages_held(), Ordering::Relaxed);
    g.pages_cached.store(engine.prefix_index().len(), Ordering::Relaxed);
    g.prefix_lookups.store(s.prefix_lookups as usize, Ordering::Relaxed);
    g.prefix_hits.store(s.prefix_hits as usize, Ordering::Relaxed);
    g.prefill_skipped.store(s.prefill_skipped as usize, Ordering::Relaxed);
    g.preemptions.store(s.preemptions as usize, Ordering::Relaxed);
    g.grammar_masks.store(s.masks as usize, Ordering::Relaxed);
    g.grammar_mask_us.store(s.mask_time.as_micros() as usize, Ordering::Relaxed);
    g.grammar_mask_wait_us.store(s.mask_wait.as_micros() as usize, Ordering::Relaxed);
}

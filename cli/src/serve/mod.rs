//! `pagoda serve`: an OpenAI-compatible HTTP server on the engine.
//!
//! ```text
//!   clients ──HTTP──► axum handlers (tokio, one thread) ──Command──► engine thread
//!                     parse, tokenize, template          ◄──Event──  step(), sample, route
//!                     stop strings, JSON / SSE out
//! ```
//!
//! | file            | what it holds                                                       |
//! |-----------------|---------------------------------------------------------------------|
//! | `routes`        | the endpoints and the response objects (JSON and server-sent events) |
//! | `openai`        | request bodies read field by field; the OpenAI error object          |
//! | `generation`    | one request on the handler side: text per sample, stop strings, cancel on drop |
//! | `worker`        | the engine thread: commands in, token events out                    |
//! | `metrics`       | `/metrics` in Prometheus' text format                               |
//!
//! SIGTERM / SIGINT: the server stops accepting requests (`/health` says so), lets the
//! requests in flight finish for up to `--grace` seconds, cancels the rest, and exits 0.

mod generation;
mod metrics;
mod openai;
mod routes;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use pagoda_cpu::chat::ChatTemplate;
use pagoda_cpu::engine::Engine;

use crate::common::{load, read_text_file, CliResult, EngineArgs, ModelArgs};
use crate::constraint::ConstraintArgs;
use pagoda_cpu::grammar::TokenEnv;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long = "host", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long = "port", default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/ endpoints.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Most requests waiting for their first token; more get 503 with Retry-After.
    #[arg(long = "max-queue", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_queue: u32,
    /// A Jinja chat template to use instead of the model's.
    #[arg(long = "chat-template")]
    chat_template: Option<PathBuf>,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds the requests in flight may take to finish after SIGTERM.
    #[arg(long = "grace", default_value_t = 10)]
    grace: u64,
    /// Keep generating past end-of-turn tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Check the page pool's invariants after every engine step (tests; slow): a violation
    /// is logged and counted in /metrics as pagoda_invariant_violations_total.
    #[arg(long = "check-invariants", hide = true)]
    check_invariants: bool,
    /// The default output constraint of requests without `response_format`.
    #[command(flatten)]
    constraint: ConstraintArgs,
}

pub fn main(a: ServeArgs) -> CliResult {
    let addr: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (a.host.as_str(), a.port).to_socket_addrs().ok().and_then(|mut i| i.next()).ok_or(())
        })
        .map_err(|_| format!("--host '{}': not an address this machine can listen on", a.host))?;
    // Read and parsed before the model loads: a bad file fails at once.
    let default_spec = a.constraint.spec()?;
    let loaded = load(&a.model)?;
    let model_path =
        a.model.model.clone().unwrap_or_else(pagoda_cpu::model_file::default_model_path);
    let model_id = model_path
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    let tokenizer = Arc::new(loaded.tokenizer);
    let template = match &a.chat_template {
        Some(path) => {
            let src = read_text_file(path)?;
            let text = |t: Option<u32>| {
                t.and_then(|t| tokenizer.token_text(t)).unwrap_or_default().to_string()
            };
            ChatTemplate::new(&src, &text(tokenizer.bos()), &text(tokenizer.eos()))
                .map_err(|e| format!("--chat-template '{}': {e}", path.display()))?
        }
        None => ChatTemplate::from_model(&loaded.model.gguf(), &tokenizer)
            .map_err(|e| format!("the model's chat template: {e}"))?,
    };
    let config = a.engine.config();
    let n_ctx = loaded.model.config().context_length;
    let max_context = n_ctx.min(config.kv_pages.saturating_mul(config.block_size));
    let evicting = a.engine.kv_policy.evicts();
    let grammar_env = std::sync::OnceLock::new();
    let default_constraint = match default_spec {
        Some((spec, what)) => {
            let env = TokenEnv::new(&tokenizer).map_err(|e| format!("{what}: {e}"))?;
            let grammar = pagoda_cpu::grammar::Grammar::compile(&env, spec)
                .map_err(|e| format!("{what}: {e}"))?;
            let _ = grammar_env.set(Ok(env));
            Some(Arc::new(grammar))
        }
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let (commands, command_rx) = std::sync::mpsc::channel();
    let state = Arc::new(routes::AppState {
        commands,
        tokenizer: tokenizer.clone(),
        template,
        model_id,
        max_context,
        evicting,
        max_queue: a.max_queue as usize,
        api_key: a.api_key.clone(),
        metrics: metrics.clone(),
        stop_tokens: if a.ignore_eos { Vec::new() } else { tokenizer.eog_ids().to_vec() },
        grammar_env,
        default_constraint,
        next_id: AtomicU64::new(1),
        shutting_down: AtomicBool::new(false),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    // The engine owns its model (shared) and lives on a thread of its own.
    let model = Arc::new(loaded.model);
    let engine =
        Engine::shared(model, config, a.engine.kv_policy)?.with_tokenizer(tokenizer.clone());
    let check = a.check_invariants;
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || worker::run(engine, command_rx, metrics, check))
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    let served = serve_http(&a, addr, state.clone());
    // Whatever happened, the engine thread stops.
    let _ = state.commands.send(worker::Command::CancelAll);
    let _ = state.commands.send(worker::Command::Exit);
    engine_thread.join().map_err(|_| "the engine thread panicked")?;
    served
}

/// Runs the HTTP side on a single-threaded tokio runtime until a signal ends it.
fn serve_http(a: &ServeArgs, addr: SocketAddr, state: Arc<routes::AppState>) -> CliResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server's runtime: {e}"))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| format!("{addr}: {e}"))?;
        eprintln!("pagoda serve: listening on http://{local} (model {})", state.model_id);
        let app = routes::router(state.clone(), a.max_body);
        let grace = Duration::from_secs(a.grace);
        let shutdown_state = state.clone();
        let shutdown = async move {
            wait_for_signal().await;
            let s = shutdown_state;
            s.shutting_down.store(true, Ordering::SeqCst);
            let in_flight = s.metrics.gauges.in_flight.load(Ordering::Relaxed);
            eprintln!(
                "pagoda serve: shutting down; {in_flight} requests in flight get {}s to finish",
                grace.as_secs()
            );
            let commands = s.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = commands.send(worker::Command::CancelAll);
            });
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
        server.await.map_err(|e| format!("server: {e}"))?;
        eprintln!("pagoda serve: stopped");
        Ok(())
    })
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            log::warn!("cannot install signal handlers; stop the server with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ticketdesk::cli::{Cli, Command};
use ticketdesk::config::{self, Config, JwtSecret};
use ticketdesk::state::AppState;
use ticketdesk::{api, clocks, demo, files, server, store, telemetry, webhooks};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    return_large_allocations_to_the_os();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Argon2 allocates 19 MiB per password hash. glibc raises its mmap threshold once such a block
/// is freed and then serves later ones from per-thread arenas that keep the memory, so a burst
/// of logins left hundreds of MiB resident. A fixed threshold keeps large blocks mmap-backed,
/// handed back to the OS as soon as they are freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_allocations_to_the_os() {
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: mallopt only tunes glibc's allocator; it runs before any other thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_allocations_to_the_os() {}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        let document = api::openapi().to_pretty_json().expect("the OpenAPI document serializes");
        // A reader that stops early (`| head`) is not a failure.
        return match writeln!(std::io::stdout().lock(), "{document}") {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("writing the document failed: {error}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }

    let _ = dotenvy::dotenv();
    match config::json_logs_from_env() {
        Ok(json) => telemetry::init(json),
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    }
    let outcome = async {
        let config = Config::from_env()?;
        match cli.command {
            None => serve(config, cli.demo).await,
            Some(Command::Serve { demo }) => serve(config, demo || cli.demo).await,
            Some(Command::Migrate) => {
                store::connect(&config.database_url, &config.database_pool).await?;
                tracing::info!(database = %config.database_url.redacted(), "migrations are applied");
                Ok(())
            }
            Some(Command::User(command)) => {
                let mut input = std::io::stdin().lock();
                Ok(ticketdesk::cli::run_user_command(command, &config, &mut input, &mut std::io::stdout())
                    .await?)
            }
            Some(Command::Openapi) => unreachable!("handled before reading settings"),
        }
    };
    match outcome.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// How often expired uploads are looked for.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn serve(config: Config, demo_users: bool) -> Result<(), Box<dyn std::error::Error>> {
    if let JwtSecret::Generated(_) = config.jwt_secret {
        tracing::warn!("JWT_SECRET is not set: using a random one, so tokens will not survive a restart");
    }
    tracing::info!(database = %config.database_url.redacted(), "opening the database");
    let store = store::connect(&config.database_url, &config.database_pool).await?;
    // The one stop signal: the listeners stop accepting, live streams end, the delivery worker
    // claims no more.
    let shutdown = CancellationToken::new();
    let files = files::Files::open(&config.attachments.storage)?;
    let state = AppState::new(&config, store.clone(), files.clone(), shutdown.clone());
    if demo_users {
        let created = demo::ensure_demo_users(state.store.as_ref(), &state.passwords).await?;
        tracing::info!(?created, "demo users alice/alice123, bob/bob123 and carol/carol123 are ready");
    }

    let listener = tokio::net::TcpListener::bind(config.bind_addr).await?;
    tracing::info!(
        "listening on http://{}; Swagger UI at http://{}/docs",
        config.bind_addr,
        config.bind_addr
    );
    let options = server::ServeOptions::new(&config);
    let metrics = match config.metrics_addr {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address).await?;
            tracing::info!("metrics at http://{address}/metrics");
            let app = api::metrics_router(state.clone());
            Some(tokio::spawn(server::serve(
                listener,
                app,
                shutdown.clone().cancelled_owned(),
                options.clone(),
            )))
        }
        None => None,
    };
    // `WEBHOOK_MAX_CONCURRENT=0`: this server delivers none (others on the database do).
    let delivery = (config.webhooks.max_concurrent > 0).then(|| {
        webhooks::start(store.clone(), &config.webhooks, state.metrics.webhook_attempts(), shutdown.clone())
    });
    let sweeper = files::start_sweeper(store.clone(), files, SWEEP_EVERY, shutdown.clone());
    let evaluator =
        clocks::start(store.clone(), state.metrics.sla_breaches(), clocks::CHECK_EVERY, shutdown.clone());
    let api = server::serve(listener, api::router(state), shutdown.clone().cancelled_owned(), options);
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.cancel();
    });
    api.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    // The worker records its last attempts, the sweeper its last sweep and the evaluator its last
    // check, before the store closes.
    if let Some(delivery) = delivery {
        let _ = delivery.await;
    }
    let _ = sweeper.await;
    let _ = evaluator.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

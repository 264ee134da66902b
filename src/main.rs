use std::process::ExitCode;

use ticketdesk::config::{Config, JwtSecret};
use ticketdesk::state::AppState;
use ticketdesk::{api, demo, store};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
Usage: ticketdesk [--demo]

Serves the Ticket Management API (Swagger UI at /docs).

Options:
  --demo     create the demo users alice, bob and carol if they do not exist
  -h, --help show this help

Settings come from the environment or a .env file: BIND_ADDR, DATABASE_URL, JWT_SECRET,
ACCESS_TOKEN_TTL_SECS, PUBLIC_BASE_URL, SELF_REGISTRATION, RUST_LOG (see .env.example).";

#[tokio::main]
async fn main() -> ExitCode {
    let mut demo_users = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--demo" => demo_users = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }

    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    match serve(demo_users).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(demo_users: bool) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    if let JwtSecret::Generated(_) = config.jwt_secret {
        tracing::warn!("JWT_SECRET is not set: using a random one, so tokens will not survive a restart");
    }
    tracing::info!(database = %config.database_url.redacted(), "opening the database");
    let store = store::connect(&config.database_url).await?;
    let state = AppState::new(&config, store);
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
    axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown_signal()).await?;
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

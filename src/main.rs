//! The `electiond` binary: load settings, set up logging, bind, run. Nothing else.

use std::process::ExitCode;

use electiond::config::Settings;

fn main() -> ExitCode {
    match electiond::runtime() {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("electiond: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("electiond: {e}");
            return ExitCode::FAILURE;
        }
    };
    electiond::telemetry::init(settings.log_format, &settings.log_level);
    let listener = match tokio::net::TcpListener::bind(settings.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %settings.listen_addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %settings.listen_addr, "electiond listening");
    match electiond::run(settings, listener, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("electiond stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "electiond failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}

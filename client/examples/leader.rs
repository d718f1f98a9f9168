//! Campaigns for an election and "works" while leader, handing the term id to the work as its
//! fencing token, until leadership is lost or Ctrl-C.
//!
//! ```sh
//! cargo run --release &                      # a replica, on 127.0.0.1:5678
//! cargo run -p electiond-client --example leader -- nightly-report worker-1
//! ```

use std::time::Duration;

use electiond_client::Client;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "nightly-report".into());
    let id = args.next().unwrap_or_else(|| "worker-1".into());
    let endpoints = std::env::var("ELECTION_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:5678".into());
    let client = Client::builder(endpoints.split(',').map(str::to_owned)).build()?;

    println!("{id}: campaigning for {name}");
    let leadership = client.campaign(&name, &id).await?;
    let token = leadership.term_id();
    println!("{id}: leader under term {token}");

    let work = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            // every side effect carries the token; its receiver rejects lower ones
            println!("{id}: working (fencing token {token})");
        }
    };
    tokio::select! {
        reason = leadership.lost() => {
            println!("{id}: stopped working: {reason}");
        }
        _ = tokio::signal::ctrl_c() => {
            println!("{id}: resigning");
            leadership.resign().await?;
        }
        _ = work => {}
    }
    Ok(())
}

//! `electionctl`: read and change elections from the command line, and run a program as the
//! leader of one (`electionctl run`). Terms are printed as one JSON line each.

mod json;
mod run;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use electiond_client::{Client, Error};

/// Talk to electiond: read and change elections, or run a command as an election's leader.
///
/// Exit status: 0 done; 1 the service refused or could not be reached; 2 bad usage; 3
/// (`run`) leadership was lost while the command ran.
#[derive(Debug, Parser)]
#[command(name = "electionctl", version)]
struct Cli {
    /// Replicas to talk to, comma-separated; `host:port` means `http://host:port`.
    #[arg(
        long,
        env = "ELECTION_ENDPOINTS",
        default_value = "http://127.0.0.1:5678",
        value_delimiter = ',',
        global = true
    )]
    endpoints: Vec<String>,
    /// Bearer token, when the service requires one.
    #[arg(long, env = "ELECTION_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA to verify `https://` endpoints with (default: the system's roots).
    #[arg(long, env = "ELECTION_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate for `https://` endpoints, when the service takes certificates
    /// as credentials (with --key).
    #[arg(long, env = "ELECTION_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "ELECTION_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// How `ls` and `history` print: one JSON line each, or aligned columns for people.
    #[arg(long, value_enum, default_value = "json", global = true)]
    output: Output,
    /// Bound on one call, connecting included (for example 500ms, 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Json,
    Table,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List elections: name, term id, leader, candidates, when it last changed.
    Ls {
        /// Only elections whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// The election's last changes of leader, newest first: term id, new leader, when, why
    /// (enter, withdraw, expired, evict, anoint, promote, restore, delete).
    History {
        /// The election's name.
        name: String,
        /// At most this many (0: all the service keeps).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Print the election's term as one JSON line.
    Get {
        /// The election's name.
        name: String,
    },
    /// Print the term, then one line per change; resumes on another replica when one goes
    /// away.
    Watch {
        /// The election's name.
        name: String,
    },
    /// Become a candidate as ID.
    Enter {
        /// The election's name.
        name: String,
        /// The candidate's id (for example the host name).
        #[arg(long)]
        id: String,
    },
    /// Stop being a candidate as ID.
    Withdraw {
        /// The election's name.
        name: String,
        /// The candidate's id (for example the host name).
        #[arg(long)]
        id: String,
    },
    /// Make CANDIDATE the leader.
    Anoint {
        /// The election's name.
        name: String,
        /// The candidate acted on.
        candidate: String,
    },
    /// Move CANDIDATE one place up.
    Promote {
        /// The election's name.
        name: String,
        /// The candidate acted on.
        candidate: String,
    },
    /// Remove CANDIDATE.
    Evict {
        /// The election's name.
        name: String,
        /// The candidate acted on.
        candidate: String,
    },
    /// Wipe the election (its ids start again at 0).
    Delete {
        /// The election's name.
        name: String,
    },
    /// Print the election's full term as JSON, for `restore`.
    Snapshot {
        /// The election's name.
        name: String,
    },
    /// Replace the election's candidates with a snapshot read from standard input.
    Restore {
        /// The election's name.
        name: String,
    },
    /// Campaign as ID; once leader, run CMD, and stop it when leadership is lost.
    ///
    /// CMD runs in its own process group with ELECTION_NAME, ELECTION_CANDIDATE_ID and
    /// ELECTION_TERM_ID (the fencing token) in its environment, and is killed if electionctl
    /// itself dies. When leadership is lost (another leader, evicted, or no refresh
    /// acknowledged in time) the group gets SIGTERM, SIGKILL after --kill-grace, and
    /// electionctl exits with 3. When CMD exits by itself, electionctl withdraws and exits
    /// with CMD's status. On SIGTERM or SIGINT it stops CMD first, then withdraws, so a
    /// successor starts at once.
    Run {
        /// The election's name.
        name: String,
        /// The candidate's id (for example the host name).
        #[arg(long)]
        id: String,
        /// How long CMD has to exit after SIGTERM before SIGKILL.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        kill_grace: Duration,
        /// How long before the lease could lapse CMD is told to stop (default: the kill
        /// grace plus a tenth of the service's TTL, so CMD is gone before anyone else can
        /// lead).
        #[arg(long, value_parser = parse_duration)]
        margin: Option<Duration>,
        /// Run CMD with `sh -c` (one string).
        #[arg(long)]
        shell: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, num_args = 1..)]
        cmd: Vec<String>,
    },
}

/// `500ms`, `5s`, `2m`, or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 500ms, 5s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Exit statuses.
const SERVICE_ERROR: u8 = 1;
const USAGE: u8 = 2;

fn fail(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("electionctl: {msg}");
    ExitCode::from(code)
}

fn client(cli: &Cli, margin: Option<Duration>) -> Result<Client, Error> {
    let mut b = Client::builder(cli.endpoints.clone()).timeout(cli.timeout);
    if let Some(t) = &cli.token {
        b = b.token(t.clone());
    }
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
    };
    if let Some(path) = &cli.ca_cert {
        b = b.ca_pem(read(path)?);
    }
    if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
        b = b.identity(read(cert)?, read(key)?);
    }
    if let Some(m) = margin {
        b = b.margin(m);
    }
    b.build()
}

// One thread: the child's parent-death signal fires when the thread that started it ends,
// and the main thread lives as long as the process.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let margin = match &cli.command {
        Command::Run { margin, .. } => *margin,
        _ => None,
    };
    let c = match client(&cli, margin) {
        Ok(c) => c,
        Err(e) => return fail(e, USAGE),
    };
    // a command that answers with a term prints it as one JSON line
    let answered = match &cli.command {
        Command::Ls { prefix } => return listed(&c, prefix, cli.output).await,
        Command::History { name, limit } => {
            return match c.history(name, *limit).await {
                Ok(changes) => {
                    print_history(&changes, cli.output);
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
        Command::Get { name } => c.get(name).await.map(Some),
        Command::Snapshot { name } => c.snapshot(name).await.map(Some),
        Command::Enter { name, id } => c.enter(name, id).await.map(Some),
        Command::Withdraw { name, id } => c.withdraw(name, id).await.map(Some),
        Command::Anoint { name, candidate } => c.anoint(name, candidate).await.map(Some),
        Command::Promote { name, candidate } => c.promote(name, candidate).await.map(Some),
        Command::Evict { name, candidate } => c.evict(name, candidate).await.map(Some),
        Command::Delete { name } => c.delete(name).await.map(|_| None),
        Command::Restore { name } => {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                return fail(format!("cannot read the snapshot from stdin: {e}"), USAGE);
            }
            match json::parse_term(&text) {
                Ok(term) => c.restore(name, &term).await.map(|_| None),
                Err(e) => return fail(format!("the snapshot on stdin: {e}"), USAGE),
            }
        }
        Command::Watch { name } => {
            let mut w = c.watch(name);
            loop {
                match w.next().await {
                    Ok(item) => println!("{}", json::item(&item)),
                    Err(e) => break Err(e),
                }
            }
        }
        Command::Run {
            name,
            id,
            kill_grace,
            shell,
            cmd,
            ..
        } => {
            // the stop must begin early enough for the grace to run out before the lease can
            let ttl = match c.lease_ttl(name).await {
                Ok(t) => t,
                Err(e) => return fail(e, SERVICE_ERROR),
            };
            let margin = margin.unwrap_or(*kill_grace + ttl / 10);
            if !ttl.is_zero() && margin >= ttl {
                return fail(
                    format!(
                        "the margin ({margin:?}, by default --kill-grace plus a tenth of the \
                         TTL) must be shorter than the service's lease TTL ({ttl:?})"
                    ),
                    USAGE,
                );
            }
            let c = match client(&cli, Some(margin)) {
                Ok(c) => c,
                Err(e) => return fail(e, USAGE),
            };
            let opts = run::Options {
                name: name.clone(),
                id: id.clone(),
                kill_grace: *kill_grace,
                shell: *shell,
                cmd: cmd.clone(),
            };
            return run::run(c, opts).await;
        }
    };
    match answered {
        Ok(term) => {
            if let Some(t) = term {
                println!("{}", json::term(&t));
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

fn failed(e: Error) -> ExitCode {
    match e {
        e @ (Error::InvalidArgument(_) | Error::Config(_)) => fail(e, USAGE),
        e => fail(e, SERVICE_ERROR),
    }
}

/// Every page of the listing: JSON lines as each page comes, or one table at the end.
async fn listed(c: &Client, prefix: &str, output: Output) -> ExitCode {
    let mut token: Option<String> = None;
    let mut rows = Vec::new();
    let now = std::time::SystemTime::now();
    loop {
        let page = match c.list(prefix, 0, token.as_deref()).await {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        for e in &page.elections {
            match output {
                Output::Json => println!("{}", json::election(e)),
                Output::Table => rows.push(vec![
                    json::shown(&e.name),
                    e.id.to_string(),
                    json::shown(e.leader.as_deref().unwrap_or("")),
                    e.candidates.to_string(),
                    json::when(e.changed, now),
                ]),
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if output == Output::Table {
        let header = ["NAME", "TERM", "LEADER", "CANDIDATES", "CHANGED"];
        print!("{}", json::table(&header, &rows));
    }
    ExitCode::SUCCESS
}

fn print_history(changes: &[electiond_client::Change], output: Output) {
    match output {
        Output::Json => {
            for c in changes {
                println!("{}", json::change(c));
            }
        }
        Output::Table => {
            let now = std::time::SystemTime::now();
            let rows: Vec<Vec<String>> = changes
                .iter()
                .map(|c| {
                    vec![
                        json::when(c.at, now),
                        c.id.to_string(),
                        json::shown(c.leader.as_deref().unwrap_or("")),
                        c.cause.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                json::table(&["WHEN", "TERM", "LEADER", "CAUSE"], &rows)
            );
        }
    }
}

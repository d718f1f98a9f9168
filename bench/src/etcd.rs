//! The same writes and reads through etcd's election API and through electiond, in one run on
//! one machine: a private `etcd` (when one is on PATH; Debian: `apt-get install etcd-server`)
//! with its data in a temporary directory, driven by the same generator, with the same number
//! of clients and connections.
//!
//! - writes: each client alternates Campaign and Resign (electiond: Enter and Withdraw) on
//!   elections of its own, so a Campaign never waits for another client's leadership;
//! - reads: Leader (electiond: GetTerm) on elections that each have one leader.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::process::Command;

use super::cpu::{Meter, PerCall};
use super::procs::{free_port, Proc};
use super::report::Measured;
use super::*;

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

use etcdserverpb::lease_client::LeaseClient;
use v3electionpb::election_client::ElectionClient;

/// One side's figures for one kind of call.
#[derive(Debug, Serialize)]
pub struct Side {
    pub calls: Latency,
    /// For etcd, `replicas_us` is the etcd server's CPU.
    pub cpu: Option<PerCall>,
}

/// electiond beside etcd.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub etcd_version: String,
    pub writes_electiond: Side,
    pub writes_etcd: Side,
    pub reads_electiond: Side,
    pub reads_etcd: Side,
}

impl Comparison {
    pub fn table(&self) -> String {
        let row = |name: &str, s: &Side| {
            format!(
                "  {name:<28} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  failed {:>4}  cpu/call: {}\n",
                s.calls.per_second,
                s.calls.p50_us as f64 / 1000.0,
                s.calls.p99_us as f64 / 1000.0,
                s.calls.failed,
                s.cpu.as_ref().map_or("-".to_owned(), PerCall::row)
            )
        };
        let ratio = |a: &Side, b: &Side| {
            if b.calls.per_second > 0.0 {
                format!("{:.1}x", a.calls.per_second / b.calls.per_second)
            } else {
                "-".to_owned()
            }
        };
        let mut out = format!(
            "beside etcd {} (cpu/call, µs: {}; for etcd the server's in the second column)\n",
            self.etcd_version,
            PerCall::columns()
        );
        out += &row("writes: electiond", &self.writes_electiond);
        out += &row("writes: etcd Campaign+Resign", &self.writes_etcd);
        out += &row("reads: electiond GetTerm", &self.reads_electiond);
        out += &row("reads: etcd Leader", &self.reads_etcd);
        out += &format!(
            "  electiond / etcd: writes {}, reads {}\n",
            ratio(&self.writes_electiond, &self.writes_etcd),
            ratio(&self.reads_electiond, &self.reads_etcd)
        );
        out
    }
}

/// Runs the comparison; `None` (with a note) when there is no `etcd` to start.
pub async fn compare(
    args: &Args,
    channels: &[Channel],
    meter: &mut Meter,
    duration: Duration,
) -> Result<Option<Comparison>, String> {
    let Some(version) = etcd_version() else {
        eprintln!("etcd: skipped, no `etcd` on PATH (Debian: apt-get install etcd-server)");
        return Ok(None);
    };
    let (etcd, url, dir) = start_etcd().await?;
    let result = run(args, channels, meter, duration, &etcd, &url, version).await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(Some)
}

async fn run(
    args: &Args,
    channels: &[Channel],
    meter: &mut Meter,
    duration: Duration,
    etcd: &Proc,
    url: &str,
    etcd_version: String,
) -> Result<Comparison, String> {
    let mut etcd_meter = Meter {
        replicas: etcd.pid().into_iter().collect(),
        redis: None,
    };
    let etcd_channels = connect_url(url, args.connections).await?;
    // every client holds one lease for all its elections, as a real campaigner would
    let mut leases = Vec::with_capacity(args.clients);
    for k in 0..args.clients {
        let mut l = LeaseClient::new(etcd_channels[k % etcd_channels.len()].clone());
        let r = l
            .lease_grant(etcdserverpb::LeaseGrantRequest { ttl: 600, id: 0 })
            .await
            .map_err(|e| format!("etcd LeaseGrant: {e}"))?;
        leases.push(r.into_inner().id);
    }
    let own = |k: usize, i: u64| format!("own-{k}-{}", (i / 2) % 8);

    let writes_electiond = side(
        meter
            .measure(drive(
                "etcd comparison: electiond writes",
                args.clients,
                duration,
                grpc_enter_withdraw_client(channels, own),
            ))
            .await,
    );
    let writes_etcd = side(
        etcd_meter
            .measure(drive(
                "etcd comparison: etcd writes",
                args.clients,
                duration,
                |k| {
                    let c = ElectionClient::new(etcd_channels[k % etcd_channels.len()].clone());
                    let lease = leases[k];
                    let held: Arc<Mutex<Option<v3electionpb::LeaderKey>>> = Arc::default();
                    Box::new(move |i| {
                        let (mut c, held, name) = (c.clone(), held.clone(), own(k, i));
                        Box::pin(
                            async move { campaign_or_resign(&mut c, &held, name, lease).await },
                        )
                    })
                },
            ))
            .await,
    );

    // reads: one leader in each of `elections` elections, on both sides
    let e = args.elections;
    let holder_lease = leases[0];
    let mut c = ElectionClient::new(etcd_channels[0].clone());
    for j in 0..e {
        c.campaign(v3electionpb::CampaignRequest {
            name: format!("read-{j}").into_bytes(),
            lease: holder_lease,
            value: b"holder".to_vec(),
        })
        .await
        .map_err(|e| format!("etcd Campaign: {e}"))?;
    }
    let results: Vec<Result<(), String>> = futures::stream::iter(0..e)
        .map(|j| {
            let mut c = Grpc::new(channels[j % channels.len()].clone());
            async move { grpc_enter_withdraw(&mut c, &format!("read-{j}"), "holder", true).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), String>>()?;
    let read_name = move |k: usize, i: u64| format!("read-{}", (k * 7919 + i as usize) % e);

    let reads_electiond = side(
        meter
            .measure(drive(
                "etcd comparison: electiond reads",
                args.clients,
                duration,
                |k| {
                    let c = Grpc::new(channels[k % channels.len()].clone());
                    Box::new(move |i| {
                        let (mut c, name) = (c.clone(), read_name(k, i));
                        Box::pin(async move {
                            let req = epb::GetTermRequest {
                                header: header(&name, ""),
                                input: Some(epb::GetTermInput {}),
                            };
                            c.get_term(signed(req))
                                .await
                                .map(|_| ())
                                .map_err(|s| s.to_string())
                        })
                    })
                },
            ))
            .await,
    );
    let reads_etcd = side(
        etcd_meter
            .measure(drive(
                "etcd comparison: etcd reads",
                args.clients,
                duration,
                |k| {
                    let c = ElectionClient::new(etcd_channels[k % etcd_channels.len()].clone());
                    Box::new(move |i| {
                        let (mut c, name) = (c.clone(), read_name(k, i));
                        Box::pin(async move {
                            let r = c
                                .leader(v3electionpb::LeaderRequest {
                                    name: name.into_bytes(),
                                })
                                .await
                                .map_err(|s| s.to_string())?;
                            match r.into_inner().kv {
                                Some(_) => Ok(()),
                                None => Err("etcd Leader: no leader".to_owned()),
                            }
                        })
                    })
                },
            ))
            .await,
    );
    Ok(Comparison {
        etcd_version,
        writes_electiond,
        writes_etcd,
        reads_electiond,
        reads_etcd,
    })
}

fn side(m: Measured) -> Side {
    Side {
        calls: m.0,
        cpu: m.1,
    }
}

/// Campaign when holding nothing, else Resign what is held.
async fn campaign_or_resign(
    c: &mut ElectionClient<Channel>,
    held: &Mutex<Option<v3electionpb::LeaderKey>>,
    name: String,
    lease: i64,
) -> Result<(), String> {
    let leader = held.lock().map_err(|e| e.to_string())?.take();
    match leader {
        None => {
            let r = c
                .campaign(v3electionpb::CampaignRequest {
                    name: name.into_bytes(),
                    lease,
                    value: b"bench".to_vec(),
                })
                .await
                .map_err(|s| s.to_string())?;
            *held.lock().map_err(|e| e.to_string())? = r.into_inner().leader;
        }
        Some(key) => {
            c.resign(v3electionpb::ResignRequest { leader: Some(key) })
                .await
                .map_err(|s| s.to_string())?;
        }
    }
    Ok(())
}

fn etcd_version() -> Option<String> {
    let out = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("etcd Version:"))?;
    Some(line.trim().to_owned())
}

/// A one-member etcd on free ports, its data in a fresh temporary directory.
async fn start_etcd() -> Result<(Proc, String, PathBuf), String> {
    let dir = std::env::temp_dir().join(format!("election-bench-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let client = free_port().map_err(|e| e.to_string())?;
    let peer = free_port().map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(&dir)
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start etcd: {e}"))?;
    let etcd = Proc { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(ch) = connect_url(&url, 1).await {
            let mut l = LeaseClient::new(ch[0].clone());
            if l.lease_grant(etcdserverpb::LeaseGrantRequest { ttl: 5, id: 0 })
                .await
                .is_ok()
            {
                return Ok((etcd, url, dir));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("etcd on {url} did not start"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect_url(url: &str, n: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let ch = Channel::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

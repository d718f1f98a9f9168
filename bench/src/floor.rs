//! The floor: what the same stack costs doing the least it can, measured in the same run as
//! the service, so that every figure has a ratio that holds on any host.
//!
//! - The floor server: this binary, started again with `--serve-floor`, serves the election
//!   API with tonic and prost on the runtime `electiond` uses, answering every call with one
//!   fixed term, with no storage. The same generator drives it with the reads' and the writes'
//!   calls; its CPU per call is the least a replica could spend on them.
//! - The minimal function: a Redis function that returns 1, called by 16 connections of one
//!   call in flight each (no pipelining). Redis's CPU per call is the least a function call
//!   can cost it.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;

use futures::Stream;
use serde::Serialize;
use tokio::process::Command;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use electiond::grpc::encoded::Encoded;
use electiond::proto::served::leader_election_service_server::{
    LeaderElectionService, LeaderElectionServiceServer,
};

use super::cpu::{Meter, PerCall};
use super::fanout::fan_out;
use super::report::{FanOut, Measured};
use super::*;

/// The floor's figures, and the service's beside them.
#[derive(Debug, Serialize)]
pub struct Floor {
    /// The floor server under the reads' calls (GetTerm).
    pub reads: Latency,
    pub reads_cpu: Option<PerCall>,
    /// The floor server under the writes' calls (Enter and Withdraw alternating).
    pub writes: Latency,
    pub writes_cpu: Option<PerCall>,
    /// Replica CPU per call ÷ the floor server's, for the reads and writes of this run.
    pub replica_ratio_reads: Option<f64>,
    pub replica_ratio_writes: Option<f64>,
    /// The minimal function at 16 connections.
    pub minimal_function: Latency,
    pub minimal_function_cpu: Option<PerCall>,
    /// Redis CPU per GetTerm, and per write, ÷ its CPU per minimal function call.
    pub redis_ratio_reads: Option<f64>,
    pub redis_ratio_writes: Option<f64>,
    /// The fan-out scenario again, on one floor server holding every stream (when the run
    /// had the fan-out scenario).
    pub fanout: Option<FanOut>,
    /// Replicas' CPU per delivered event ÷ the floor server's.
    pub fanout_ratio: Option<f64>,
}

impl Floor {
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let us = |c: &Option<PerCall>, f: fn(&PerCall) -> Option<f64>| {
            c.as_ref()
                .and_then(f)
                .map_or("-".to_owned(), |v| format!("{v:.1}"))
        };
        let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.2}x"));
        let _ = writeln!(out, "\nthe floor (same stack, least work), same run:");
        let _ = writeln!(
            out,
            "  floor server: reads {:.0}/s at {} µs of its CPU per call; writes {:.0}/s at {} µs",
            self.reads.per_second,
            us(&self.reads_cpu, |c| Some(c.replicas_us)),
            self.writes.per_second,
            us(&self.writes_cpu, |c| Some(c.replicas_us)),
        );
        let _ = writeln!(
            out,
            "  replica ÷ floor server, CPU per call: reads {}, writes {}",
            ratio(self.replica_ratio_reads),
            ratio(self.replica_ratio_writes)
        );
        let _ = writeln!(
            out,
            "  minimal function (return 1), 16 connections: {:.0}/s at {} µs of Redis CPU per call",
            self.minimal_function.per_second,
            us(&self.minimal_function_cpu, |c| c.redis_us),
        );
        let _ = writeln!(
            out,
            "  Redis CPU per call ÷ the minimal function's: GetTerm {}, write {}",
            ratio(self.redis_ratio_reads),
            ratio(self.redis_ratio_writes)
        );
        if let Some(f) = &self.fanout {
            out.push_str(&f.table("floor server"));
            let _ = writeln!(
                out,
                "  replicas ÷ floor server, CPU per delivered event: {}",
                ratio(self.fanout_ratio)
            );
        }
        out
    }
}

/// The term of an election of one candidate, as a replica would answer it, with term id `id`.
fn term(id: u64) -> Option<epb::Term> {
    Some(epb::Term {
        id: Some(pb::meta::Epoch { value: id }),
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_796_000_000,
            nanos: 123_456_000,
        }),
        leader: "c0".to_owned(),
        candidates: vec!["c0".to_owned()],
    })
}

fn header() -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        response_type: pb::ResponseType::Response as i32,
    })
}

/// Answers every call with the one election's term. Only an Anoint changes it: the term id
/// goes up by one and the new term goes to every Events stream, encoded once (as a replica
/// does), through one broadcast channel.
struct FloorServer {
    id: AtomicU64,
    changes: broadcast::Sender<Encoded>,
}

impl FloorServer {
    fn new() -> Self {
        Self {
            id: AtomicU64::new(1),
            changes: broadcast::channel(64).0,
        }
    }

    fn term(&self) -> Option<epb::Term> {
        term(self.id.load(Ordering::Relaxed))
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl LeaderElectionService for FloorServer {
    async fn enter(&self, _: Request<epb::EnterRequest>) -> Answer<epb::EnterResponse> {
        Ok(Response::new(epb::EnterResponse {
            header: header(),
            output: Some(epb::EnterOutput { term: self.term() }),
        }))
    }

    async fn withdraw(&self, _: Request<epb::WithdrawRequest>) -> Answer<epb::WithdrawResponse> {
        Ok(Response::new(epb::WithdrawResponse {
            header: header(),
            output: Some(epb::WithdrawOutput { term: self.term() }),
        }))
    }

    async fn anoint(&self, _: Request<epb::AnointRequest>) -> Answer<epb::AnointResponse> {
        let term = term(self.id.fetch_add(1, Ordering::Relaxed) + 1);
        // no stream open is no error: the change simply reaches nobody
        let _ = self.changes.send(Encoded::new(&epb::EventsResponse {
            header: header(),
            output: Some(epb::EventsOutput {
                r#type: epb::events_output::Type::Changed as i32,
                term: term.clone(),
            }),
        }));
        Ok(Response::new(epb::AnointResponse {
            header: header(),
            output: Some(epb::AnointOutput { term }),
        }))
    }

    async fn promote(&self, _: Request<epb::PromoteRequest>) -> Answer<epb::PromoteResponse> {
        Ok(Response::new(epb::PromoteResponse {
            header: header(),
            output: Some(epb::PromoteOutput { term: self.term() }),
        }))
    }

    async fn evict(&self, _: Request<epb::EvictRequest>) -> Answer<epb::EvictResponse> {
        Ok(Response::new(epb::EvictResponse {
            header: header(),
            output: Some(epb::EvictOutput { term: self.term() }),
        }))
    }

    async fn get_term(&self, _: Request<epb::GetTermRequest>) -> Answer<Encoded> {
        Ok(Response::new(Encoded::new(&epb::GetTermResponse {
            header: header(),
            output: Some(epb::GetTermOutput { term: self.term() }),
        })))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

    /// A handshake, as a replica sends, then every change from the broadcast channel.
    async fn events(&self, _: Request<epb::EventsRequest>) -> Answer<Self::EventsStream> {
        let handshake = Encoded::new(&epb::EventsResponse {
            header: header(),
            output: Some(epb::EventsOutput {
                r#type: epb::events_output::Type::None as i32,
                term: None,
            }),
        });
        let changes = futures::stream::unfold(self.changes.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((Ok(event), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(handshake) }).chain(changes),
        )))
    }

    async fn snapshot(&self, _: Request<epb::SnapshotRequest>) -> Answer<epb::SnapshotResponse> {
        Ok(Response::new(epb::SnapshotResponse {
            header: header(),
            snapshot: Some(epb::Snapshot { term: self.term() }),
        }))
    }

    async fn restore(&self, _: Request<epb::RestoreRequest>) -> Answer<epb::RestoreResponse> {
        Ok(Response::new(epb::RestoreResponse { header: header() }))
    }
}

/// Serves the floor on `addr` until killed (`--serve-floor`), on the runtime `electiond`
/// builds.
pub fn serve(addr: SocketAddr) -> Result<(), String> {
    let rt = electiond::runtime().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("floor server: {e}"))?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(LeaderElectionServiceServer::new(FloorServer::new()))
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| format!("floor server: {e}"))
    })
}

/// The floor, measured now with the same generator as the reads and writes; `loads` are this
/// run's loads, and `fanout` its fan-out scenario, for the ratios. With a fan-out, the floor
/// server takes the same streams and changes.
pub async fn floor(
    args: &Args,
    redis_url: &str,
    loads: &[Load],
    fanout: Option<&FanOut>,
    duration: Duration,
) -> Result<Floor, String> {
    let port = procs::free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let server = Command::new(exe)
        .arg("--serve-floor")
        .arg(addr.to_string())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("floor server: {e}"))?;
    let pid = server.id().ok_or("floor server: no pid")?;
    procs::wait_for_port(addr).await?;
    let channels = connect(addr, args.connections).await?;
    let mut meter = Meter {
        replicas: vec![pid],
        redis: None,
    };
    let (reads, reads_cpu) = meter
        .measure(drive(
            "floor: GetTerm",
            args.clients,
            duration,
            grpc_get_term_client(&channels, |k, i| {
                format!("r-{}", (k * 7919 + i as usize) % 1000)
            }),
        ))
        .await;
    let (writes, writes_cpu) = meter
        .measure(drive(
            "floor: Enter/Withdraw",
            args.clients,
            duration,
            grpc_enter_withdraw_client(&channels, |k, i| {
                format!("w-{}", (k * 7919 + (i as usize) / 2) % 1000)
            }),
        ))
        .await;
    let floor_fanout = match fanout {
        Some(_) => Some(fan_out(args, &[addr], &[pid], redis_url).await?),
        None => None,
    };
    drop(server);

    let (minimal_function, minimal_function_cpu) = minimal_function(redis_url, duration).await?;
    let load = |name: &str| loads.iter().find(|l| l.scenario == name);
    let replica_ratio = |name: &str, floor: &Option<PerCall>| {
        let replica = load(name)?.grpc_cpu.as_ref()?.replicas_us;
        let floor = floor.as_ref()?.replicas_us;
        (floor > 0.0).then(|| replica / floor)
    };
    let redis_ratio = |name: &str| {
        let service = load(name)?.grpc_cpu.as_ref()?.redis_us?;
        let least = minimal_function_cpu.as_ref()?.redis_us?;
        (least > 0.0).then(|| service / least)
    };
    let per_event = |f: Option<&FanOut>| f?.cpu.as_ref().map(|c| c.replicas_us);
    let fanout_ratio = match (per_event(fanout), per_event(floor_fanout.as_ref())) {
        (Some(replicas), Some(floor)) if floor > 0.0 => Some(replicas / floor),
        _ => None,
    };
    Ok(Floor {
        fanout: floor_fanout,
        fanout_ratio,
        replica_ratio_reads: replica_ratio("reads", &reads_cpu),
        replica_ratio_writes: replica_ratio("writes", &writes_cpu),
        redis_ratio_reads: redis_ratio("reads"),
        redis_ratio_writes: redis_ratio("writes"),
        reads,
        reads_cpu,
        writes,
        writes_cpu,
        minimal_function,
        minimal_function_cpu,
    })
}

/// Calls of a Redis function that returns 1, from 16 connections with one call in flight
/// each, measured like the load phases.
async fn minimal_function(redis_url: &str, duration: Duration) -> Result<Measured, String> {
    const CONNECTIONS: usize = 16;
    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut load = redis::cmd("FUNCTION");
    load.arg("LOAD")
        .arg("REPLACE")
        .arg("#!lua name=electiond_bench_floor\nredis.register_function('electiond_bench_one', function() return 1 end)");
    load.query_async::<String>(&mut conns[0])
        .await
        .map_err(|e| format!("minimal function: {e}"))?;
    let mut meter = Meter {
        replicas: Vec::new(),
        redis: redis_connection(redis_url).await,
    };
    let measured = meter
        .measure(drive(
            "minimal function, 16 connections",
            CONNECTIONS,
            duration,
            |k| {
                let conn = conns[k % conns.len()].clone();
                Box::new(move |_| {
                    let mut conn = conn.clone();
                    Box::pin(async move {
                        redis::cmd("FCALL")
                            .arg("electiond_bench_one")
                            .arg(0)
                            .query_async::<i64>(&mut conn)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                })
            },
        ))
        .await;
    let _ = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("electiond_bench_floor")
        .query_async::<()>(&mut conns[0])
        .await;
    Ok(measured)
}

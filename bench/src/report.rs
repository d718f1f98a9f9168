//! Figures and how they are printed: a table for people, JSON for machines.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::cpu::PerCall;
use super::etcd::Comparison;

/// Latency distribution of a set of calls (or deliveries), in microseconds.
#[derive(Debug, Serialize, Clone)]
pub struct Latency {
    pub count: u64,
    pub failed: u64,
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub fn from_micros(mut v: Vec<u64>, elapsed: Duration, failed: u64) -> Self {
        v.sort_unstable();
        let pick = |q: f64| -> u64 {
            if v.is_empty() {
                return 0;
            }
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i]
        };
        let secs = elapsed.as_secs_f64();
        Self {
            count: v.len() as u64,
            failed,
            per_second: if secs > 0.0 {
                v.len() as f64 / secs
            } else {
                0.0
            },
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            p999_us: pick(0.999),
            max_us: v.last().copied().unwrap_or(0),
        }
    }
}

/// A phase's calls, and the CPU each part spent per call.
pub type Measured = (Latency, Option<PerCall>);

/// One load scenario through gRPC, and the same calls straight on Redis.
#[derive(Debug, Serialize)]
pub struct Load {
    pub scenario: String,
    pub clients: usize,
    pub grpc: Latency,
    pub grpc_cpu: Option<PerCall>,
    pub direct_redis: Option<Latency>,
    pub direct_cpu: Option<PerCall>,
    /// gRPC throughput / direct throughput.
    pub ratio: Option<f64>,
}

impl Load {
    pub fn new(scenario: &str, clients: usize, grpc: Measured, direct: Option<Measured>) -> Self {
        let (direct, direct_cpu) = direct.map_or((None, None), |(l, c)| (Some(l), c));
        let ratio = direct
            .as_ref()
            .filter(|d| d.per_second > 0.0)
            .map(|d| grpc.0.per_second / d.per_second);
        Self {
            scenario: scenario.to_owned(),
            clients,
            grpc: grpc.0,
            grpc_cpu: grpc.1,
            direct_redis: direct,
            direct_cpu,
            ratio,
        }
    }
}

/// The Events fan-out scenario.
#[derive(Debug, Serialize)]
pub struct FanOut {
    pub streams: usize,
    pub replicas: usize,
    pub changes: usize,
    /// From the change being sent to each stream receiving it; `failed` counts deliveries that
    /// never came.
    pub delivery: Latency,
    /// From the change being sent to the last stream receiving it.
    pub until_every_stream: Latency,
    pub rss_before_kib: Vec<u64>,
    pub rss_after_kib: Vec<u64>,
    pub redis_connections: Vec<usize>,
    /// CPU per delivered event while the changes went out (the benchmark reads every stream).
    pub cpu: Option<PerCall>,
}

impl FanOut {
    /// The scenario's lines of the report, for streams served by `server`s (the replicas, or
    /// the floor server).
    pub fn table(&self, server: &str) -> String {
        use std::fmt::Write;
        let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nfan-out: {} streams over {} {server}(s), {} changes",
            self.streams, self.replicas, self.changes
        );
        let _ = writeln!(
            out,
            "  delivery to each stream: p50 {} ms, p99 {} ms, max {} ms ({} deliveries, {} missing)",
            ms(self.delivery.p50_us),
            ms(self.delivery.p99_us),
            ms(self.delivery.max_us),
            self.delivery.count,
            self.delivery.failed
        );
        let _ = writeln!(
            out,
            "  until every stream has it: p50 {} ms, p99 {} ms, max {} ms",
            ms(self.until_every_stream.p50_us),
            ms(self.until_every_stream.p99_us),
            ms(self.until_every_stream.max_us)
        );
        let _ = writeln!(
            out,
            "  {server} RSS before streams: {:?} KiB; with streams open: {:?} KiB; {:.2} KiB per stream",
            self.rss_before_kib,
            self.rss_after_kib,
            self.kib_per_stream()
        );
        let _ = writeln!(
            out,
            "  redis connections per {server} with streams open: {:?}",
            self.redis_connections
        );
        if let Some(c) = &self.cpu {
            let _ = writeln!(
                out,
                "  CPU per delivered event: {server}(s) {:.1} µs, load generator {:.1} µs",
                c.replicas_us, c.bench_us
            );
        }
        out
    }

    /// Resident memory added per open stream, averaged over the replicas.
    pub fn kib_per_stream(&self) -> f64 {
        let added: i64 = self
            .rss_after_kib
            .iter()
            .zip(&self.rss_before_kib)
            .map(|(a, b)| *a as i64 - *b as i64)
            .sum();
        if self.streams == 0 || self.rss_after_kib.is_empty() {
            0.0
        } else {
            added as f64 / self.streams as f64
        }
    }
}

/// A replica's figures at the end of the run.
#[derive(Debug, Serialize)]
pub struct Replica {
    pub rss_kib: u64,
    pub redis_connections: usize,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: String,
    pub cpus: usize,
    pub replicas_used: usize,
    pub duration_secs: f64,
    pub loads: Vec<Load>,
    pub etcd: Option<Comparison>,
    pub fanout: Option<FanOut>,
    pub sessions: Option<super::sessions::Sessions>,
    pub listing: Option<super::listing::Listing>,
    pub floor: Option<super::floor::Floor>,
    pub replicas: Vec<Replica>,
}

impl Report {
    pub fn new(args: &super::Args, replicas: usize) -> Self {
        let machine = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            machine,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            replicas_used: replicas,
            duration_secs: args.duration,
            loads: Vec::new(),
            etcd: None,
            fanout: None,
            sessions: None,
            listing: None,
            floor: None,
            replicas: Vec::new(),
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
        let _ = writeln!(out, "machine: {} ({} cpus)\n", self.machine, self.cpus);
        let w = self
            .loads
            .iter()
            .map(|l| l.scenario.len())
            .max()
            .unwrap_or(0)
            .max(11);
        let _ = writeln!(
            out,
            "{:<w$} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>12} {:>7}",
            "scenario",
            "clients",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "p99.9",
            "max ms",
            "failed",
            "redis-only/s",
            "ratio"
        );
        for l in &self.loads {
            let g = &l.grpc;
            let _ = writeln!(
                out,
                "{:<w$} {:>7} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>7} {:>12} {:>7}",
                l.scenario,
                l.clients,
                g.per_second,
                ms(g.p50_us),
                ms(g.p99_us),
                ms(g.p999_us),
                ms(g.max_us),
                g.failed,
                l.direct_redis
                    .as_ref()
                    .map_or("-".into(), |d| format!("{:.0}", d.per_second)),
                l.ratio.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
            );
        }
        for l in &self.loads {
            if let Some(d) = &l.direct_redis {
                let _ = writeln!(
                    out,
                    "  {} straight on redis: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
                    l.scenario,
                    ms(d.p50_us),
                    ms(d.p99_us),
                    ms(d.p999_us),
                    ms(d.max_us)
                );
            }
        }
        let cpu_rows: Vec<(String, &PerCall)> = self
            .loads
            .iter()
            .flat_map(|l| {
                let grpc = l
                    .grpc_cpu
                    .as_ref()
                    .map(|c| (format!("{} via gRPC", l.scenario), c));
                let direct = l
                    .direct_cpu
                    .as_ref()
                    .map(|c| (format!("{} straight on redis", l.scenario), c));
                grpc.into_iter().chain(direct)
            })
            .collect();
        if !cpu_rows.is_empty() {
            let _ = writeln!(out, "\nCPU per call, µs: {}", PerCall::columns());
            for (name, c) in cpu_rows {
                let _ = writeln!(out, "  {name:<w2$} {}", c.row(), w2 = w + 22);
            }
        }
        if let Some(e) = &self.etcd {
            let _ = write!(out, "\n{}", e.table());
        }
        if let Some(f) = &self.fanout {
            out.push_str(&f.table("replica"));
        }
        if let Some(s) = &self.sessions {
            out.push_str(&s.table());
        }
        if let Some(l) = &self.listing {
            out.push_str(&l.table());
        }
        if let Some(f) = &self.floor {
            out.push_str(&f.table());
        }
        if !self.replicas.is_empty() {
            let _ = writeln!(out, "\nreplicas at the end:");
            for (i, r) in self.replicas.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  replica {i}: RSS {} KiB, {} redis connections",
                    r.rss_kib, r.redis_connections
                );
            }
        }
        out
    }
}

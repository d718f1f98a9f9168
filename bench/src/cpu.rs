//! Where the CPU of a load phase went: this benchmark itself and the replicas (from
//! `/proc/<pid>/stat`), and Redis (its own `INFO cpu`, and `INFO commandstats` for the time
//! inside the operations' function calls). Read before and after a phase; the difference,
//! divided by the calls made, is what one call cost each part. A load generator that spends as
//! much per call as the service it measures is measuring itself; this makes that visible.

use serde::Serialize;

/// Counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    bench_s: f64,
    replicas_s: f64,
    redis_s: Option<f64>,
    /// Calls and microseconds of `FCALL` and `EVALSHA` (the operations) inside Redis.
    redis_calls: Option<(u64, u64)>,
}

/// CPU per call of one phase, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct PerCall {
    /// This load generator.
    pub bench_us: f64,
    /// All replicas together.
    pub replicas_us: f64,
    /// The Redis process (commands, networking, everything).
    pub redis_us: Option<f64>,
    /// Inside one operation's function call in Redis (`usec_per_call` of `FCALL`).
    pub redis_function_us: Option<f64>,
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`; `None` off Linux or for
/// a process that is gone.
fn process_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces; fields after it are space-separated
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on
    100.0
}

fn info_field(info: &str, key: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// `calls` and `usec` of one `cmdstat_<name>` line.
fn command_stats(info: &str, name: &str) -> Option<(u64, u64)> {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:")))?;
    let mut calls = None;
    let mut usec = None;
    for kv in line.split(',') {
        match kv.split_once('=') {
            Some(("calls", v)) => calls = v.parse().ok(),
            Some(("usec", v)) => usec = v.parse().ok(),
            _ => {}
        }
    }
    Some((calls?, usec?))
}

/// Reads the counters before and after phases.
pub struct Meter {
    pub replicas: Vec<u32>,
    pub redis: Option<redis::aio::MultiplexedConnection>,
}

impl Meter {
    /// Runs one phase and returns its result with the CPU that each part spent per call.
    pub async fn measure(
        &mut self,
        phase: impl std::future::Future<Output = super::report::Latency>,
    ) -> (super::report::Latency, Option<PerCall>) {
        let before = sample(&self.replicas, self.redis.as_mut()).await;
        let lat = phase.await;
        let after = sample(&self.replicas, self.redis.as_mut()).await;
        let cpu = before.per_call(&after, lat.count + lat.failed);
        (lat, cpu)
    }
}

/// Reads every counter now. `redis` is a connection to the Redis the replicas use, if the
/// benchmark can reach it.
pub async fn sample(
    replicas: &[u32],
    redis: Option<&mut redis::aio::MultiplexedConnection>,
) -> Sample {
    let mut s = Sample {
        bench_s: process_seconds("self").unwrap_or(0.0),
        replicas_s: replicas
            .iter()
            .filter_map(|p| process_seconds(&p.to_string()))
            .sum(),
        ..Sample::default()
    };
    if let Some(conn) = redis {
        if let Ok(cpu) = redis::cmd("INFO")
            .arg("cpu")
            .query_async::<String>(&mut *conn)
            .await
        {
            s.redis_s = info_field(&cpu, "used_cpu_user")
                .zip(info_field(&cpu, "used_cpu_sys"))
                .map(|(u, k)| u + k);
        }
        if let Ok(stats) = redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut *conn)
            .await
        {
            // FCALL: this version's operations; EVALSHA: an earlier version's (to compare)
            let (f, e) = (
                command_stats(&stats, "fcall").unwrap_or((0, 0)),
                command_stats(&stats, "evalsha").unwrap_or((0, 0)),
            );
            s.redis_calls = Some((f.0 + e.0, f.1 + e.1));
        }
    }
    s
}

impl PerCall {
    /// The column names of [`Self::row`].
    pub fn columns() -> &'static str {
        "load generator, replicas, redis process, inside the operation's function"
    }

    /// The figures, one per column.
    pub fn row(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        format!(
            "{:>7.1} {:>7.1} {:>7} {:>7}",
            self.bench_us,
            self.replicas_us,
            opt(self.redis_us),
            opt(self.redis_function_us)
        )
    }
}

/// CPU a second over a stretch of time, in cores (1.0: one core all the time).
#[derive(Debug, Clone, Serialize)]
pub struct Cores {
    /// All replicas together.
    pub replicas: f64,
    /// The Redis process.
    pub redis: Option<f64>,
}

impl Sample {
    /// What each part used between `self` and `later`, `elapsed` apart.
    pub fn cores(&self, later: &Sample, elapsed: std::time::Duration) -> Cores {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Cores {
            replicas: (later.replicas_s - self.replicas_s).max(0.0) / secs,
            redis: self
                .redis_s
                .zip(later.redis_s)
                .map(|(a, b)| (b - a).max(0.0) / secs),
        }
    }

    /// What happened between `self` and `later`, per call, over `calls` calls.
    pub fn per_call(&self, later: &Sample, calls: u64) -> Option<PerCall> {
        if calls == 0 {
            return None;
        }
        let n = calls as f64;
        let us = |a: f64, b: f64| (b - a).max(0.0) * 1e6 / n;
        Some(PerCall {
            bench_us: us(self.bench_s, later.bench_s),
            replicas_us: us(self.replicas_s, later.replicas_s),
            redis_us: self.redis_s.zip(later.redis_s).map(|(a, b)| us(a, b)),
            redis_function_us: self.redis_calls.zip(later.redis_calls).and_then(
                |((c0, u0), (c1, u1))| {
                    (c1 > c0).then(|| (u1.saturating_sub(u0)) as f64 / (c1 - c0) as f64)
                },
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_info_lines_are_read() {
        let info = "# Commandstats\r\ncmdstat_fcall:calls=10,usec=150,usec_per_call=15.00,rejected_calls=0,failed_calls=0\r\ncmdstat_get:calls=3,usec=1";
        assert_eq!(command_stats(info, "fcall"), Some((10, 150)));
        assert_eq!(command_stats(info, "evalsha"), None);
        assert_eq!(
            info_field(
                "used_cpu_sys:1.5\r\nused_cpu_user:2.25\r\n",
                "used_cpu_user"
            ),
            Some(2.25)
        );
        assert!(process_seconds("self").is_some());
    }
}

//! Seeded random operations against a model of the spec's rules: every answer, every event and
//! the final state must be what the rules say, on a small election (ids with line feeds and
//! backslashes among them) and on one that grows past 64 candidates and 2 KB, where the
//! functions append in place and keep edits pending on the stored string. Two replicas take
//! turns; each election is watched on the other one. `MODEL_SEED` replays a run (the seed is
//! printed), `MODEL_STEPS` sets its length.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::harness::*;

/// The rules of section 3, on one election.
#[derive(Default)]
struct Model {
    id: u64,
    candidates: Vec<String>,
}

impl Model {
    fn state(&self) -> (u64, String, Vec<String>) {
        let leader = self.candidates.first().cloned().unwrap_or_default();
        (self.id, leader, self.candidates.clone())
    }

    /// Sets the new list; the id goes up when leadership passed to another candidate.
    fn set(&mut self, next: Vec<String>) -> bool {
        if next == self.candidates {
            return false;
        }
        let before = self.candidates.first().cloned().unwrap_or_default();
        let after = next.first().cloned().unwrap_or_default();
        if !after.is_empty() && after != before {
            self.id += 1;
        }
        self.candidates = next;
        true
    }

    fn at(&self, c: &str) -> Option<usize> {
        self.candidates.iter().position(|x| x == c)
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Enter,
    Withdraw,
    Anoint,
    Promote,
    Evict,
    GetTerm,
}

/// What the model says one operation does: the answer's code (`None`: ok) and whether it
/// changed the election.
fn apply(m: &mut Model, op: Op, caller: &str, target: &str) -> (Option<Code>, bool) {
    let mut next = m.candidates.clone();
    match op {
        Op::Enter => {
            if m.at(caller).is_none() {
                next.push(caller.to_owned());
            }
        }
        Op::Withdraw => next.retain(|c| c != caller),
        Op::Anoint | Op::Promote | Op::Evict => {
            let Some(i) = m.at(target) else {
                return (Some(Code::InvalidArgument), false);
            };
            match op {
                Op::Anoint => {
                    let c = next.remove(i);
                    next.insert(0, c);
                }
                Op::Promote if i > 0 => next.swap(i - 1, i),
                Op::Evict => {
                    next.remove(i);
                }
                _ => {}
            }
        }
        Op::GetTerm => {}
    }
    (None, m.set(next))
}

#[tokio::test]
async fn random_operations_follow_the_rules_in_every_answer_and_event() {
    run(600_000).await;
}

#[tokio::test]
async fn with_leases_off_random_operations_follow_the_same_rules() {
    run(0).await;
}

/// One seeded run with leases of `ttl_ms` (long enough that none runs out, or off).
async fn run(ttl_ms: u64) {
    let seed: u64 = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let steps: usize = std::env::var("MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    eprintln!("model seed {seed} (replay: MODEL_SEED={seed}), {steps} steps");
    let mut rng = StdRng::seed_from_u64(seed);

    let redis = RedisServer::start().await;
    let p = prefix("model");
    let replicas = [
        Replica::start(with_ttl(&redis, &p, ttl_ms)).await,
        Replica::start(with_ttl(&redis, &p, ttl_ms)).await,
    ];
    // (name, pool of ids, how often a step enters)
    let small: Vec<String> = ["a", "b", "x\ny", "\\n", "back\\", "z"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let many: Vec<String> = (0..120)
        .map(|i| format!("candidate-{i:05}-of-the-fleet"))
        .collect();
    let elections = [("small", small, 0.35), ("many", many, 0.6)];

    let mut models: Vec<Model> = elections.iter().map(|_| Model::default()).collect();
    let mut expected: Vec<Vec<(u64, String, Vec<String>)>> = vec![Vec::new(); elections.len()];
    // each watch is read as it goes (a reader that waited until the end would fall behind
    // and, as the spec allows a slow reader, skip states)
    let mut watches = Vec::new();
    for (i, (name, _, _)) in elections.iter().enumerate() {
        let mut w = replicas[(i + 1) % 2]
            .client(name, "")
            .await
            .watch()
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(t)) = w.try_next(Duration::from_secs(600)).await {
                if tx.send(t).is_err() {
                    return;
                }
            }
        });
        watches.push(rx);
    }
    let mut changes = 0;
    let mut most = 0;
    for step in 0..steps {
        let e = rng.random_range(0..elections.len());
        let (name, pool, enter_share) = &elections[e];
        let m = &mut models[e];
        let present = |m: &Model, rng: &mut StdRng| -> String {
            if m.candidates.is_empty() || rng.random_bool(0.1) {
                pool[rng.random_range(0..pool.len())].clone()
            } else {
                m.candidates[rng.random_range(0..m.candidates.len())].clone()
            }
        };
        let op = if rng.random_bool(*enter_share) {
            Op::Enter
        } else {
            [
                Op::Withdraw,
                Op::Anoint,
                Op::Promote,
                Op::Evict,
                Op::GetTerm,
            ][rng.random_range(0..5)]
        };
        let caller = match op {
            Op::Enter => pool[rng.random_range(0..pool.len())].clone(),
            Op::Withdraw => present(m, &mut rng),
            _ => String::new(),
        };
        let target = present(m, &mut rng);
        let (want_code, changed) = apply(m, op, &caller, &target);
        let mut c = replicas[step % 2].client(name, &caller).await;
        let got = match op {
            Op::Enter => c.enter().await,
            Op::Withdraw => c.withdraw().await,
            Op::Anoint => c.anoint(&target).await,
            Op::Promote => c.promote(&target).await,
            Op::Evict => c.evict(&target).await,
            Op::GetTerm => c.get_term().await,
        };
        let what = format!("step {step}: {op:?} on {name:?} by {caller:?} of {target:?}");
        match (want_code, got) {
            (None, Ok(t)) => assert_eq!(
                (t.id, t.leader.clone(), t.candidates.clone()),
                m.state(),
                "{what}"
            ),
            (Some(code), Err(s)) => assert_eq!(s.code(), code, "{what}: {s:?}"),
            (want, got) => panic!("{what}: wanted {want:?}, got {got:?}"),
        }
        if changed {
            expected[e].push(m.state());
            changes += 1;
        }
        most = most.max(m.candidates.len());
    }
    assert!(
        most > 64,
        "the big election grew past 64 candidates ({most})"
    );
    eprintln!("{changes} changes; the big election held up to {most} candidates");

    for (e, (name, _, _)) in elections.iter().enumerate() {
        let term = replicas[0].client(name, "").await.get_term().await.unwrap();
        assert_eq!(
            (term.id, term.leader.clone(), term.candidates.clone()),
            models[e].state(),
            "{name}: final state"
        );
        // every change, once, in commit order
        let mut seen = Vec::new();
        for _ in 0..expected[e].len() {
            match tokio::time::timeout(Duration::from_secs(15), watches[e].recv()).await {
                Ok(Some(t)) => seen.push(t),
                _ => break,
            }
        }
        assert_eq!(brief(&seen), expected[e], "{name}: events");
    }
    for r in replicas {
        r.shutdown().await.unwrap();
    }
}

//! The Lua scripts, one per operation, each with the shared prelude in front. Loaded once;
//! `invoke_async` sends EVALSHA and falls back to EVAL after `NOSCRIPT` (a restarted Redis, or
//! a Cluster node that has not run the script yet).

use redis::Script;

const PRELUDE: &str = include_str!("../../lua/prelude.lua");

/// How the scripts announce a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// `PUBLISH`: one Redis, or Sentinel.
    Classic,
    /// `SPUBLISH`: Redis Cluster, so an event stays within its shard.
    Sharded,
}

/// Every operation's script.
pub struct Scripts {
    pub(crate) enter: Script,
    pub(crate) withdraw: Script,
    pub(crate) anoint: Script,
    pub(crate) promote: Script,
    pub(crate) evict: Script,
    pub(crate) restore: Script,
    pub(crate) create: Script,
    pub(crate) delete: Script,
    pub(crate) refresh: Script,
    /// Not an operation: the sweepers' lease-index read on a Cluster (no prelude).
    pub(crate) due: Script,
}

impl Scripts {
    /// Builds every script (hashes them; nothing is sent to Redis yet).
    pub fn new(publish: Publish) -> Self {
        let command = match publish {
            Publish::Classic => "PUBLISH",
            Publish::Sharded => "SPUBLISH",
        };
        let build = |body: &str| {
            Script::new(&format!(
                "local PUBLISH_COMMAND = '{command}'\n{PRELUDE}\n{body}"
            ))
        };
        Self {
            enter: build(include_str!("../../lua/enter.lua")),
            withdraw: build(include_str!("../../lua/withdraw.lua")),
            anoint: build(include_str!("../../lua/anoint.lua")),
            promote: build(include_str!("../../lua/promote.lua")),
            evict: build(include_str!("../../lua/evict.lua")),
            restore: build(include_str!("../../lua/restore.lua")),
            create: build(include_str!("../../lua/create.lua")),
            delete: build(include_str!("../../lua/delete.lua")),
            refresh: build(include_str!("../../lua/refresh.lua")),
            due: Script::new(include_str!("../../lua/due.lua")),
        }
    }
}

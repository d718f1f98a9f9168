//! The election library: one Redis Functions library (Redis 7+) with one function per
//! operation, built from `lua/prelude.lua` and the operation files. It is loaded on first use
//! (`FUNCTION LOAD`), and again whenever Redis answers that a function is missing (a restarted
//! Redis without persistence, a new Cluster node). Its name carries a hash of its code, so
//! replicas of different versions can share one Redis during an upgrade, each calling its own.

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisResult, Script};

const PRELUDE: &str = include_str!("../../lua/prelude.lua");

/// What kind of Redis the functions run on: it decides how they announce a change and where
/// they find the master's failover epoch (see `next_id` in `lua/prelude.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One master (direct, or found by Sentinel): `PUBLISH`, and the epoch from the caller.
    Single,
    /// Redis Cluster: `SPUBLISH`, so an event stays within its shard, and the node's own epoch.
    Cluster,
}

/// An operation's function.
#[derive(Debug, Clone, Copy)]
pub enum Function {
    Enter,
    Withdraw,
    Anoint,
    Promote,
    Evict,
    Restore,
    Create,
    Delete,
    Refresh,
    Expire,
    KeepAlive,
}

impl Function {
    /// Every function, in declaration order (which indexes their names).
    const ALL: [Function; 11] = [
        Function::Enter,
        Function::Withdraw,
        Function::Anoint,
        Function::Promote,
        Function::Evict,
        Function::Restore,
        Function::Create,
        Function::Delete,
        Function::Refresh,
        Function::Expire,
        Function::KeepAlive,
    ];

    /// The cause it gives a change of leader it makes (see `record` in `lua/prelude.lua`):
    /// the sweepers' and sessions' calls change leaders only when leases run out.
    fn cause(self) -> &'static str {
        match self {
            Function::Enter => "enter",
            Function::Withdraw => "withdraw",
            Function::Anoint => "anoint",
            Function::Promote => "promote",
            Function::Evict => "evict",
            Function::Restore => "restore",
            Function::Create => "create",
            Function::Delete => "delete",
            Function::Refresh | Function::Expire | Function::KeepAlive => "expired",
        }
    }

    /// Its name in the library (after the library's name), and its file in `lua/`.
    fn source(self) -> (&'static str, &'static str) {
        match self {
            Function::Enter => ("enter", include_str!("../../lua/enter.lua")),
            Function::Withdraw => ("withdraw", include_str!("../../lua/withdraw.lua")),
            Function::Anoint => ("anoint", include_str!("../../lua/anoint.lua")),
            Function::Promote => ("promote", include_str!("../../lua/promote.lua")),
            Function::Evict => ("evict", include_str!("../../lua/evict.lua")),
            Function::Restore => ("restore", include_str!("../../lua/restore.lua")),
            Function::Create => ("create", include_str!("../../lua/create.lua")),
            Function::Delete => ("delete", include_str!("../../lua/delete.lua")),
            Function::Refresh => ("refresh", include_str!("../../lua/refresh.lua")),
            Function::Expire => ("expire", include_str!("../../lua/expire.lua")),
            Function::KeepAlive => ("keepalive", include_str!("../../lua/keepalive.lua")),
        }
    }
}

/// A function that reads only (flagged `no-writes`), for the listing and the console.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    /// One bucket's share of a listing (`lua/list.lua`).
    List,
    /// One election with its leases (`lua/inspect.lua`).
    Inspect,
}

impl Reader {
    const ALL: [Reader; 2] = [Reader::List, Reader::Inspect];

    fn source(self) -> (&'static str, &'static str) {
        match self {
            Reader::List => ("list", include_str!("../../lua/list.lua")),
            Reader::Inspect => ("inspect", include_str!("../../lua/inspect.lua")),
        }
    }
}

/// The library's code and the names of its functions.
pub struct Scripts {
    code: String,
    /// Function names, indexed by [`Function`].
    names: Vec<String>,
    /// Reader names, indexed by [`Reader`].
    readers: Vec<String>,
    /// Not an operation: the sweepers' lease-index read on a Cluster (a plain script).
    pub(crate) due: Script,
    /// Not an operation: lists elections stored before name sets were kept (`lua/note.lua`).
    pub(crate) note: Script,
}

impl Scripts {
    /// Builds the library's code (nothing is sent to Redis yet).
    pub fn new(flavor: Flavor) -> Self {
        let cluster = flavor == Flavor::Cluster;
        let mut body = format!("local CLUSTER = {cluster}\n{PRELUDE}\n");
        for f in Function::ALL {
            let ((op, file), cause) = (f.source(), f.cause());
            body.push_str(&format!(
                "redis.register_function('@NAME@_{op}', function(KEYS, ARGV)\nstart(KEYS, ARGV, '{cause}')\nend_sessions()\n{file}\nend)\n"
            ));
        }
        for (op, file) in Reader::ALL.map(Reader::source) {
            body.push_str(&format!(
                "redis.register_function{{function_name = '@NAME@_{op}', flags = {{ 'no-writes' }}, callback = function(KEYS, ARGV)\n{file}\nend}}\n"
            ));
        }
        let name = format!("electiond_{:016x}", fnv1a(body.as_bytes()));
        let code = format!("#!lua name={name}\n{}", body.replace("@NAME@", &name));
        let names = Function::ALL
            .iter()
            .map(|f| format!("{name}_{}", f.source().0))
            .collect();
        let readers = Reader::ALL
            .iter()
            .map(|f| format!("{name}_{}", f.source().0))
            .collect();
        Self {
            code,
            names,
            readers,
            due: Script::new(include_str!("../../lua/due.lua")),
            note: Script::new(include_str!("../../lua/note.lua")),
        }
    }

    /// A call of `f` with its keys (the bucket's three, then the election's two), ready for
    /// its arguments.
    pub fn call(&self, f: Function, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&self.names[f as usize]).arg(keys.len()).arg(keys);
        cmd
    }

    /// A call of reader `f` with its keys, ready for its arguments.
    pub fn read(&self, f: Reader, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg(&self.readers[f as usize]).arg(keys.len()).arg(keys);
        cmd
    }

    /// Runs `cmd` (from [`Self::call`]); loads the library and runs it again when Redis does
    /// not have it.
    pub async fn run<T: FromRedisValue, C: ConnectionLike + Send>(
        &self,
        cmd: &Cmd,
        conn: &mut C,
    ) -> RedisResult<T> {
        match cmd.query_async(conn).await {
            Err(e) if is_missing(&e) => {
                self.load(conn).await?;
                cmd.query_async(conn).await
            }
            r => r,
        }
    }

    /// Loads the library into Redis.
    async fn load<C: ConnectionLike + Send>(&self, conn: &mut C) -> RedisResult<()> {
        // REPLACE: the name holds the code's hash, so this replaces nothing but itself
        // (another replica may load it at the same moment)
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.code)
            .query_async::<()>(conn)
            .await?;
        // operators remove old versions' libraries by this name (FUNCTION DELETE)
        tracing::info!(
            library = self.library(),
            "loaded the election library into redis"
        );
        Ok(())
    }

    /// The library's name (what `FUNCTION LIST` shows).
    pub fn library(&self) -> &str {
        self.names[0]
            .rsplit_once('_')
            .map_or("", |(library, _)| library)
    }
}

fn is_missing(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (unlike the standard hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_named_after_the_code() {
        let classic = Scripts::new(Flavor::Single);
        let sharded = Scripts::new(Flavor::Cluster);
        assert_ne!(classic.library(), sharded.library());
        assert!(classic.library().starts_with("electiond_"));
        for f in Function::ALL {
            let name = &classic.names[f as usize];
            assert_eq!(*name, format!("{}_{}", classic.library(), f.source().0));
            assert!(
                classic.code.contains(&format!("'{name}'")),
                "{name} is registered"
            );
        }
        for f in Reader::ALL {
            let name = &classic.readers[f as usize];
            assert!(classic.code.contains(&format!("'{name}'")));
        }
        assert!(classic
            .code
            .starts_with(&format!("#!lua name={}\n", classic.library())));
        assert_eq!(
            Scripts::new(Flavor::Single).library(),
            classic.library(),
            "stable"
        );
    }
}

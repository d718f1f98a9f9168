//! The Lua scripts, one per operation, each with the shared prelude in front. Loaded once;
//! `invoke_async` sends EVALSHA and falls back to EVAL after `NOSCRIPT` (a restarted Redis).

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/prelude.lua"),
            "\n",
            include_str!(concat!("../../lua/", $file))
        ))
    };
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
}

impl Scripts {
    /// Builds every script (hashes them; nothing is sent to Redis yet).
    pub fn new() -> Self {
        Self {
            enter: script!("enter.lua"),
            withdraw: script!("withdraw.lua"),
            anoint: script!("anoint.lua"),
            promote: script!("promote.lua"),
            evict: script!("evict.lua"),
            restore: script!("restore.lua"),
            create: script!("create.lua"),
            delete: script!("delete.lua"),
            refresh: script!("refresh.lua"),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}

//! The sources a daemon synchronizes to, and how the set changes while it
//! runs: servers named in the config or added over the control socket,
//! pools and the addresses they lend, names resolved again with back-off
//! until they resolve, and pool members replaced when they fail.
//!
//! Pure: [`set::SourceSet`] is handed the time (a monotonic [`Duration`]
//! since the daemon started) and what DNS answered, and says what to do
//! (resolve this name, poll this new address, drop that association); the
//! upstream task (`crate::sync`) does the DNS and the polling.
//! [`policy`] holds the rules: when a member has failed for good, which
//! addresses a pool may lend, how long to wait before asking DNS again.
//!
//! [`Duration`]: std::time::Duration

pub mod policy;
pub mod set;

use serde::{Deserialize, Serialize};

/// A server (one name, one address) or a pool (one name, many addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `--upstream HOST[:PORT]`: its first address is polled; a new one is
    /// followed after it went unreachable.
    Server,
    /// `--pool NAME[:PORT]`: up to `max-sources` of its addresses are polled.
    Pool,
}

impl Kind {
    /// `server` or `pool`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Pool => "pool",
        }
    }
}

/// Where a source came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The config file or the command line.
    Config,
    /// `ntpd-sim sources add`, while running (not written to the file).
    Runtime,
}

impl Origin {
    /// `config` or `runtime`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Runtime => "runtime",
        }
    }
}

/// A source as configured: its name (`HOST[:PORT]`, or `nts://HOST[:PORT]`
/// for an NTS server), whether it is a pool, and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// As configured, without the options.
    pub name: String,
    /// Server or pool.
    pub kind: Kind,
    /// `xleave`: polled in interleaved mode (falling back to basic mode
    /// by itself where the server does not interleave).
    pub xleave: bool,
}

/// The scheme that marks an NTS source (`nts://HOST[:PORT]`). Defined
/// here, where sources are parsed, so this module does not import the
/// config (which imports it).
pub const NTS_SCHEME: &str = "nts://";

impl Spec {
    /// A source as written in the config or on the command line: the name,
    /// then options separated by spaces (`ntp.example:123 xleave`).
    pub fn parse(text: &str, kind: Kind) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let name = words.next().ok_or_else(|| format!("`{text}` is not HOST[:PORT]"))?;
        let mut spec = Self { name: name.to_string(), kind, xleave: false };
        for option in words {
            match option {
                "xleave" if name.starts_with(NTS_SCHEME) => {
                    return Err(format!("`{name}`: xleave is for plain NTP sources, not NTS"));
                }
                "xleave" => spec.xleave = true,
                other => return Err(format!("`{name}`: unknown option `{other}` (known: xleave)")),
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_name() {
        let spec = Spec::parse("127.0.0.1:123 xleave", Kind::Server).unwrap();
        assert_eq!((spec.name.as_str(), spec.xleave), ("127.0.0.1:123", true));
        assert!(!Spec::parse("pool.example", Kind::Pool).unwrap().xleave);
        let error = Spec::parse("a:1 xleeve", Kind::Server).unwrap_err();
        assert!(error.contains("unknown option `xleeve`"), "{error}");
        assert!(Spec::parse("nts://a xleave", Kind::Server).unwrap_err().contains("not NTS"));
        assert!(Spec::parse("  ", Kind::Server).is_err());
    }
}

//! `[clock]`: which clock the daemon serves and disciplines (the virtual
//! clock by default, or the system clock), and the system clock's drift
//! file and safety switches. See docs/system-clock.md.

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::clock::ClockKind;

/// `kind` as written in the file and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClockChoice {
    /// A virtual clock over the host's, never written (the default).
    Virtual,
    /// The host's clock, disciplined through the kernel (needs CAP_SYS_TIME).
    System,
}

/// `[clock]` as in the file (and the flags that override it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClockSection {
    /// `virtual` or `system`.
    pub kind: Option<ClockChoice>,
    /// Where the system clock's frequency is kept across restarts.
    pub drift_file: Option<PathBuf>,
    /// Take the clock even when another NTP daemon is running.
    pub force: Option<bool>,
    /// Allow the system clock outside the test VM: this host's clock is
    /// really to be disciplined by this daemon.
    pub allow_host: Option<bool>,
}

/// The clock settings the daemon runs with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClockConfig {
    /// Which clock.
    pub kind: ClockKind,
    /// The drift file (system clock only).
    pub drift_file: Option<PathBuf>,
    /// Start although chronyd, ntpd, systemd-timesyncd or another
    /// `ntpd-sim --clock system` runs.
    pub force: bool,
    /// The operator's opt-in to set this host's clock.
    pub allow_host: bool,
}

impl ClockConfig {
    /// Flags beat the file. The system clock takes no simulated offset or
    /// drift (it has its own), needs upstreams to follow, and is not
    /// smeared (the kernel steps for a leap).
    pub(super) fn merge(
        file: ClockSection,
        args: &ClockSection,
        simulated_error: bool,
        primary: bool,
        smeared: bool,
    ) -> Result<Self, ConfigError> {
        let kind = match args.kind.or(file.kind).unwrap_or(ClockChoice::Virtual) {
            ClockChoice::Virtual => ClockKind::Virtual,
            ClockChoice::System => ClockKind::System,
        };
        let drift_file = args.drift_file.clone().or(file.drift_file);
        if kind == ClockKind::System {
            if simulated_error {
                return Err(invalid(
                    "server.clock-offset",
                    "the system clock takes no simulated offset or drift (kind = \"system\")".into(),
                ));
            }
            if primary {
                return Err(invalid("clock.kind", "the system clock is disciplined from upstreams: give some".into()));
            }
            if smeared {
                return Err(invalid("server.leap-smear", "the kernel steps the system clock for a leap".into()));
            }
        } else if drift_file.is_some() {
            return Err(invalid(
                "clock.drift-file",
                "only the system clock has a drift file (kind = \"system\")".into(),
            ));
        }
        Ok(Self {
            kind,
            drift_file,
            force: args.force.or(file.force).unwrap_or(false),
            allow_host: args.allow_host.or(file.allow_host).unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_is_the_default_and_system_needs_upstreams_and_no_simulated_error() {
        let system = ClockSection { kind: Some(ClockChoice::System), ..ClockSection::default() };
        let none = ClockSection::default();
        assert_eq!(ClockConfig::merge(none.clone(), &none, false, true, false).unwrap().kind, ClockKind::Virtual);
        assert_eq!(ClockConfig::merge(system.clone(), &none, false, false, false).unwrap().kind, ClockKind::System);
        assert!(ClockConfig::merge(none.clone(), &system, true, false, false).is_err());
        assert!(ClockConfig::merge(none.clone(), &system, false, true, false).is_err());
        assert!(ClockConfig::merge(none.clone(), &system, false, false, true).is_err(), "smeared");
        let drift = ClockSection { drift_file: Some("/tmp/x".into()), ..ClockSection::default() };
        assert!(ClockConfig::merge(drift, &none, false, false, false).is_err(), "a drift file for the virtual clock");
    }

    #[test]
    fn a_typo_in_the_clock_section_names_the_key() {
        let error = super::super::FileConfig::parse("[clock]\nkind = \"system\"\ndrift-fil = \"/x\"\n").unwrap_err();
        assert!(error.contains("drift-fil"), "{error}");
    }
}

//! Placeholder: filled in by the ntp-client issue.

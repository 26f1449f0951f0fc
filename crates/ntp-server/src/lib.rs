//! Placeholder: filled in by the ntp-server issue.

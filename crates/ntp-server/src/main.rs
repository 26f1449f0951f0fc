//! `ntpd-sim`: thin front end over the ntp-server library.
fn main() {}

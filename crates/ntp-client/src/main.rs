//! `ntp-query`: thin front end over the ntp-client library.
fn main() {}

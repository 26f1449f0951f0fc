//! Runs a scenario file through the simulator (until the CLI is wired).
fn main() {
    let path = std::env::args().nth(1).expect("scenario path");
    let out = std::env::args().nth(2).map(std::path::PathBuf::from);
    let options = ntp_server::simulate::SimulateOptions { out, progress: true, ..Default::default() };
    let outcome = ntp_server::simulate::run_file(std::path::Path::new(&path), &options).unwrap();
    print!("{}", outcome.table);
    eprintln!("{} events in {:?}", outcome.events, outcome.wall);
}

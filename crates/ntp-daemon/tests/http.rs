//! The HTTP side through the library: `/status` and `/metrics` of a live
//! primary server whose counters move as requests arrive, a 404 for any
//! other path, and an idle connection that holds nobody up.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use ntp_daemon::config::{FileConfig, Overrides, ServeConfig};
use ntp_daemon::daemon::primary_snapshot;
use ntp_daemon::observe::http::{self, HttpError};
use ntp_daemon::observe::metrics::Observed;
use ntp_daemon::observe::status::{Selection, StatusReport, SyncStatus};
use ntp_daemon::{PolicyConfig, Server, SharedClock};
use tokio::sync::watch;

#[tokio::test]
async fn status_and_metrics_follow_the_counters() {
    let config = ServeConfig::merge(FileConfig::default(), &Overrides::default()).unwrap();
    let clock = Arc::new(SharedClock::new(primary_snapshot(&config, -20)));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ntp = socket.local_addr().unwrap();
    let server = Server::start(vec![socket], &PolicyConfig::default(), Arc::clone(&clock)).unwrap();
    let (_status, receiver) = watch::channel(SyncStatus::default());
    let observed = Observed { clock, status: receiver, stats: Arc::clone(server.stats()) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(http::serve(listener, observed, async move {
        let _ = stopped.await;
    }));

    // An idle connection does not keep others waiting.
    let _idle = tokio::net::TcpStream::connect(address).await.unwrap();

    let report: StatusReport = serde_json::from_str(&http::get(address, "/status").await.unwrap()).unwrap();
    assert!(report.system.synchronized && report.upstreams.is_empty());
    assert_eq!((report.system.stratum, report.system.reference_id.as_str()), (1, "LOCL"));
    assert_eq!(report.counters.received, 0);

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut request = [0u8; 48];
    request[0] = 0x23;
    request[40] = 0xE0;
    client.send_to(&request, ntp).unwrap();
    client.recv_from(&mut [0u8; 64]).unwrap();
    client.send_to(&[0u8; 12], ntp).unwrap();

    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http::get(address, "/metrics").await.unwrap();
        if metrics.contains("ntp_requests_dropped_total{reason=\"malformed\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in [
        "# TYPE ntp_requests_received counter",
        "ntp_requests_received_total 2",
        "ntp_requests_answered_total 1",
        "ntp_requests_dropped_total{reason=\"malformed\"} 1",
        "ntp_clock_synchronized 1",
        "ntp_clock_stratum 1",
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(line)), "no `{line}` in\n{metrics}");
    }
    assert!(!metrics.contains("ntp_upstream_"), "a primary server has no upstream metrics");
    assert!(!metrics.contains("ntp_clock_offset_seconds"), "nor a last clock update");

    match http::get(address, "/nowhere").await {
        Err(HttpError::Status { status, .. }) => assert_eq!(status.as_u16(), 404),
        other => panic!("{other:?}"),
    }
    let _ = stop.send(());
    task.await.unwrap();
    server.stop().unwrap();
    assert_eq!(Selection::of(None, 0, false), Selection::Unreachable);
}

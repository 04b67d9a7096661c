//! The upgrade traffic generator against a local HTTP server on 127.0.0.1 that fails a known share
//! of requests and stalls some past the client timeout: counts, percentiles and the verdict of the
//! traffic-continuity check. Bounded: 60 requests, under two seconds.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use meshcheck::{
    checks,
    cluster::traffic::{Budget, TrafficGenerator, phase_stats},
    evidence::{Evidence, Outcome},
};

use crate::common::{http_response, http_server};

/// Answers the n-th request (1-based, in arrival order): every 10th stalls for 2 s, every other
/// 5th gets 503, the rest 200.
fn flaky_server() -> String {
    let count = AtomicUsize::new(0);
    let port = http_server(move |_| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let status = if n.is_multiple_of(10) {
            std::thread::sleep(Duration::from_secs(2));
            "200 OK"
        } else if n.is_multiple_of(5) {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        http_response(status, "text/plain", "ok")
    });
    format!("http://127.0.0.1:{port}/productpage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_counts_failures_and_stalls_and_the_check_judges_them() {
    let url = flaky_server();
    let budget =
        Budget { failed_requests: 0, max_outage: Duration::from_secs(10), step_min_success: Default::default() };
    let generator = TrafficGenerator::start(&url, 100, Duration::from_millis(500), budget, 60);
    tokio::time::sleep(Duration::from_millis(200)).await;
    generator.set_phase("during");
    tokio::time::sleep(Duration::from_millis(250)).await;
    generator.set_phase("after");
    // 60 requests at 100/s take 0.6 s; stalled ones give up after 0.5 s.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let record = generator.finish().await;

    assert_eq!(record.requests.len(), 60, "every request is recorded, whatever its fate");
    let timed_out = record.requests.iter().filter(|r| r.status == 0).count();
    let unavailable = record.requests.iter().filter(|r| r.status == 503).count();
    assert_eq!((timed_out, unavailable), (6, 6));
    assert!(record.requests.iter().filter(|r| r.status == 0).all(|r| r.error.is_some() && r.latency_ms >= 490.0));
    assert!(record.requests.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "sorted by send time");

    let stats = phase_stats(&record);
    let phases: Vec<&str> = stats.iter().map(|s| s.phase.as_str()).collect();
    assert_eq!(phases, ["before", "during", "after"]);
    assert_eq!(stats.iter().map(|s| s.total).sum::<usize>(), 60);
    assert_eq!(stats.iter().map(|s| s.failed).sum::<usize>(), 12);
    let all_p99 = stats.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
    assert!(all_p99 >= 490.0, "a stalled request sets p99: {stats:?}");
    assert!(stats.iter().all(|s| s.p50_ms < 490.0), "the median is a normal answer: {stats:?}");

    let dir = tempfile::tempdir().unwrap();
    let ev = Evidence::new(dir.path());
    let judge = checks::find("traffic-continuity").unwrap().judge;
    ev.write_json("upgrade/traffic.json", &record).unwrap();
    let v = judge(&ev);
    assert_eq!(v.outcome, Outcome::Fail);
    let e = v.explanation();
    assert!(e.contains("requests failed during the upgrade, budget 0"), "{e}");
    assert!(e.contains("during:") && e.contains("p99") && e.contains("status 503") && e.contains("status 0"), "{e}");

    // However large the budget, a failure before or after the upgrade is never allowed.
    let generous =
        meshcheck::cluster::traffic::TrafficRecord { failure_budget: 60, max_outage_secs: Some(60.0), ..record };
    ev.write_json("upgrade/traffic.json", &generous).unwrap();
    let v = judge(&ev);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation());
    assert!(v.reason.contains("before the upgrade") || v.reason.contains("after the upgrade"), "{}", v.reason);
}

/// A server on loopback that answers each connection with the next of `answers`; `None` accepts and
/// never answers (a stalled download).
async fn answering(answers: Vec<Option<&'static str>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut stalled = Vec::new();
        for answer in answers {
            let (mut conn, _) = listener.accept().await.unwrap();
            match answer {
                Some(status_and_body) => {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let (status, body) = status_and_body.split_once('|').unwrap();
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    conn.write_all(reply.as_bytes()).await.unwrap();
                }
                None => stalled.push(conn),
            }
        }
        std::future::pending::<()>().await;
    });
    format!("http://{addr}/standard-install.yaml")
}

fn quick(attempts: u32) -> meshcheck::cluster::download::Download {
    meshcheck::cluster::download::Download {
        connect: std::time::Duration::from_millis(300),
        total: std::time::Duration::from_millis(300),
        attempts,
        backoff: std::time::Duration::from_millis(10),
    }
}

/// Issue 22, item 2: a stalled manifest download ends at its deadline with the cause, and a passing
/// server error is retried.
#[tokio::test]
async fn a_stalled_download_ends_at_its_deadline_and_a_server_error_is_retried() {
    let url = answering(vec![None, None]).await;
    let started = std::time::Instant::now();
    let err = quick(2).text(&url).await.unwrap_err().to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "bounded: {:?}", started.elapsed());
    assert!(err.contains("attempt 2 of 2") && err.contains("timed out"), "{err}");

    let url = answering(vec![Some("503 Service Unavailable|busy"), Some("200 OK|kind: List")]).await;
    assert_eq!(quick(3).text(&url).await.unwrap(), "kind: List");

    let url = answering(vec![Some("404 Not Found|no such file")]).await;
    let err = quick(3).text(&url).await.unwrap_err().to_string();
    assert!(err.contains("attempt 1 of 3: HTTP 404"), "a 404 of a pinned URL is not retried: {err}");
}

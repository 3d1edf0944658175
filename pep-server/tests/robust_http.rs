//! Robustness of the real `pep-server` binary against hostile peers on both of its sides:
//! HTTP clients that send their headers byte by byte (slowloris) or open hundreds of idle
//! connections, and gateways that answer garbage, endless streams or nothing at all. In every case
//! the server keeps answering everyone else, drops the hostile connection within its timeouts, and
//! stores nothing for a failed injection.

use crate::http_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use fake_fcc::Sessions;
use http_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a hostile connection may survive: the server's header read timeout plus scheduling
/// slack on a loaded CI machine. Only an upper bound, never a timing assert on the fast path.
const DROP_BOUND: Duration = Duration::from_secs(45);

/// Reads from `stream` until the server closes it (EOF or reset); returns what it sent.
async fn wait_closed(stream: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Slowloris: connections that send a request head one byte per 500 ms never complete it. The
/// server keeps answering normal requests meanwhile and closes each slow connection after its
/// header read timeout.
#[tokio::test]
async fn slow_headers_are_dropped_and_others_keep_being_answered() {
    let server = Server::start(Options::default()).await;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    const SLOW: usize = 32;

    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..SLOW {
        let stream = TcpStream::connect(addr).await.unwrap();
        slow.push(tokio::spawn(async move {
            let mut stream = stream;
            let head = format!("GET /healthz HTTP/1.1\r\nHost: pep\r\nX-Slow-{i}: ");
            let mut sent = 0usize;
            // Send the head, then an endless header value, one byte at a time.
            let bytes = head.bytes().chain(std::iter::repeat(b'a'));
            for b in bytes {
                if stream.write_all(&[b]).await.is_err() {
                    break; // the server closed the connection
                }
                sent += 1;
                let mut probe = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut probe))
                    .await
                {
                    Err(_) => {}                     // still open, keep dripping
                    Ok(Ok(0)) | Ok(Err(_)) => break, // closed
                    Ok(Ok(_)) => break,              // an error answer (408/400), then close
                }
                if started.elapsed() > DROP_BOUND {
                    return (sent, false);
                }
            }
            (sent, true)
        }));
    }

    // Meanwhile the server answers others, on fresh connections, the whole time.
    let mut answered = 0;
    while slow.iter().any(|t| !t.is_finished()) && started.elapsed() < DROP_BOUND {
        let (status, body) = server.get_text("/healthz", None).await;
        assert_eq!(status, 200, "{body}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut max_sent = 0;
    for task in slow {
        let (sent, dropped) = task.await.unwrap();
        assert!(
            dropped,
            "a slow connection was still open after {DROP_BOUND:?}"
        );
        max_sent = max_sent.max(sent);
    }
    assert!(answered > 0);
    // The figures for docs/robustness.md.
    println!(
        "slowloris: {SLOW} connections dropped after {:.1} s (at most {max_sent} header bytes each); {answered} normal requests answered meanwhile",
        started.elapsed().as_secs_f64()
    );
    // Provisioning still works afterwards.
    let (gw, _h) = gateway(Sessions::One, &[]).await;
    let (status, body) = server.identity("GW-AFTER-SLOW", gw).await;
    assert_eq!(status, 200, "{body}");
}

/// 500 idle connections (connected, nothing sent) and 100 with half a request head: requests and a
/// provisioning are still answered, and the server closes the idle ones after its header timeout.
#[tokio::test]
async fn many_idle_connections_do_not_starve_the_server() {
    let server = Server::start(Options::default()).await;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    const IDLE: usize = 500;
    const HALF: usize = 100;

    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE + HALF);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..HALF {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v3/enrollment-ids HTTP/1.1\r\nHost: pep\r\n")
            .await
            .unwrap();
        idle.push(s);
    }

    // Everyone else is still served: reads, metrics and an injection.
    for _ in 0..20 {
        let (status, body) = server.get_text("/healthz", None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server.get_text("/metrics", Some(READ)).await;
    assert_eq!(status, 200);
    let (gw, _h) = gateway(Sessions::One, &[]).await;
    let (status, body) = server.identity("GW-IDLE-1", gw).await;
    assert_eq!(status, 200, "{body}");

    // Every idle connection is closed by the server (none of them answered with a 200).
    let mut closed = 0;
    for mut s in idle {
        let left = DROP_BOUND.saturating_sub(started.elapsed());
        let got = wait_closed(&mut s, left.max(Duration::from_secs(1))).await;
        let got = got.expect("an idle connection was never closed by the server");
        assert!(
            !String::from_utf8_lossy(&got).contains(" 200 "),
            "an incomplete request was answered 200"
        );
        closed += 1;
    }
    println!(
        "idle: {IDLE} silent + {HALF} half-head connections all closed by the server within {:.1} s; requests answered meanwhile",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(closed, IDLE + HALF);
    // Still serving.
    let (status, _) = server.get_text("/healthz", None).await;
    assert_eq!(status, 200);
}

/// What a hostile "gateway" does once the server connected.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Read the request, answer random bytes without a token, keep sending.
    EndlessGarbage,
    /// The token and status 0, then a length over the frame limit, then endless bytes.
    EndlessOversize,
    /// A valid header announcing 1 MiB, then an endless stream of zeros: the hash cannot match.
    EndlessBody,
    /// A status-0 header, then one byte every 100 ms, forever (bounded by the read timeout).
    Drip,
    /// Endless repeats of the 12-byte wire-status-3 frame.
    EndlessStatusFrames,
    /// A short body frame whose CBOR is garbage (the hash is right).
    GarbageCbor,
    /// Half a frame, then close.
    Truncated,
}

/// Serves one connection with `reply`; returns how many bytes were written before the server
/// closed the connection.
async fn hostile_gateway(reply: Reply) -> (SocketAddr, tokio::task::JoinHandle<u64>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // Read the request frame (whatever arrives within a moment).
        let mut req = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut req)).await;
        let mut written = 0u64;
        let chunk_of = |b: u8| vec![b; 16 * 1024];
        let mut write = async |s: &mut TcpStream, bytes: &[u8]| -> bool {
            match s.write_all(bytes).await {
                Ok(()) => {
                    written += bytes.len() as u64;
                    true
                }
                Err(_) => false,
            }
        };
        match reply {
            Reply::EndlessGarbage => {
                let mut x: u32 = 0x1234_5678;
                loop {
                    let chunk: Vec<u8> = (0..16 * 1024)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            (x & 0xff) as u8 | 0x80 // never 'm': no token can start
                        })
                        .collect();
                    if !write(&mut s, &chunk).await {
                        break;
                    }
                }
            }
            Reply::EndlessOversize => {
                let mut head = b"mbedprov".to_vec();
                head.extend_from_slice(&0u32.to_le_bytes());
                head.extend_from_slice(&u32::MAX.to_le_bytes());
                if write(&mut s, &head).await {
                    while write(&mut s, &chunk_of(0x41)).await {}
                }
            }
            Reply::EndlessBody => {
                let mut head = b"mbedprov".to_vec();
                head.extend_from_slice(&0u32.to_le_bytes());
                head.extend_from_slice(&(1024u32 * 1024).to_le_bytes());
                if write(&mut s, &head).await {
                    while write(&mut s, &chunk_of(0)).await {}
                }
            }
            Reply::Drip => {
                let mut head = b"mbedprov".to_vec();
                head.extend_from_slice(&0u32.to_le_bytes());
                head.extend_from_slice(&4096u32.to_le_bytes());
                if write(&mut s, &head).await {
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if !write(&mut s, &[0xbf]).await {
                            break;
                        }
                    }
                }
            }
            Reply::EndlessStatusFrames => {
                let mut frame = b"mbedprov".to_vec();
                frame.extend_from_slice(&3u32.to_le_bytes());
                let many: Vec<u8> = frame.iter().copied().cycle().take(12 * 1024).collect();
                while write(&mut s, &many).await {}
            }
            Reply::GarbageCbor => {
                let body = b"\xff\xfe this is not CBOR";
                let frame = fcc_proto::frame::encode_response(&fcc_proto::ResponseFrame::Body(
                    bytes::Bytes::from_static(body),
                ));
                write(&mut s, &frame).await;
                // Then wait for the server to hang up.
                let mut sink = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(30), s.read(&mut sink)).await;
            }
            Reply::Truncated => {
                let mut head = b"mbedprov".to_vec();
                head.extend_from_slice(&0u32.to_le_bytes());
                head.extend_from_slice(&100u32.to_le_bytes());
                head.extend_from_slice(&[0xbf; 40]);
                write(&mut s, &head).await;
            }
        }
        written
    });
    (addr, task)
}

/// A gateway that answers garbage, an endless stream or a dribble gets a 502/504 within the FCC
/// read timeout, the server stops reading (bounded by the frame limit), and nothing is stored:
/// the serial is not deployed and provisions normally from a real gateway afterwards.
#[tokio::test]
async fn hostile_gateway_replies_are_bounded_and_store_nothing() {
    let server = Server::start(Options {
        read_timeout_ms: 2_000,
        ..Options::default()
    })
    .await;
    let cases = [
        (Reply::EndlessGarbage, 502),
        (Reply::EndlessOversize, 502),
        (Reply::EndlessBody, 502),
        (Reply::Drip, 504),
        (Reply::EndlessStatusFrames, 502),
        (Reply::GarbageCbor, 502),
        (Reply::Truncated, 502),
    ];
    let (good, _g) = gateway(Sessions::Forever, &[]).await;
    for (i, (reply, expected)) in cases.into_iter().enumerate() {
        let serial = format!("GW-HOSTILE-{i}");
        let (addr, task) = hostile_gateway(reply).await;
        let started = Instant::now();
        let (status, body) = server.identity(&serial, addr).await;
        let took = started.elapsed();
        assert_eq!(status, expected, "{reply:?}: {body}");
        assert_eq!(body["retryable"], true, "{reply:?}: {body}");
        assert_eq!(body["gateway"], addr.to_string(), "{reply:?}: {body}");
        // The server hung up: the hostile writer stops (a write fails) instead of streaming on.
        let written = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{reply:?}: the server kept the connection open"))
            .unwrap();
        println!(
            "hostile gateway {reply:?}: HTTP {status} after {:.2} s, {written} bytes written before the server hung up",
            took.as_secs_f64()
        );
        // Bounded by the frame limit (1 MiB) plus what the kernel buffers on both sides.
        assert!(
            written < 64 * 1024 * 1024,
            "{reply:?}: {written} bytes accepted"
        );

        let (status, _) = server
            .get_text(
                &format!("/v3/enrollment-id?serialNumber={serial}"),
                Some(READ),
            )
            .await;
        assert_eq!(status, 404, "{reply:?}: {serial} must not be deployed");
    }
    assert!(server.walk(50, "ASC").await.is_empty(), "nothing deployed");
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"failed\"}")
            .await,
        cases.len() as f64
    );
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"in_flight\"}")
            .await,
        0.0
    );
    // Every serial provisions from a real gateway afterwards.
    for i in 0..cases.len() {
        let (status, body) = server.identity(&format!("GW-HOSTILE-{i}"), good).await;
        assert_eq!(status, 200, "retry {i}: {body}");
    }
    assert_eq!(server.walk(50, "ASC").await.len(), cases.len());
}

/// A refused connection and a gateway that accepts but never reads are also bounded (504) and
/// leave the serial retryable.
#[tokio::test]
async fn refused_and_never_reading_gateways_time_out_cleanly() {
    let server = Server::start(Options {
        read_timeout_ms: 1_500,
        write_timeout_ms: 1_500,
        ..Options::default()
    })
    .await;
    let dead = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dead_port());
    let (status, body) = server.identity("GW-REFUSED", dead).await;
    assert_eq!(status, 504, "{body}");
    let (never, _h) = gateway(
        Sessions::Forever,
        &[fake_fcc::FaultKind::AcceptThenNeverRead],
    )
    .await;
    let (status, body) = server.identity("GW-NEVER-READ", never).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        server
            .metric("pep_store_identities{state=\"failed\"}")
            .await,
        2.0
    );
}

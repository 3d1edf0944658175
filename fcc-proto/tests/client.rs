//! `FccClient` against tiny real TCP servers on 127.0.0.1, one per misbehaviour: each failure
//! mode gives its own `FccError` variant.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fcc_proto::frame::{self, DeviceCodec, ResponseFrame};
use fcc_proto::{
    Bundle, ConfigParam, FccClient, FccError, FccStatus, Response, Timeouts, WireStatus,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;

/// Starts a one-connection server running `handler` and returns its address.
async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        handler(stream).await;
    });
    addr
}

/// Reads one request frame the way the device does and returns its body.
async fn read_request(stream: &mut TcpStream) -> Option<Bytes> {
    let mut framed = FramedRead::new(stream, DeviceCodec::new());
    framed.next().await.and_then(Result::ok)
}

/// Reads one request and answers with `reply` bytes.
async fn answer_with(reply: Vec<u8>) -> SocketAddr {
    serve(move |mut s| async move {
        let _ = read_request(&mut s).await;
        s.write_all(&reply).await.unwrap();
        // Keep the connection open a moment so the client reads before EOF.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await
}

fn short() -> Timeouts {
    Timeouts::all(Duration::from_secs(5))
}

fn ping() -> Bundle {
    Bundle {
        verify: Some(false),
        keep_alive: Some(true),
        ..Bundle::default()
    }
}

async fn send_ping(addr: SocketAddr) -> Result<Response, FccError> {
    FccClient::connect(addr, short()).await?.send(&ping()).await
}

#[tokio::test]
async fn correct_server_multi_message_session() {
    // An echo-ish device: answers every request of the session with success, echoing the SID,
    // until a message without keep-alive arrives.
    let addr = serve(|mut s| async move {
        let mut framed = FramedRead::new(&mut s, DeviceCodec::new());
        while let Some(Ok(body)) = framed.next().await {
            let bundle = Bundle::decode(&body).unwrap();
            let last = bundle.keep_alive != Some(true);
            let resp = Response::success(bundle.sid.clone());
            let reply = frame::encode_response(&ResponseFrame::Body(resp.encode().into()));
            framed.get_mut().write_all(&reply).await.unwrap();
            if last {
                break;
            }
        }
    })
    .await;

    let mut client = FccClient::connect(addr, short()).await.unwrap();
    assert_eq!(client.peer(), addr);
    for i in 0..3 {
        let bundle = Bundle {
            sid: Some(format!("s-{i}")),
            config_params: vec![ConfigParam::text(fcc_proto::names::ENDPOINT_NAME, "ep")],
            keep_alive: Some(i < 2),
            verify: Some(i == 2),
            ..Bundle::default()
        };
        let resp = client.send(&bundle).await.unwrap();
        assert!(resp.is_success());
        assert_eq!(resp.return_status, FccStatus::Success);
        assert_eq!(resp.sid.as_deref(), Some(format!("s-{i}").as_str()));
    }
    // The device ended the session: another message gets no response.
    let err = client.send(&ping()).await.unwrap_err();
    assert!(matches!(err, FccError::ClosedWithoutResponse), "{err}");
}

#[tokio::test]
async fn error_return_status_is_a_response_not_an_error() {
    let resp = Response::error(None, FccStatus::BundleInvalidScheme, "General error:");
    let addr = answer_with(frame::encode_response(&ResponseFrame::Body(
        resp.encode().into(),
    )))
    .await;
    let got = send_ping(addr).await.unwrap();
    assert_eq!(got, resp);
    assert!(!got.is_success());
}

#[tokio::test]
async fn close_without_reply() {
    let addr = serve(|mut s| async move {
        let _ = read_request(&mut s).await;
        drop(s);
    })
    .await;
    let err = send_ping(addr).await.unwrap_err();
    assert!(matches!(err, FccError::ClosedWithoutResponse), "{err}");
    assert!(!err.is_timeout() && !err.is_unreachable());
}

#[tokio::test]
async fn wire_status_9() {
    let addr = answer_with(frame::encode_response(&ResponseFrame::Status(
        WireStatus::FailedToProcessData,
    )))
    .await;
    let err = send_ping(addr).await.unwrap_err();
    assert!(
        matches!(err, FccError::WireStatus(WireStatus::FailedToProcessData)),
        "{err}"
    );
    assert!(err.to_string().contains("wire status"), "{err}");
}

#[tokio::test]
async fn bad_token() {
    let mut reply = frame::encode_response(&ResponseFrame::Body(
        Response::success(None).encode().into(),
    ));
    reply[0] = b'x';
    let err = send_ping(answer_with(reply).await).await.unwrap_err();
    assert!(matches!(err, FccError::BadToken), "{err}");
}

#[tokio::test]
async fn bad_hash() {
    let mut reply = frame::encode_response(&ResponseFrame::Body(
        Response::success(None).encode().into(),
    ));
    let last = reply.len() - 1;
    reply[last] ^= 0xff;
    let err = send_ping(answer_with(reply).await).await.unwrap_err();
    assert!(matches!(err, FccError::HashMismatch), "{err}");
}

#[tokio::test]
async fn oversize_length() {
    let mut reply = b"mbedprov\0\0\0\0".to_vec();
    reply.extend_from_slice(&(64 * 1024 * 1024u32).to_le_bytes());
    let err = send_ping(answer_with(reply).await).await.unwrap_err();
    assert!(
        matches!(err, FccError::Oversize { len, max } if len == 64 * 1024 * 1024 && max == 1024 * 1024),
        "{err}"
    );
}

#[tokio::test]
async fn oversize_with_custom_limit() {
    let reply = frame::encode_response(&ResponseFrame::Body(
        Response::success(None).encode().into(),
    ));
    let addr = answer_with(reply).await;
    let mut client = FccClient::connect(addr, short())
        .await
        .unwrap()
        .with_max_frame_len(40);
    let err = client.send(&ping()).await.unwrap_err();
    assert!(
        matches!(err, FccError::Oversize { len: 80, max: 40 }),
        "{err}"
    );
}

#[tokio::test]
async fn undecodable_cbor() {
    let reply = frame::encode_response(&ResponseFrame::Body(Bytes::from_static(
        b"\xbf\x6cReturnSt",
    )));
    let err = send_ping(answer_with(reply).await).await.unwrap_err();
    assert!(matches!(err, FccError::UndecodableCbor(_)), "{err}");
}

#[tokio::test]
async fn truncated_response() {
    let reply = frame::encode_response(&ResponseFrame::Body(
        Response::success(None).encode().into(),
    ));
    let addr = serve(move |mut s| async move {
        let _ = read_request(&mut s).await;
        s.write_all(&reply[..50]).await.unwrap();
    })
    .await;
    let err = send_ping(addr).await.unwrap_err();
    assert!(matches!(err, FccError::Truncated), "{err}");
}

#[tokio::test]
async fn never_answers_is_a_read_timeout() {
    let addr = serve(|mut s| async move {
        let _ = read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let timeouts = Timeouts {
        read: Duration::from_millis(200),
        ..short()
    };
    let mut client = FccClient::connect(addr, timeouts).await.unwrap();
    let err = client.send(&ping()).await.unwrap_err();
    assert!(matches!(err, FccError::ReadTimeout), "{err}");
    assert!(err.is_timeout());
}

#[tokio::test]
async fn never_reads_is_a_write_timeout() {
    // The server accepts but never reads; a body larger than the loopback socket buffers
    // cannot be written completely.
    let addr = serve(|s| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    })
    .await;
    let timeouts = Timeouts {
        write: Duration::from_millis(200),
        ..short()
    };
    let mut client = FccClient::connect(addr, timeouts)
        .await
        .unwrap()
        .with_max_frame_len(64 * 1024 * 1024);
    let body = vec![0x40u8; 32 * 1024 * 1024];
    let err = client.send_raw(&body).await.unwrap_err();
    assert!(matches!(err, FccError::WriteTimeout), "{err}");
    assert!(err.is_timeout());
}

#[tokio::test]
async fn closed_port_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = FccClient::connect(addr, short()).await.unwrap_err();
    assert!(matches!(err, FccError::Refused), "{err}");
    assert!(err.is_unreachable());
}

#[tokio::test]
async fn empty_and_oversize_requests_are_refused_before_sending() {
    let addr = serve(|mut s| async move {
        let _ = read_request(&mut s).await;
    })
    .await;
    let mut client = FccClient::connect(addr, short())
        .await
        .unwrap()
        .with_max_frame_len(16);
    assert!(matches!(
        client.send_raw(b"").await,
        Err(FccError::ZeroLength)
    ));
    let err = client.send(&ping()).await.unwrap_err();
    assert!(
        matches!(err, FccError::Oversize { len: 40, max: 16 }),
        "{err}"
    );
}

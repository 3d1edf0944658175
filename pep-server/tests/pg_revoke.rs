//! Issue #16 on PostgreSQL: two real `pep-server` processes sharing one database. A revocation
//! on one server is in the other's CRL and CSV; both race to provision the revoked serial again:
//! one wins, the old identity is archived once; the CRL number grows across both servers and a
//! restart.

use crate::http_support;
use crate::pg_support;

use std::sync::Arc;

use fake_fcc::Sessions;
use http_support::{Options, READ, Server, config_toml, gateway};
use pep_server::store::{Store, migrate_store};
use pg_support::TestDb;
use serde_json::Value;

const REVOKER: &str = "test-token-revoke-0123456789";

async fn start(db: &TestDb, server_id: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let text = config_toml(dir.path(), &Options::default());
    let sqlite = text
        .lines()
        .find(|l| l.starts_with("database_url"))
        .unwrap()
        .to_owned();
    let text = text.replacen(
        &sqlite,
        &format!("database_url = \"{}\"\nserver_id = \"{server_id}\"", db.url),
        1,
    );
    let text = format!(
        "{text}\n[[tokens]]\nname = \"revoker\"\ntoken = \"{REVOKER}\"\nroles = [\"revoke\"]\n"
    );
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    Server::start_in(dir).await
}

async fn crl_number(server: &Server) -> (u64, Vec<u8>) {
    let r = server.get("/v3/crl", None).await;
    assert_eq!(r.status(), 200);
    let n = r.headers()["x-crl-number"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (n, r.bytes().await.unwrap().to_vec())
}

/// The serial numbers (upper-case hex) the CRL lists.
fn listed(der: &[u8]) -> Vec<String> {
    use der::Decode;
    let crl = x509_cert::crl::CertificateList::from_der(der).unwrap();
    crl.tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .map(|e| hex::encode_upper(e.serial_number.as_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_and_reprovision_across_two_servers_on_postgresql() {
    let db = TestDb::create().await;
    let a = Arc::new(start(&db, "line-a").await);
    let b = Arc::new(start(&db, "line-b").await);
    let (gw, _gw) = gateway(Sessions::Forever, &[]).await;

    let (status, first) = a.identity("GW-PG-RV", gw).await;
    assert_eq!(status, 200, "{first}");
    let first_id = first["enrollmentID"].as_str().unwrap().to_owned();
    let (n0, _) = crl_number(&a).await;

    // Revoked through server b.
    let r = b
        .client
        .post(format!("{}/v3/identities/GW-PG-RV/revoke", b.base))
        .bearer_auth(REVOKER)
        .json(&serde_json::json!({"reason": "cessationOfOperation", "note": "scrapped"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let cert = answer["certificateSerial"].as_str().unwrap().to_owned();

    // Server a, which signed a CRL before, sees the change: a new CRL with a greater number.
    let (n1, der) = crl_number(&a).await;
    assert!(n1 > n0, "{n1} > {n0}");
    assert_eq!(listed(&der), vec![cert.clone()]);
    let (n2, der_b) = crl_number(&b).await;
    assert!(n2 > n1, "numbers are shared by both servers: {n2} > {n1}");
    assert_eq!(listed(&der_b), vec![cert.clone()]);
    let (status, csv) = a
        .get_text("/v3/enrollment-ids.csv?state=revoked", Some(READ))
        .await;
    assert_eq!(status, 200);
    assert!(csv.contains(&first_id), "{csv}");

    // Both servers provision the revoked serial at once: one wins, the other finds it in flight
    // or deployed (409); the old identity is archived exactly once.
    let (ra, rb) = tokio::join!(a.identity("GW-PG-RV", gw), b.identity("GW-PG-RV", gw));
    let mut statuses = [ra.0, rb.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{ra:?} {rb:?}");
    let winner = if ra.0 == 200 { &ra.1 } else { &rb.1 };
    let new_id = winner["enrollmentID"].as_str().unwrap();
    assert_ne!(new_id, first_id);

    let (status, body) = b.get_json("/v3/identities/GW-PG-RV", Some(READ)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current"]["enrollmentID"], new_id);
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{body}");
    assert_eq!(history[0]["enrollmentID"], first_id.as_str());
    assert_eq!(history[0]["revocation"]["reason"], "cessationOfOperation");
    assert_eq!(history[0]["revocation"]["note"], "scrapped");

    // The old certificate stays in the CRL; the number keeps growing after a restart.
    drop(b);
    let a = Arc::try_unwrap(a).ok().unwrap();
    let dir = a.kill9().await;
    let a = Server::start_in(dir).await;
    let (n3, der) = crl_number(&a).await;
    assert!(n3 > n2, "after the restart: {n3} > {n2}");
    assert_eq!(listed(&der), vec![cert]);
}

/// `migrate-store` SQLite → PostgreSQL keeps the revocation, the history and the CRL number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_copies_history_revocations_and_the_crl_number() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[tokens]]\nname = \"revoker\"\ntoken = \"{REVOKER}\"\nroles = [\"revoke\"]\n",
        config_toml(dir.path(), &Options::default())
    );
    std::fs::write(dir.path().join("pep.toml"), text).unwrap();
    let server = Server::start_in(dir).await;
    let (gw, _gw) = gateway(Sessions::Forever, &[]).await;
    assert_eq!(server.identity("GW-MIG-RV", gw).await.0, 200);
    let r = server
        .client
        .post(format!("{}/v3/identities/GW-MIG-RV/revoke", server.base))
        .bearer_auth(REVOKER)
        .json(&serde_json::json!({"reason": "superseded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.identity("GW-MIG-RV", gw).await.0, 200);
    let (n, _) = crl_number(&server).await;
    let dir = server.kill9().await;

    let source = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("pep.sqlite").display()
    ))
    .await
    .unwrap();
    let db = TestDb::create().await;
    let target = Store::open(&db.url).await.unwrap();
    let report = migrate_store(&source, &target).await.unwrap();
    assert_eq!((report.deployed, report.history), (1, 1), "{report:?}");
    assert_eq!(
        source.history("GW-MIG-RV").await.unwrap(),
        target.history("GW-MIG-RV").await.unwrap()
    );
    assert_eq!(target.history("GW-MIG-RV").await.unwrap().len(), 1);
    assert_eq!(
        source.revoked_certificates().await.unwrap(),
        target.revoked_certificates().await.unwrap()
    );
    assert!(target.next_crl_number().await.unwrap() > n);
    source.close().await;
    target.close().await;
}

//! TLS: a throwaway server with `ssl=on` and a self-signed certificate
//! made here (rcgen). A URL with `sslmode=require` connects over TLS when
//! the certificate is trusted (by `tls_root_certificates` or the URL's
//! `sslrootcert`), and every connection of the backend (the pool's and the
//! listening one) is encrypted; an untrusted certificate and a server
//! without TLS are refused, saying why.

use durable_postgres::testing::TestCluster;
use durable_postgres::{ConnectError, PostgresBackend, PostgresOptions};
use durable_runtime::{ActivityError, Client, Registry, ScheduleOptions, Worker};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The TLS server of this test binary, and its certificate's file.
fn server() -> &'static (TestCluster, PathBuf) {
    static SERVER: OnceLock<(TestCluster, PathBuf)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap_or_else(|e| panic!("making a certificate failed: {e}"));
        let cert = made.cert.pem();
        let cluster = TestCluster::start_tls(&cert, &made.key_pair.serialize_pem())
            .unwrap_or_else(|e| panic!("{e}"));
        let file = cluster
            .dir()
            .expect("the TLS server was started here")
            .join("trusted.pem");
        std::fs::write(&file, cert).unwrap();
        (cluster, file)
    })
}

/// The server's URL asking for TLS, with `application_name` set to `app`.
fn tls_url(app: &str) -> String {
    format!(
        "{}?sslmode=require&application_name={app}",
        server().0.url()
    )
}

fn options(schema: String) -> PostgresOptions {
    PostgresOptions {
        schema,
        pool_size: 2,
        ..PostgresOptions::default()
    }
}

/// How many of the sessions named `app` are encrypted, and how many not.
async fn sessions(app: &str) -> (i64, i64) {
    let (admin, connection) = tokio_postgres::connect(server().0.url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting without TLS failed: {e}"));
    tokio::spawn(connection);
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_certificate_gives_encrypted_connections_that_run_work() {
    let (cluster, cert) = server();
    let app = "tls_trusted";
    let backend = Arc::new(
        PostgresBackend::connect_with(
            &tls_url(app),
            PostgresOptions {
                tls_root_certificates: Some(cert.clone()),
                ..options(cluster.fresh_schema())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("connecting over TLS failed: {e}")),
    );
    let registry = Registry::new()
        .activity_fn(
            "inc",
            |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .orchestrator_fn("two", |ctx, x: i64| async move {
            let y: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let z: i64 = ctx.call_activity_by_name("inc", &y).await?;
            Ok(z)
        });
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend.clone());
    let id = client
        .schedule_by_name("two", &40i64, ScheduleOptions::default())
        .await
        .unwrap();
    let state = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.output::<i64>().unwrap(), 42);
    let (encrypted, plain) = sessions(app).await;
    println!("over TLS: {encrypted} encrypted sessions, {plain} plain");
    assert!(
        encrypted >= 2,
        "the pool's and the listening connection are encrypted: {encrypted}"
    );
    assert_eq!(plain, 0, "a connection of the backend is not encrypted");
    worker.shutdown().await;
}

#[tokio::test]
async fn sslrootcert_in_the_url_names_the_certificate_to_trust() {
    let (cluster, cert) = server();
    let app = "tls_url_root";
    let url = format!("{}&sslrootcert={}", tls_url(app), cert.display());
    let backend = PostgresBackend::connect_with(&url, options(cluster.fresh_schema()))
        .await
        .unwrap_or_else(|e| panic!("connecting with sslrootcert failed: {e}"));
    let (encrypted, plain) = sessions(app).await;
    assert!(encrypted >= 1 && plain == 0, "{encrypted} / {plain}");
    drop(backend);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_saying_what_to_do() {
    let (cluster, _) = server();
    // Mozilla's roots do not include a self-signed certificate.
    let e =
        PostgresBackend::connect_with(&tls_url("tls_untrusted"), options(cluster.fresh_schema()))
            .await
            .expect_err("an untrusted certificate was accepted");
    let m = e.to_string();
    println!("{m}");
    assert!(matches!(e, ConnectError::Tls { .. }), "{e:?}");
    assert!(
        m.contains("certificate") && m.contains("tls_root_certificates"),
        "{m}"
    );
}

#[tokio::test]
async fn a_server_without_tls_is_refused_when_tls_is_required() {
    // The shared server of this binary has TLS off.
    let plain = TestCluster::shared();
    let url = format!("{}?sslmode=require", plain.url());
    let e = PostgresBackend::connect_with(&url, options(plain.fresh_schema()))
        .await
        .expect_err("TLS was required and the server has none");
    let m = e.to_string();
    println!("{m}");
    assert!(matches!(e, ConnectError::Tls { .. }), "{e:?}");
    assert!(m.contains("TLS"), "{m}");
}

//! TLS to PostgreSQL against a real server: a private PostgreSQL instance started for the test
//! in a temporary directory (the system's server is left alone), with `ssl = on`, a server
//! certificate for 127.0.0.1 only from a CA made at test time, and a `pg_hba.conf` that admits
//! TCP connections over TLS only (`hostssl`), so any connection that works was encrypted.
//!
//! The PostgreSQL server binaries must be installed (Debian: `postgresql-15`); the test fails,
//! never skips, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use medhub_store::{DynStore, Location, StoreError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA certificate (PEM) and the issuer to sign with.
fn ca(name: &str) -> (String, CertifiedIssuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    (issuer.pem(), issuer)
}

/// A server certificate for `names` (CA:FALSE) and its key, PEM.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.is_ca = IsCa::ExplicitNoCa;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The directory holding `initdb` and `pg_ctl`: the newest Debian-installed version, else
/// what `pg_config --bindir` says.
fn pg_bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let from_pg_config = Command::new("pg_config").arg("--bindir").output().ok().and_then(|o| {
        let dir = PathBuf::from(String::from_utf8(o.stdout).ok()?.trim());
        dir.join("initdb").exists().then_some(dir)
    });
    from_pg_config.unwrap_or_else(|| {
        panic!("PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: postgresql-15)")
    })
}

/// A PostgreSQL server of the test's own, stopped when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb refuses to run as root: then the server runs as the `postgres` user.
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Starts a server presenting `cert_pem`/`key_pem` on 127.0.0.1, admitting only TLS over TCP.
    fn start(cert_pem: &str, key_pem: &str) -> Self {
        let bin = pg_bindir();
        let dir = tempfile::Builder::new().prefix("medhub-pg-tls-").tempdir().unwrap();
        let as_postgres = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let key = dir.path().join("server.key");
        std::fs::write(dir.path().join("server.crt"), cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        // PostgreSQL refuses a key that others can read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if as_postgres {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown the test directory to postgres");
        }
        let pg = Self { dir, bin, port, as_postgres };
        let data = pg.data();
        pg.run("initdb", &["-D", path(&data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        let dir = pg.dir.path();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\nmax_connections = 20\nshared_buffers = 16MB\n",
            dir = dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // Local socket for nobody but the owner's tools; TCP over TLS only.
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").unwrap();
        let log = dir.join("server.log");
        let started = pg.command("pg_ctl", &["-D", path(&data), "-l", path(&log), "-w", "-t", "60", "start"]).status();
        if !started.unwrap().success() {
            panic!("PostgreSQL did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.args(args).current_dir(self.dir.path());
        c
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool, args).output().unwrap();
        assert!(out.status.success(), "{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A URL for `host` with `params` appended.
    fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres{params}", self.port)
    }

    /// Writes a file the client (this process) reads.
    fn file(&self, name: &str, contents: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p.display().to_string()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.command("pg_ctl", &["-D", path(&data), "-m", "immediate", "-w", "stop"]).output();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(file).unwrap().write_all(text.as_bytes()).unwrap();
}

async fn open(url: &str) -> Result<DynStore, StoreError> {
    medhub_store::open(&Location::Postgres { url: url.to_owned(), pool_size: 2 }).await
}

async fn refused(url: &str) -> String {
    match open(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let (ca_pem, issuer) = ca("medhub test CA");
    let (other_ca_pem, _) = ca("some other CA");
    let (cert, key) = leaf(&issuer, &["127.0.0.1"]);
    let pg = PrivatePostgres::start(&cert, &key);
    let ca = pg.file("ca.pem", &ca_pem);
    let other_ca = pg.file("other-ca.pem", &other_ca_pem);

    // The right CA and the certificate's address: connects, and the store works.
    let store = open(&pg.url("127.0.0.1", &format!("?sslmode=verify-full&sslrootcert={ca}"))).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.last_event_id().await.unwrap().get(), 0);
    drop(store);

    // Another CA: refused.
    let e = refused(&pg.url("127.0.0.1", &format!("?sslmode=verify-full&sslrootcert={other_ca}"))).await;
    assert!(e.contains("TLS handshake") && e.contains("UnknownIssuer"), "{e}");

    // The right CA but a name the certificate does not carry ("localhost"): refused...
    let e = refused(&pg.url("localhost", &format!("?sslmode=verify-full&sslrootcert={ca}"))).await;
    assert!(e.contains("TLS handshake") && e.contains("not valid for name"), "{e}");
    // ...while verify-ca, which checks the chain only, accepts it, and still refuses another CA.
    let store = open(&pg.url("localhost", &format!("?sslmode=verify-ca&sslrootcert={ca}"))).await.unwrap();
    store.ping().await.unwrap();
    drop(store);
    let e = refused(&pg.url("localhost", &format!("?sslmode=verify-ca&sslrootcert={other_ca}"))).await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    // The system roots do not hold the test CA.
    let e = refused(&pg.url("127.0.0.1", "?sslmode=verify-full")).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_and_prefer_is_not_accepted() {
    let (_, issuer) = ca("medhub test CA");
    let (cert, key) = leaf(&issuer, &["127.0.0.1"]);
    let pg = PrivatePostgres::start(&cert, &key);

    // A hostssl-only server refuses plain connections, asked for or by default.
    for params in ["?sslmode=disable", ""] {
        let e = refused(&pg.url("127.0.0.1", params)).await;
        assert!(e.contains("pg_hba.conf") && e.contains("no encryption"), "{params}: {e}");
    }
    // require without a root certificate encrypts without checking (libpq's meaning): it connects.
    let store = open(&pg.url("127.0.0.1", "?sslmode=require")).await.unwrap();
    store.ping().await.unwrap();
    drop(store);
    // prefer would fall back to plaintext: refused before connecting, saying why.
    let e = refused(&pg.url("127.0.0.1", "?sslmode=prefer")).await;
    assert!(e.contains("falls back to an unencrypted connection"), "{e}");
}

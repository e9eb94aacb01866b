//! A throwaway PostgreSQL server for tests and benchmarks.
//!
//! [`TestCluster::shared`] gives the server of this process: the one named
//! by the environment variable `DURABLE_TEST_POSTGRES_URL` if it is set,
//! otherwise a cluster of its own, created on first use with `initdb` in a
//! temporary directory and started with `pg_ctl` on a free loopback port
//! (its Unix socket in that directory too, `fsync` off). The cluster is
//! stopped and its directory removed when the process ends, however it
//! ends: a watchdog process waits for the end of a pipe this process holds
//! open.
//!
//! `initdb` and `pg_ctl` are looked for on `PATH`, then in
//! `/usr/lib/postgresql/<version>/bin` (Debian's layout, newest version
//! first). If they are missing, [`TestCluster::shared`] panics with the
//! command that installs them: tests using it fail, they never skip.
//! PostgreSQL refuses to run as root, so as root the server runs as the
//! user `postgres` (or `nobody` if there is none), which owns the directory.
//!
//! Each test takes a schema of its own ([`TestCluster::fresh_schema`]), so
//! tests share the server without seeing each other's instances.
//!
//! ```no_run
//! use durable_postgres::{testing::TestCluster, PostgresBackend, PostgresOptions};
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = TestCluster::shared();
//! let options = PostgresOptions { schema: cluster.fresh_schema(), ..PostgresOptions::default() };
//! let backend = PostgresBackend::connect_with(cluster.url(), options).await?;
//! # let _ = backend; Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming a server to use instead of starting one.
pub const URL_VARIABLE: &str = "DURABLE_TEST_POSTGRES_URL";

/// What to run when PostgreSQL is missing.
pub const INSTALL_COMMAND: &str = "apt-get install -y postgresql";

/// A PostgreSQL server for tests. See the [module docs](self).
#[derive(Debug)]
pub struct TestCluster {
    url: String,
    /// The cluster's directory, if this process started it.
    dir: Option<PathBuf>,
    /// How to run `pg_ctl` on it, if this process started it.
    control: Option<Control>,
    /// Held open for the life of the process: the watchdog stops the
    /// server when it closes.
    _watchdog: Option<Mutex<(Child, ChildStdin)>>,
}

/// What running `pg_ctl` on a cluster this process started takes.
#[derive(Debug)]
struct Control {
    bin: PathBuf,
    run_as: Option<String>,
    data: PathBuf,
    log: PathBuf,
}

impl Control {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }
}

static SHARED: OnceLock<TestCluster> = OnceLock::new();
static SCHEMAS: AtomicU64 = AtomicU64::new(0);

impl TestCluster {
    /// The server of this process, started on first use. Panics, saying
    /// why and what to do, if none can be had.
    pub fn shared() -> &'static TestCluster {
        SHARED.get_or_init(|| match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.is_empty() => TestCluster {
                url,
                dir: None,
                control: None,
                _watchdog: None,
            },
            _ => match TestCluster::start() {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            },
        })
    }

    /// The URL to connect to (database `postgres`, user `postgres`, no
    /// password, on the loopback interface).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster's directory (data, socket and log), if this process
    /// started it.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Restarts the server (`pg_ctl restart -m fast`: every session is
    /// ended, then the server starts again on the same port), waiting
    /// until it accepts connections again. Only a cluster this process
    /// started can be restarted.
    pub fn restart(&self) -> Result<(), String> {
        let control = self.control.as_ref().ok_or_else(|| {
            format!("the server named by {URL_VARIABLE} was not started by the tests and is not restarted by them")
        })?;
        let out = control
            .command("pg_ctl")
            .arg("-D")
            .arg(&control.data)
            .arg("-l")
            .arg(&control.log)
            .args(["-w", "-t", "60", "-m", "fast", "restart"])
            .current_dir(control.data.parent().unwrap_or(&control.data))
            .output()
            .map_err(|e| format!("running pg_ctl failed: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl restart failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The operating-system user the server runs as, if this process
    /// started it as another user (as root it runs as `postgres` or
    /// `nobody`); files the server must read or write belong to it.
    pub fn server_user(&self) -> Option<&str> {
        self.control.as_ref()?.run_as.as_deref()
    }

    /// A schema name no other test of this or another process uses.
    pub fn fresh_schema(&self) -> String {
        let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
        let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
        format!("t{}_{n}_{random}", std::process::id())
    }

    /// Starts a server of its own (not the shared one) with TLS on
    /// (`ssl=on`), presenting the certificate `cert_pem` with the private
    /// key `key_pem`; it takes plain connections too. Stopped and removed
    /// when the process ends, like the shared one. Fails, saying why, if
    /// PostgreSQL is missing or does not start.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<TestCluster, String> {
        TestCluster::start_with(Some((cert_pem, key_pem)))
    }

    fn start() -> Result<TestCluster, String> {
        TestCluster::start_with(None)
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<TestCluster, String> {
        let bin = find_bin_dir(
            std::env::var_os("PATH").as_deref(),
            Path::new("/usr/lib/postgresql"),
        )
        .ok_or_else(missing_message)?;
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!(
            "durable-pg-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("creating {} failed: {e}", dir.display()))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).map_err(|e| {
                format!(
                    "handing {} to user {} failed: {e}",
                    dir.display(),
                    user.name
                )
            })?;
        }
        let data = dir.join("data");
        let command = |program: &str| {
            let path = bin.join(program);
            match &run_as {
                Some(user) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", &user.name, "--"]).arg(path);
                    c
                }
                None => Command::new(path),
            }
        };
        let out = command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("running initdb from {} failed: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut server_options = String::new();
        if let Some((cert, key)) = tls {
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, pem)
                    .map_err(|e| format!("writing {} failed: {e}", path.display()))?;
                // The server refuses a key others can read.
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .map_err(|e| format!("restricting {} failed: {e}", path.display()))?;
                if let Some(user) = &run_as {
                    std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).map_err(
                        |e| format!("handing {} to {} failed: {e}", path.display(), user.name),
                    )?;
                }
            }
            server_options
                .push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        // The watchdog first, so the directory goes even if starting fails.
        let mut watchdog = Command::new("sh");
        let pg_ctl = bin.join("pg_ctl");
        let stop = match &run_as {
            Some(user) => format!("runuser -u {} -- ", user.name),
            None => String::new(),
        };
        watchdog
            .arg("-c")
            .arg(format!(
                "cat >/dev/null; {stop}'{}' -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}'",
                pg_ctl.display(),
                data.display(),
                dir.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so a Ctrl-C to the tests does not kill it
        // before it has stopped the server.
        std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
        let mut child = watchdog
            .spawn()
            .map_err(|e| format!("starting the cluster's watchdog failed: {e}"))?;
        let stdin = child.stdin.take().expect("the watchdog's stdin is piped");
        let log = dir.join("server.log");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let out = command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-F -k {} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=300{server_options}",
                    dir.display()
                ))
                .arg("start")
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("running pg_ctl failed: {e}"))?;
            if out.status.success() {
                return Ok(TestCluster {
                    url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    dir: Some(dir),
                    control: Some(Control {
                        bin,
                        run_as: run_as.map(|u| u.name),
                        data,
                        log,
                    }),
                    _watchdog: Some(Mutex::new((child, stdin))),
                });
            }
            last_error = format!(
                "pg_ctl start failed ({}): {}{}\nserver log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Err(last_error)
    }
}

/// What a test run without PostgreSQL is told.
fn missing_message() -> String {
    format!(
        "PostgreSQL is not installed: the durable-postgres tests start a throwaway server \
         with initdb and pg_ctl, and found neither on PATH nor in /usr/lib/postgresql/*/bin. \
         Install it with `{INSTALL_COMMAND}` (Debian or Ubuntu; as root, after apt-get \
         update), or set {URL_VARIABLE} to the URL of a server to use"
    )
}

/// The directory holding `initdb` and `pg_ctl`: the first on `path`, else
/// the newest `<lib>/<version>/bin` (Debian's layout).
fn find_bin_dir(path: Option<&std::ffi::OsStr>, lib: &Path) -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(path) = path {
        for d in std::env::split_paths(path) {
            if has_both(&d) {
                return Some(d);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

struct User {
    name: String,
    uid: u32,
    gid: u32,
}

/// The user a root process runs the server as.
fn unprivileged_user() -> Result<User, String> {
    let id = |name: &str, flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        if !o.status.success() {
            return None;
        }
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    for name in ["postgres", "nobody"] {
        if let (Some(uid), Some(gid)) = (id(name, "-u"), id(name, "-g")) {
            return Ok(User {
                name: name.to_string(),
                uid,
                gid,
            });
        }
    }
    Err(
        "PostgreSQL refuses to run as root, and there is neither a `postgres` nor a `nobody` \
         user to run it as; create one (useradd postgres)"
            .to_string(),
    )
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("finding a free loopback port failed: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free loopback port failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("durable-pg-find-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn install(bin: &Path) {
        std::fs::create_dir_all(bin).unwrap();
        for tool in ["initdb", "pg_ctl"] {
            std::fs::write(bin.join(tool), "").unwrap();
        }
    }

    #[test]
    fn the_tools_are_found_on_path_or_in_the_newest_debian_version() {
        let d = scratch();
        let lib = d.join("lib");
        assert_eq!(find_bin_dir(None, &lib), None, "nothing installed");
        install(&lib.join("13").join("bin"));
        install(&lib.join("15").join("bin"));
        std::fs::create_dir_all(lib.join("16").join("bin")).unwrap(); // empty
        assert_eq!(find_bin_dir(None, &lib), Some(lib.join("15").join("bin")));
        let on_path = d.join("path-bin");
        install(&on_path);
        let path = std::env::join_paths([d.join("nothing"), on_path.clone()]).unwrap();
        assert_eq!(find_bin_dir(Some(&path), &lib), Some(on_path));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_installation_says_how_to_install_it() {
        let m = missing_message();
        assert!(m.contains("apt-get install -y postgresql"), "{m}");
        assert!(m.contains(URL_VARIABLE), "{m}");
    }
}

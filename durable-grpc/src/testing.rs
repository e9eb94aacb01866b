//! A Python peer for tests and benchmarks (feature `testing`): the
//! `durabletask` package's in-memory sidecar, and its client and worker, run
//! as child processes from a virtual environment made under the build
//! directory.
//!
//! The environment is made once (`python3 -m venv`, then `pip install` of
//! the pinned requirements in this crate's `tests/peer/requirements.txt`)
//! and reused; a lock directory keeps processes that start at the same time
//! from installing twice. If python3 or the package cannot be had, the
//! functions here panic with a message saying how to set them up: a test
//! that needs the peer fails, it is never skipped.
//!
//! The scripts are read from this crate's source directory
//! (`tests/peer/`), so this module works in a checkout of the workspace, not
//! from a published copy of the crate.
//!
//! ```no_run
//! use durable_grpc::testing::PeerServer;
//! use durable_grpc::{GrpcBackend, GrpcOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = PeerServer::start();
//! let backend = GrpcBackend::connect(GrpcOptions::new(server.endpoint())).await?;
//! // ... run a worker and a client on `backend` ...
//! drop(server); // stops the sidecar
//! # Ok(())
//! # }
//! ```
//!
//! A JavaScript peer too: [`js_node_modules`] installs the pinned
//! `@microsoft/durabletask-js` (`tests/peer/js/package.json`) once with
//! `npm install --prefix` under the build directory, and [`node_script`]
//! runs a script of `tests/peer/js` with the machine's node. Without node
//! or npm they panic saying how to install them.
//!
//! Environment variables: `DURABLE_TEST_PYTHON`, a python3 to use (as is if
//! it already has the package, else to make the virtual environment from);
//! `DURABLE_PEER_DIR`, where to put the environment and the peers' logs
//! (default: `tmp/py-peer` in the cargo target directory of the running
//! binary); `DURABLE_JS_PEER_DIR`, where the JavaScript packages go
//! (default: `tmp/js-peer` beside it).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The pinned Python requirements (durabletask and its gRPC runtime).
const REQUIREMENTS: &str = include_str!("../tests/peer/requirements.txt");

/// The directory of the peer scripts (`server.py`, `client.py`,
/// `worker.py`, ...): this crate's `tests/peer`.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("peer")
}

/// Where the virtual environment and the peers' logs live:
/// `DURABLE_PEER_DIR` if set, else `tmp/py-peer` in the cargo target
/// directory the running binary was built in (found by its `CACHEDIR.TAG`),
/// else the workspace's `target/tmp/py-peer`.
pub fn work_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DURABLE_PEER_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("tmp").join("py-peer")
}

/// How to get the peer working, appended to every setup failure.
pub const SETUP_HINT: &str =
    "the gRPC peer (tests, examples, benchmarks) needs python3 (3.10 or later) with the venv module, and \
access to PyPI to install the pinned `durabletask` package (tests/peer/requirements.txt) into a \
virtual environment under target/. Install python3 and python3-venv (e.g. `apt-get install \
python3 python3-venv`), or set DURABLE_TEST_PYTHON to a python3 that has them; offline, set \
DURABLE_TEST_PYTHON to a python3 where `pip install -r durable-grpc/tests/peer/requirements.txt` \
was already done";

/// The python that runs the peer, set up once per process (and installed
/// once per build directory).
///
/// # Panics
///
/// If python3 or the pinned package cannot be had; the message says how to
/// set them up.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| match setup() {
        Ok(p) => p,
        Err(e) => panic!("cannot set up the Python peer: {e}\n\nhow to fix: {SETUP_HINT}"),
    })
}

fn setup() -> Result<PathBuf, String> {
    // A python that already has the package (e.g. offline) is used as is.
    if let Ok(given) = std::env::var("DURABLE_TEST_PYTHON") {
        let has_package = Command::new(&given)
            .args(["-c", "import durabletask.testing, durabletask.worker"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if has_package {
            return Ok(PathBuf::from(given));
        }
    }
    let dir = work_dir();
    let venv = dir.join("venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!(".installed-{:016x}", fingerprint(REQUIREMENTS)));
    if marker.exists() {
        return Ok(python);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _lock = DirLock::acquire(&dir.join("install.lock"), Duration::from_secs(600))?;
    if marker.exists() {
        return Ok(python);
    }
    let base = std::env::var("DURABLE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    if !python.exists() {
        run(
            Command::new(&base)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            &format!("`{base} -m venv` (is python3 with the venv module installed?)"),
        )?;
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(peer_dir().join("requirements.txt")),
        "`pip install -r tests/peer/requirements.txt` (is PyPI reachable?)",
    )?;
    run(
        Command::new(&python).args(["-c", "import durabletask.testing, durabletask.worker"]),
        "importing durabletask after installing it",
    )?;
    fs::write(&marker, REQUIREMENTS)
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    Ok(python)
}

fn fingerprint(s: &str) -> u64 {
    // FNV-1a: stable across runs and toolchains, unlike DefaultHasher.
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run it: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A lock between processes: a directory created atomically. A lock older
/// than `stale` was left by a process that died and is taken over.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path, stale: Duration) -> Result<DirLock, String> {
        let deadline = Instant::now() + stale + Duration::from_secs(60);
        loop {
            match fs::create_dir(path) {
                Ok(()) => return Ok(DirLock(path.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > stale) {
                        let _ = fs::remove_dir(path);
                        continue;
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "waited too long for another test process to install the Python \
                             peer (lock {}); remove it if no test is running",
                            path.display()
                        ));
                    }
                    // Another process is installing; poll until it is done.
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("cannot create lock {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// The JavaScript peer's pinned `package.json` (`@microsoft/durabletask-js`).
const JS_PACKAGE: &str = include_str!("../tests/peer/js/package.json");

/// How to get the JavaScript peer working, appended to its setup failures.
pub const JS_SETUP_HINT: &str =
    "the JavaScript peer (tests of the JavaScript Durable Task SDK on durable serve) needs node \
(20 or later) and npm on PATH, and access to the npm registry to install the pinned \
`@microsoft/durabletask-js` package (tests/peer/js/package.json) under target/. Install them \
(e.g. `apt-get install nodejs npm`), or set DURABLE_JS_PEER_DIR to a directory where \
`npm install` of that package.json was already done (offline)";

/// The directory of the JavaScript peer scripts: this crate's
/// `tests/peer/js`.
pub fn js_peer_dir() -> PathBuf {
    peer_dir().join("js")
}

/// Where the JavaScript peer's packages are installed: `DURABLE_JS_PEER_DIR`
/// if set, else `js-peer` beside the Python peer's [`work_dir`].
pub fn js_work_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DURABLE_JS_PEER_DIR") {
        return PathBuf::from(dir);
    }
    work_dir().with_file_name("js-peer")
}

/// The `node_modules` directory holding the pinned JavaScript Durable Task
/// SDK, installed once per build directory (`npm install --prefix`) and
/// reused.
///
/// # Panics
///
/// If node, npm or the package cannot be had; the message says how to set
/// them up.
pub fn js_node_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| match js_setup() {
        Ok(p) => p,
        Err(e) => panic!("cannot set up the JavaScript peer: {e}\n\nhow to fix: {JS_SETUP_HINT}"),
    })
}

fn js_setup() -> Result<PathBuf, String> {
    let dir = js_work_dir();
    let modules = dir.join("node_modules");
    let marker = dir.join(format!(".installed-{:016x}", fingerprint(JS_PACKAGE)));
    let check = |what: &str| {
        run(
            Command::new("node")
                .env("NODE_PATH", &modules)
                .args(["-e", "require('@microsoft/durabletask-js')"]),
            what,
        )
    };
    if marker.exists() {
        return check("loading @microsoft/durabletask-js with node (is node on PATH?)")
            .map(|()| modules);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _lock = DirLock::acquire(&dir.join("install.lock"), Duration::from_secs(600))?;
    if !marker.exists() {
        fs::write(dir.join("package.json"), JS_PACKAGE)
            .map_err(|e| format!("cannot write {}: {e}", dir.join("package.json").display()))?;
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&dir),
            "`npm install` of tests/peer/js/package.json (are node and npm installed, the npm \
             registry reachable?)",
        )?;
        check("loading @microsoft/durabletask-js after installing it")?;
        fs::write(&marker, JS_PACKAGE)
            .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    }
    Ok(modules)
}

/// A `node` command running `script` (a file of [`js_peer_dir`]) with
/// `args`, able to load the pinned JavaScript SDK; stdin is null, stdout and
/// stderr are piped.
///
/// # Panics
///
/// As [`js_node_modules`].
pub fn node_script(script: &str, args: &[&str]) -> Command {
    let modules = js_node_modules();
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", modules)
        .arg(js_peer_dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A free loopback port (another process could take it before we use it;
/// starting a server retries with a new one if so).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local address").port()
}

/// Polls until `addr` accepts TCP connections.
///
/// # Panics
///
/// After `timeout`, naming `what`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not accept connections on {addr} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child python process that is killed when dropped. Its stdin is kept
/// open: the peer scripts exit when it closes, so a test process that dies
/// does not leave servers behind.
pub struct PyProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    name: String,
}

impl PyProcess {
    /// Starts `script` (a file in [`peer_dir`]) with `args`.
    ///
    /// # Panics
    ///
    /// If the Python peer cannot be set up or the script cannot start.
    pub fn spawn(script: &str, args: &[&str]) -> PyProcess {
        PyProcess::spawn_path(&peer_dir().join(script), args)
    }

    /// Starts the Python script at `path` with `args`, under the peer's
    /// python (so it can import `durabletask`). Its stderr goes to a log
    /// file under [`work_dir`]; its stdout is read line by line.
    ///
    /// # Panics
    ///
    /// If the Python peer cannot be set up or the script cannot start.
    pub fn spawn_path(path: &Path, args: &[&str]) -> PyProcess {
        let script = path.file_name().map_or_else(
            || "script".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let script = script.as_str();
        let python = python();
        let logs = work_dir().join("logs");
        fs::create_dir_all(&logs).expect("create the peer log directory");
        let log = logs.join(format!(
            "{}-{}-{}.log",
            script.trim_end_matches(".py"),
            std::process::id(),
            free_port()
        ));
        let stderr = fs::File::create(&log).expect("create a peer log file");
        let mut child = Command::new(python)
            .arg(path)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}\n\nhow to fix: {SETUP_HINT}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        PyProcess {
            child,
            stdin,
            lines,
            log,
            name: script.to_string(),
        }
    }

    /// The next line the script printed, waiting at most `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<String, String> {
        self.lines.recv_timeout(timeout).map_err(|e| {
            let status = self.child.try_wait().ok().flatten();
            format!(
                "{} printed nothing more within {timeout:?} ({e}; exit status {status:?}); its log:\n{}",
                self.name,
                self.log_text()
            )
        })
    }

    /// Waits for a line starting with `prefix` and returns the rest of it.
    ///
    /// # Panics
    ///
    /// If no such line comes within `timeout`, with the script's log.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .next_line(left)
                .unwrap_or_else(|e| panic!("waiting for \"{prefix}\" from {}: {e}", self.name));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Writes a line to the script's stdin.
    pub fn send_line(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// What the script wrote to stderr so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits (bounded) for the process to exit; returns whether it succeeded.
    ///
    /// # Panics
    ///
    /// If it is still running after `timeout`, with its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python package's in-memory sidecar on a loopback port.
pub struct PeerServer {
    process: PyProcess,
    port: u16,
}

impl PeerServer {
    /// Starts a server on a free port.
    ///
    /// # Panics
    ///
    /// If the Python peer cannot be set up or the server does not start
    /// (after a few tries on other ports).
    pub fn start() -> PeerServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            match PeerServer::start_on(free_port()) {
                Ok(s) => return s,
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start the Python peer server: {last_error}")
    }

    /// Starts a server on `port` (e.g. again on the port of one that was
    /// stopped, to simulate a sidecar restart).
    ///
    /// # Errors
    ///
    /// If the server does not say it is ready (e.g. the port is taken).
    pub fn start_on(port: u16) -> Result<PeerServer, String> {
        let mut process = PyProcess::spawn("server.py", &[&port.to_string()]);
        let line = process.next_line(Duration::from_secs(60))?;
        if line.trim() != format!("READY {port}") {
            return Err(format!(
                "server.py said \"{line}\" instead of READY; its log:\n{}",
                process.log_text()
            ));
        }
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(30),
            "the Python peer server",
        );
        Ok(PeerServer { process, port })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `host:port`, as the Python SDK takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (all its state is lost, as in a sidecar crash).
    pub fn stop(mut self) -> u16 {
        self.process.kill();
        self.port
    }

    /// What the server logged.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}

/// Polls `f` until it returns `Some`.
///
/// # Panics
///
/// After `timeout`, naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A [`GrpcBackend`](crate::GrpcBackend) that owns the Python server
/// it talks to, so the server stops when the last user of the backend lets
/// go of it (the conformance suite only keeps the backend).
pub struct PeerBackend {
    backend: crate::GrpcBackend,
    _server: std::sync::Mutex<PeerServer>,
}

impl PeerBackend {
    /// A fresh server and a backend on it.
    ///
    /// # Panics
    ///
    /// As [`PeerServer::start`].
    pub fn start() -> PeerBackend {
        let server = PeerServer::start();
        let backend = crate::GrpcBackend::new(crate::GrpcOptions::new(server.endpoint()))
            .expect("valid options");
        PeerBackend {
            backend,
            _server: std::sync::Mutex::new(server),
        }
    }
}

mod delegate {
    use super::PeerBackend;
    use durable_runtime::actions::OrchestratorResult;
    use durable_runtime::backend::*;
    use durable_runtime::history::HistoryEvent;
    use std::time::Duration;

    #[async_trait::async_trait]
    impl Backend for PeerBackend {
        async fn create_instance(&self, r: CreateInstanceRequest) -> Result<(), BackendError> {
            self.backend.create_instance(r).await
        }
        async fn get_instance(
            &self,
            id: &str,
            p: bool,
        ) -> Result<Option<InstanceMetadata>, BackendError> {
            self.backend.get_instance(id, p).await
        }
        async fn wait_for_instance(
            &self,
            id: &str,
            w: WaitFor,
            t: Duration,
        ) -> Result<InstanceMetadata, BackendError> {
            self.backend.wait_for_instance(id, w, t).await
        }
        async fn raise_event(
            &self,
            id: &str,
            name: &str,
            input: Option<String>,
        ) -> Result<(), BackendError> {
            self.backend.raise_event(id, name, input).await
        }
        async fn terminate(
            &self,
            id: &str,
            output: Option<String>,
            recursive: bool,
        ) -> Result<(), BackendError> {
            self.backend.terminate(id, output, recursive).await
        }
        async fn suspend(&self, id: &str, reason: Option<String>) -> Result<(), BackendError> {
            self.backend.suspend(id, reason).await
        }
        async fn resume(&self, id: &str, reason: Option<String>) -> Result<(), BackendError> {
            self.backend.resume(id, reason).await
        }
        async fn rewind(&self, id: &str, reason: Option<String>) -> Result<(), BackendError> {
            self.backend.rewind(id, reason).await
        }
        async fn purge(&self, t: PurgeTarget, recursive: bool) -> Result<usize, BackendError> {
            self.backend.purge(t, recursive).await
        }
        async fn query_instances(&self, q: InstanceQuery) -> Result<QueryPage, BackendError> {
            self.backend.query_instances(q).await
        }
        async fn get_history(&self, id: &str) -> Result<Vec<HistoryEvent>, BackendError> {
            self.backend.get_history(id).await
        }
        async fn next_orchestration_item(&self) -> Result<OrchestrationWorkItem, BackendError> {
            self.backend.next_orchestration_item().await
        }
        async fn complete_orchestration_episode(
            &self,
            item: OrchestrationWorkItem,
            result: OrchestratorResult,
        ) -> Result<Option<RecordedEpisode>, BackendError> {
            self.backend
                .complete_orchestration_episode(item, result)
                .await
        }
        async fn remove_idle_entity(
            &self,
            id: &str,
            execution_id: &str,
        ) -> Result<bool, BackendError> {
            self.backend.remove_idle_entity(id, execution_id).await
        }
        async fn clean_entity_storage(
            &self,
            remove_empty: bool,
            release_orphaned_locks: bool,
        ) -> Result<Option<(usize, usize)>, BackendError> {
            self.backend
                .clean_entity_storage(remove_empty, release_orphaned_locks)
                .await
        }
        async fn abandon_orchestration_item(
            &self,
            item: OrchestrationWorkItem,
        ) -> Result<(), BackendError> {
            self.backend.abandon_orchestration_item(item).await
        }
        async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError> {
            self.backend.next_activity_item().await
        }
        async fn complete_activity_item(
            &self,
            item: &ActivityWorkItem,
            outcome: durable_runtime::failure::TaskOutcome,
        ) -> Result<(), BackendError> {
            self.backend.complete_activity_item(item, outcome).await
        }
        async fn abandon_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
            self.backend.abandon_activity_item(item).await
        }
        async fn worker_started(&self) {
            self.backend.worker_started().await;
        }
        async fn worker_stopped(&self) {
            self.backend.worker_stopped().await;
        }
        fn activity_lease_renewal(&self) -> Option<Duration> {
            self.backend.activity_lease_renewal()
        }
        async fn renew_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
            self.backend.renew_activity_item(item).await
        }
    }
}

/// The protocol's generated messages and client (`TaskHubSidecarService`),
/// for tests that speak the wire directly: calls durable's
/// [`GrpcBackend`](crate::GrpcBackend) does not make (`CreateTaskHub`,
/// `DeleteTaskHub`, ...), malformed requests.
pub mod raw {
    pub use crate::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
    pub use crate::proto::*;
}

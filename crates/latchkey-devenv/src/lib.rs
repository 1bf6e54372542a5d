//! Real `redis-server` processes on free ports, in temporary directories,
//! killed when dropped: what `latchkey demo`, `latchkey bench` and the tests
//! run against when no Redis is given. Never port 6379: a Redis already running
//! there is left alone.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Whether `redis-server` is on PATH.
pub fn have_redis_server() -> bool {
    Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// What to do when there is no Redis to use.
pub const NO_REDIS: &str = "no Redis to use: install redis-server (Debian: `apt-get install -y redis-server`) \
     so the harness can start its own, or set REDIS_URL to a Redis it may use";

/// A loopback TCP port that is free now (for a listener a test starts).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// A port that is free now, whose cluster bus port (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One redis-server.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    url: String,
    dir: Option<tempfile::TempDir>,
    args: Vec<String>,
    child: Option<Child>,
    #[cfg(feature = "docker")]
    container: Option<testcontainers_modules::testcontainers::Container<testcontainers_modules::redis::Redis>>,
}

impl RedisServer {
    /// A fresh server with nothing persisted, or the shared `REDIS_URL` one
    /// when there is no redis-server binary.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A fresh server with extra configuration, e.g. `["--appendonly", "yes"]`
    /// (see [`RedisServer::try_start_with`] for where Redis comes from); panics
    /// with instructions when there is none.
    pub fn start_with(args: &[&str]) -> Self {
        Self::try_start_with(args).expect(NO_REDIS)
    }

    /// Like [`RedisServer::start_with`], but `None` instead of a panic.
    ///
    /// Where Redis comes from, in order: `redis-server` on PATH; Docker through
    /// testcontainers (with the `docker` feature); `REDIS_URL`. Only the first
    /// can be killed, restarted or configured with `args`.
    pub fn try_start_with(args: &[&str]) -> Option<Self> {
        if !have_redis_server() {
            #[cfg(feature = "docker")]
            if let Some(server) = Self::start_in_docker() {
                return Some(server);
            }
            let url = std::env::var("REDIS_URL").ok()?;
            return Some(Self::external(url));
        }
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::external(format!("redis://127.0.0.1:{port}"));
        server.port = port;
        server.dir = Some(dir);
        server.args = args.iter().map(|s| s.to_string()).collect();
        server.spawn();
        Some(server)
    }

    fn external(url: String) -> Self {
        Self {
            port: 0,
            url,
            dir: None,
            args: Vec::new(),
            child: None,
            #[cfg(feature = "docker")]
            container: None,
        }
    }

    #[cfg(feature = "docker")]
    fn start_in_docker() -> Option<Self> {
        use testcontainers_modules::testcontainers::runners::SyncRunner;
        let container = testcontainers_modules::redis::Redis::default().start().ok()?;
        let port = container.get_host_port_ipv4(6379).ok()?;
        let mut server = Self::external(format!("redis://127.0.0.1:{port}"));
        server.port = port;
        server.container = Some(container);
        Some(server)
    }

    fn spawn(&mut self) {
        let dir = self.dir.as_ref().expect("own server").path();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start redis-server"));
        wait_for_ping(self.port);
    }

    /// Whether this server is the harness's own (and so can be killed, paused...).
    pub fn is_own(&self) -> bool {
        self.dir.is_some()
    }

    fn require_own(&self, what: &str) {
        assert!(
            self.is_own(),
            "{what} needs a redis-server the harness starts itself (install redis-server); REDIS_URL is shared"
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (nothing is flushed beyond what fsync wrote).
    pub fn kill(&mut self) {
        self.require_own("killing Redis");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.require_own("restarting Redis");
        self.kill();
        self.spawn();
    }

    /// Stalls every client of this server for `d` (`CLIENT PAUSE ... ALL`).
    /// Only the harness's own server: never a Redis someone else uses.
    pub fn pause(&self, d: std::time::Duration) {
        self.require_own("pausing Redis");
        self.cli(&["CLIENT", "PAUSE", &d.as_millis().to_string(), "ALL"]);
    }

    /// Runs redis-cli against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli_at(&self.url, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `redis-cli -u URL args...`, returning stdout; panics on failure.
pub fn cli_at(url: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli").arg("-u").arg(url).args(args).output().expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output()
            // A server with a password answers NOAUTH: it is up all the same.
            .map(|o| {
                let out = String::from_utf8_lossy(&o.stdout);
                out.contains("PONG") || out.contains("NOAUTH")
            })
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "redis-server on port {port} did not answer PING within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A local Redis Cluster of three masters, no replicas.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`RedisCluster::start`], each node with these extra arguments
    /// (`--appendonly yes`, for one).
    pub fn start_with(args: &[&str]) -> Self {
        assert!(have_redis_server(), "the cluster test starts its own nodes: {NO_REDIS}");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let mut all = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ];
                all.extend_from_slice(args);
                RedisServer::start_with(&all)
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            while !n.cli(&["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster did not reach state ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    /// The seed URLs, comma-separated: the form `RedisConfig` takes for a cluster.
    pub fn url(&self) -> String {
        self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>().join(",")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, each to be stopped when dropped.
    pub fn into_nodes(self) -> Vec<RedisServer> {
        self.nodes
    }
}

//! Drives the real binaries: a concertd per test on 127.0.0.1:0, its log
//! read line by line so tests wait on what it says, never on the clock.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const CONCERTD: &str = env!("CARGO_BIN_EXE_concertd");
pub const CONCERT: &str = env!("CARGO_BIN_EXE_concert");
pub const CONCERTCTL: &str = env!("CARGO_BIN_EXE_concertctl");

/// Generous: only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Held while a test creates file descriptors a child must not inherit
/// (pty pairs are not opened close-on-exec) and while it spawns a daemon.
pub static SPAWN: Mutex<()> = Mutex::new(());

/// Marks a descriptor close-on-exec.
pub fn cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
    }
}

/// A pty pair, the daemon's side reached through the symlink `link` (so
/// the device can be removed and created again); neither side inherited
/// by a daemon.
pub fn pty_pair(link: &std::path::Path) -> (serialport::TTYPort, serialport::TTYPort) {
    use std::os::fd::AsRawFd;
    let (master, slave) = {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        let (m, s) = serialport::TTYPort::pair().expect("pty pair");
        cloexec(m.as_raw_fd());
        cloexec(s.as_raw_fd());
        (m, s)
    };
    let _ = std::fs::remove_file(link);
    let name = serialport::SerialPort::name(&slave).expect("pty name");
    std::os::unix::fs::symlink(name, link).unwrap();
    (master, slave)
}

/// A fresh directory for one test, under this process's own root
/// (`concertd-test-PID`), which is removed when the process exits, and
/// with it every test's files: a suite run again and again must not fill
/// the disk. Roots left by runs that were killed are removed by the next
/// run. `CONCERTD_KEEP_TEST_DIRS=1` keeps them, to look at after a failure.
pub fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| {
        sweep_dead_roots();
        let r = test_root(std::process::id());
        let _ = std::fs::remove_dir_all(&r);
        std::fs::create_dir_all(&r).unwrap();
        if std::env::var_os("CONCERTD_KEEP_TEST_DIRS").is_none() {
            extern "C" fn remove_root() {
                let _ = std::fs::remove_dir_all(test_root(std::process::id()));
            }
            // SAFETY: atexit(3) with a function that takes no argument.
            unsafe { libc::atexit(remove_root) };
        }
        r
    });
    let d = root.join(N.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn test_root(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("concertd-test-{pid}"))
}

/// Removes the roots of test processes that no longer run (and the flat
/// `concertd-test-PID-N` directories of older harnesses).
fn sweep_dead_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("concertd-test-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        let dead = pid
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        if dead {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The daemon's log, read line by line from its standard error. Lines are
/// numbered from the start of the process; a harness that logs a lot
/// (the stress suite) keeps only the last ones, the count of panics and
/// errors staying whole.
#[derive(Default)]
struct Log {
    lines: VecDeque<String>,
    /// Number of the first line kept.
    first: usize,
    closed: bool,
    panics: Vec<String>,
    errors: Vec<String>,
    error_count: usize,
}

/// How a daemon is started. `Daemon::start` and its kin fill it for the
/// tests; the benches set what they measure differently.
pub struct Spec {
    /// Configuration lines after the harness's own (later lines win).
    pub extra: String,
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where the configuration and journal go; a fresh temporary
    /// directory if None.
    pub dir: Option<PathBuf>,
    /// Left in place when the daemon is dropped, for a report to point at.
    pub keep_dir: bool,
    /// Most log lines kept; None keeps all.
    pub keep_lines: Option<usize>,
    /// The daemon is killed when the thread that spawned it ends, even by
    /// a signal: for a harness whose own death must not leave daemons.
    pub die_with_parent: bool,
    /// Log lines also go to our standard error.
    pub echo_log: bool,
}

impl Spec {
    pub fn new(extra: &str) -> Spec {
        Spec {
            extra: extra.to_string(),
            flags: vec!["-v".to_string()],
            env: Vec::new(),
            dir: None,
            keep_dir: false,
            keep_lines: None,
            die_with_parent: false,
            echo_log: false,
        }
    }

    pub fn flags(mut self, flags: &[&str]) -> Spec {
        self.flags = flags.iter().map(|f| f.to_string()).collect();
        self
    }
}

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<(Mutex<Log>, Condvar)>,
    pub dir: PathBuf,
    spec: Spec,
    /// Time from exec to `ready`, of the last spawn.
    pub started: Duration,
}

impl Daemon {
    /// Starts concertd with `listen 127.0.0.1:0`, `simulator-delay 0`,
    /// `control none` and the given extra configuration lines (later lines
    /// win; `@DIR@` in them is the daemon's directory).
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with(extra, &["-v"])
    }

    pub fn start_with(extra: &str, flags: &[&str]) -> Daemon {
        Daemon::start_env(extra, flags, &[])
    }

    pub fn start_env(extra: &str, flags: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut spec = Spec::new(extra).flags(flags);
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Daemon::launch(spec)
    }

    pub fn launch(mut spec: Spec) -> Daemon {
        let dir = match spec.dir.take() {
            Some(d) => {
                std::fs::create_dir_all(&d).unwrap();
                d
            }
            None => temp_dir(),
        };
        let mut d = Daemon {
            child: Command::new("true").spawn().unwrap(),
            addr: "127.0.0.1:1".parse().unwrap(),
            log: Arc::new((Mutex::new(Log::default()), Condvar::new())),
            dir,
            spec,
            started: Duration::ZERO,
        };
        let extra = d.spec.extra.clone();
        d.set_extra(&extra);
        d.spawn();
        d
    }

    /// Rewrites the configuration as at start, with other extra lines.
    pub fn set_extra(&mut self, extra: &str) {
        self.spec.extra = extra.to_string();
        // No control socket unless a test asks for one, in its directory.
        let extra = extra.replace("@DIR@", &self.dir.display().to_string());
        let text = format!(
            "listen 127.0.0.1:0\ncontrol none\n{}{extra}\n",
            self.base_config()
        );
        self.write_config(&text);
    }

    /// Starts (again) the daemon on the same configuration and journal,
    /// once the previous process is gone.
    pub fn spawn(&mut self) {
        let _ = self.child.wait();
        let mut cmd = Command::new(CONCERTD);
        cmd.arg("-d")
            .args(&self.spec.flags)
            .arg("-f")
            .arg(self.dir.join("concertd.conf"))
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        if self.spec.die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs in the
            // child between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let t0 = Instant::now();
        let mut child = {
            let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
            cmd.spawn().expect("spawn concertd")
        };
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let l2 = Arc::clone(&log);
        let (keep, echo) = (self.spec.keep_lines, self.spec.echo_log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("{line}");
                }
                let (m, c) = &*l2;
                let mut g = m.lock().unwrap();
                if line.contains("panicked") {
                    g.panics.push(line.clone());
                }
                if line.contains(" ERROR ") {
                    g.error_count += 1;
                    if g.errors.len() < 5 {
                        g.errors.push(line.clone());
                    }
                }
                g.lines.push_back(line);
                if keep.is_some_and(|k| g.lines.len() > k) {
                    g.lines.pop_front();
                    g.first += 1;
                }
                c.notify_all();
            }
            let (m, c) = &*l2;
            m.lock().unwrap().closed = true;
            c.notify_all();
        });
        self.child = child;
        self.log = log;
        self.wait_log("INFO  ready");
        self.started = t0.elapsed();
        let line = self.wait_log("listening on ");
        let addr = line.rsplit("listening on ").next().unwrap().trim();
        self.addr = addr.parse().expect("bound address");
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to end; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// The configuration lines every test daemon has, but `listen`.
    pub fn base_config(&self) -> String {
        format!(
            "simulator-delay 0\njournal {}\n",
            self.dir.join("journal").display()
        )
    }

    /// The control socket `control @DIR@/control.sock` makes.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// concertctl on `control_socket()`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let sock = self.control_socket();
        let mut a = vec!["-s", sock.to_str().unwrap()];
        a.extend_from_slice(args);
        run(CONCERTCTL, &a)
    }

    /// Replaces the configuration file (the daemon reads it on reload).
    pub fn write_config(&self, text: &str) {
        let path = self.dir.join("concertd.conf");
        let tmp = self.dir.join("concertd.conf.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    pub fn journal(&self) -> String {
        std::fs::read_to_string(self.dir.join("journal")).unwrap_or_default()
    }

    /// Waits until a log line contains `pat`; returns the first such line.
    pub fn wait_log(&self, pat: &str) -> String {
        self.wait_log_n(pat, 1)
    }

    /// Waits until `n` log lines contain `pat`; returns the n-th.
    pub fn wait_log_n(&self, pat: &str, n: usize) -> String {
        let (m, c) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut g = m.lock().unwrap();
        loop {
            let hits: Vec<&String> = g.lines.iter().filter(|l| l.contains(pat)).collect();
            if hits.len() >= n {
                return hits[n - 1].clone();
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                let log = g.lines.iter().cloned().collect::<Vec<_>>().join("\n");
                drop(g);
                panic!("no log line with {pat:?} (x{n}); log:\n{log}");
            }
            g = c.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn log_text(&self) -> String {
        let g = self.log.0.lock().unwrap();
        g.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub fn concert(&self, args: &[&str]) -> Output {
        Command::new(CONCERT)
            .args(["-p", &self.port()])
            .args(args)
            .output()
            .expect("run concert")
    }
}

/// What the benches read of a daemon (tests wait on its log instead).
#[allow(dead_code)]
impl Daemon {
    /// SIGKILL, and the process reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Number of the next log line, for `wait_log_since`.
    pub fn mark(&self) -> usize {
        let g = self.log.0.lock().unwrap();
        g.first + g.lines.len()
    }

    /// The first line from line number `since` on that contains `pat`;
    /// None if the daemon ends or PATIENCE passes first.
    pub fn wait_log_since(&self, since: usize, pat: &str) -> Option<String> {
        let (m, c) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut g = m.lock().unwrap();
        let mut next = since;
        loop {
            let from = next.max(g.first) - g.first;
            if let Some(l) = g.lines.iter().skip(from).find(|l| l.contains(pat)) {
                return Some(l.clone());
            }
            next = g.first + g.lines.len();
            let now = Instant::now();
            if g.closed || now >= deadline {
                return None;
            }
            g = c.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// The last `n` log lines kept.
    pub fn log_tail(&self, n: usize) -> String {
        let g = self.log.0.lock().unwrap();
        let skip = g.lines.len().saturating_sub(n);
        g.lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether a line from line number `since` on contains `pat`, now.
    pub fn log_has_since(&self, since: usize, pat: &str) -> bool {
        let g = self.log.0.lock().unwrap();
        let from = since.max(g.first) - g.first;
        g.lines.iter().skip(from).any(|l| l.contains(pat))
    }

    /// Log lines kept that contain `pat`.
    pub fn count_log(&self, pat: &str) -> usize {
        let g = self.log.0.lock().unwrap();
        g.lines.iter().filter(|l| l.contains(pat)).count()
    }

    /// Every panic the daemon logged since its last spawn.
    pub fn panics(&self) -> Vec<String> {
        self.log.0.lock().unwrap().panics.clone()
    }

    /// How many ERROR lines since the last spawn, and the first five.
    pub fn errors(&self) -> (usize, Vec<String>) {
        let g = self.log.0.lock().unwrap();
        (g.error_count, g.errors.clone())
    }

    pub fn rss_kb(&self) -> Option<u64> {
        rss_kb(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.spec.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// VmRSS of a process in kB.
#[allow(dead_code)]
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the terminal closes.
pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    match s.read_to_end(&mut v) {
        Ok(_) => v,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => v,
        Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&v)),
    }
}

/// Sends a request and shuts the sending side, as most clients do.
pub fn exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    // A daemon that refuses the peer (allow-list, max-connections) may
    // have closed already: what it sent back, nothing, is the answer.
    if s.write_all(req).is_err() || s.shutdown(Shutdown::Write).is_err() {
        return Vec::new();
    }
    read_all(&mut s)
}

/// Sends a request and keeps the socket open, as the Odoo addon does.
pub fn exchange_open(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    if s.write_all(req).is_err() {
        return Vec::new();
    }
    read_all(&mut s)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Tags of a TLV answer, in order, with their values.
pub fn elements(answer: &[u8]) -> Vec<(String, String)> {
    let f = concert::wire::tlv::Frame::decode(answer)
        .unwrap_or_else(|e| panic!("answer {:?} does not decode: {e:?}", text(answer)));
    f.elements()
        .iter()
        .map(|e| (e.tag.to_string(), text(&e.value)))
        .collect()
}

pub fn get(answer: &[u8], tag: &str) -> Option<String> {
    elements(answer)
        .into_iter()
        .find(|(t, _)| t == tag)
        .map(|(_, v)| v)
}

pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Connects from a chosen loopback address (bind before connect), as a
/// second register on another address would.
pub fn connect_from(src: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = addr else {
        panic!("{addr}: IPv4 only")
    };
    let src: std::net::Ipv4Addr = src.parse().expect("an IPv4 address");
    let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it is handed to TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let local = sa(src, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sa(*dst.ip(), dst.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        s.set_read_timeout(Some(PATIENCE))?;
        Ok(s)
    }
}

/// One request from `src`, the answer read to the end.
pub fn exchange_from(src: &str, addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let Ok(mut s) = connect_from(src, addr) else {
        return Vec::new();
    };
    if s.write_all(req).is_err() || s.shutdown(Shutdown::Write).is_err() {
        return Vec::new();
    }
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

/// Raises the soft limit on open files to the hard one.
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on our own process with a plain struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Sets the soft RLIMIT_FSIZE of a process of ours; the previous limits.
/// A real write fault: the daemon's next write past `soft` bytes fails
/// with EFBIG (it ignores SIGXFSZ), for root too, while its log (a pipe)
/// goes on.
pub fn set_fsize(pid: u32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) reading into a local, on our own child.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    // Only the soft limit: an unprivileged process can raise it again up
    // to the hard one.
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// Gives a process of ours back the limits `set_fsize` returned.
pub fn restore_fsize(pid: u32, old: libc::rlimit) {
    // SAFETY: prlimit(2) on our own child, with a local.
    let r = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &old,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A `terminal exec` program that holds each transaction until the test
/// releases it, approving it then: a test that needs a transaction
/// running waits on the daemon's log and on this gate, never on a
/// simulated delay that a loaded machine may outrun.
pub struct Gate {
    dir: PathBuf,
}

impl Gate {
    pub fn new() -> Gate {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        let fifo = dir.join("gate");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) on a path this test owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let script = dir.join("held.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"held $CONCERT_AMOUNT\" >&2\nread go < '{}'\n\
                 echo AE=10\necho AC=424242\n",
                fifo.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Gate { dir }
    }

    /// The configuration line that makes the daemon use this gate.
    pub fn terminal(&self) -> String {
        format!("terminal exec {}\n", self.dir.join("held.sh").display())
    }

    /// Lets one held transaction end approved. Blocks until the program
    /// has opened the FIFO, so it may be called before the program runs.
    pub fn release(&self) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("gate"))
            .unwrap();
        f.write_all(b"go\n").unwrap();
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // A program still held (its daemon killed) gets end of file and
        // exits instead of waiting for ever; none held: ENXIO, nothing to do.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.dir.join("gate"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that nothing listens on, for as long as this lives: a
/// socket bound but not listening, so connections are refused and no
/// other test can take the port meanwhile.
pub struct ClosedPort {
    _fd: std::os::fd::OwnedFd,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use std::os::fd::FromRawFd;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: plain socket calls on a descriptor this function owns
        // from its creation (OwnedFd closes it).
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            let r = libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len);
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let mut l = len;
            let r = libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut l);
            assert_eq!(r, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                _fd: owned,
                addr: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, u16::from_be(sa.sin_port))),
            }
        }
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        ClosedPort::new()
    }
}

/// The address a daemon said it listens on in its log file, once said:
/// daemons listen on port 0, so no other test can take their port.
pub fn listening_in(log: &std::path::Path) -> std::net::SocketAddr {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("listening on ")) {
            let addr = l.rsplit("listening on ").next().unwrap().trim();
            return addr.parse().expect("bound address");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not listening: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A detached daemon, known by its pid file: killed when the test ends,
/// however it ends.
pub struct Reap(pub i32);

impl Reap {
    pub fn from_pid_file(path: &std::path::Path) -> Reap {
        Reap(
            std::fs::read_to_string(path)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        )
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// A daemon started the way an init script does (no `-d`): the parent
/// returns once the detached one listens; its pid file, log file and
/// journal are in `dir`.
pub struct Detached {
    pub conf: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
    pub journal: PathBuf,
}

impl Detached {
    pub fn new(dir: &std::path::Path) -> Detached {
        let d = Detached {
            conf: dir.join("concertd.conf"),
            pidfile: dir.join("concertd.pid"),
            log: dir.join("log"),
            journal: dir.join("journal"),
        };
        std::fs::write(
            &d.conf,
            format!(
                "listen 127.0.0.1:0\nsimulator-delay 0\ncontrol none\njournal {}\npidfile {}\n\
                 log-file {}\nsyslog-socket {}\n",
                d.journal.display(),
                d.pidfile.display(),
                d.log.display(),
                // No syslog: the log goes to the log-file.
                dir.join("no-syslog").display()
            ),
        )
        .unwrap();
        d
    }

    /// Runs `concertd -f CONF` to its parent's exit, with `env` set.
    pub fn start(&self, env: &[(&str, &std::path::Path)]) -> Output {
        let _g = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
        let mut c = Command::new(CONCERTD);
        c.arg("-f").arg(&self.conf).env_remove("RUST_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

/// Polls a condition that the daemon makes true without logging it.
pub fn loop_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "condition never met");
        std::thread::yield_now();
    }
}

/// The daemon's fdatasync(2) slowed down by strace's fault injection
/// (`-e inject=fdatasync:delay_enter=`), on every thread, as a slow disk
/// would, with no hook in concertd, until dropped. Needs strace (CI
/// installs it).
pub struct SlowDisk {
    strace: Child,
}

/// Why strace is not slowing the disk.
pub enum Unslowed {
    /// strace cannot be run at all.
    Missing(std::io::Error),
    /// It ran and could not attach (ptrace not permitted here): what it said.
    Refused(String),
}

impl SlowDisk {
    pub fn attach(pid: u32, delay: Duration) -> Result<SlowDisk, Unslowed> {
        let inject = format!("inject=fdatasync:delay_enter={}", delay.as_micros());
        let mut strace = Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e", "trace=fdatasync", "-e"])
            .arg(inject)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Unslowed::Missing)?;
        let Some(err) = strace.stderr.take() else {
            let _ = strace.kill();
            let _ = strace.wait();
            return Err(Unslowed::Refused("no standard error".into()));
        };
        let mut lines = BufReader::new(err).lines();
        // "strace: Process N attached with M threads" once every thread is
        // traced; an error and its exit otherwise.
        let mut said = Vec::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains(" attached") {
                // Drained, so that strace never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(SlowDisk { strace });
            }
            said.push(line);
        }
        let _ = strace.wait();
        Err(Unslowed::Refused(said.join("; ")))
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        // SIGTERM: strace detaches, releasing a call it holds.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.strace.id() as i32, libc::SIGTERM) };
        let _ = self.strace.wait();
    }
}

/// `concertctl web` on a daemon's control socket, at 127.0.0.1 on a port
/// of its choosing (read from its first line); killed when dropped.
#[allow(dead_code)]
pub struct Web {
    child: Child,
    pub addr: SocketAddr,
}

#[allow(dead_code)]
impl Web {
    pub fn start(d: &Daemon) -> Web {
        let sock = d.control_socket();
        let mut child = Command::new(CONCERTCTL)
            .args(["-s", sock.to_str().unwrap(), "web", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn concertctl web");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .split("http://")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        let addr = url.split('/').next().unwrap().parse().expect("address");
        Web { child, addr }
    }

    /// The status and the whole answer of a raw HTTP/1.1 request (its
    /// headers given whole, `Connection: close` added).
    pub fn request(&self, head: &str, body: &str) -> (u16, String) {
        let mut s = connect(self.addr);
        let req = format!(
            "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let answer = text(&read_all(&mut s));
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        (status, answer)
    }

    /// The page's token, read from the page as a browser gets it.
    pub fn token(&self) -> String {
        let (status, page) = self.request(&format!("GET / HTTP/1.1\r\nHost: {}", self.addr), "");
        assert_eq!(status, 200, "{page}");
        let at = page.find("concert-token\" content=\"").expect("token") + 24;
        page[at..at + 32].to_string()
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

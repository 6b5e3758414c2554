//! `concertctl web [ADDRESS]`: the terminal's face in a browser, served by
//! a process of its own that is only a client of the control socket (the
//! daemon stays as it is). HTTP is tiny_http's; the page is three files
//! built in (page.html, page.js, page.css), no build step.
//!
//! tiny_http reads the requests; the answers are written here (see
//! [`head`]).
//!
//! Safe by default (concertctl.8, WEB PAGE): loopback unless an address is
//! given; the Host header must name the address served (DNS rebinding);
//! every request that changes something is a POST carrying the process's
//! token, which only the page knows, from the page's own origin; every
//! answer forbids framing and inline script. Whoever may open the page
//! may do what it does: press the terminal's keys and read its journal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Method, Request, Server};

pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8889";

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The page's rules for the browser: its own script and style only, no
/// inline script, no framing, requests to itself only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Requests served at once (each on a thread); past it, 503.
const MAX_REQUESTS: usize = 32;
/// The longest command a page may send.
const MAX_BODY: usize = 256;
/// A quiet event stream sends a comment this often, to notice a page gone
/// (the second write after it went fails) and give its watcher back.
const KEEPALIVE: Duration = Duration::from_secs(3);
/// The words a page may begin a command with: the simulator's keys.
const KEYS: &[&str] = &["next", "hold", "decide", "press"];
/// What the page may read, by path.
const READS: &[(&str, &str)] = &[
    ("/text/show", "show 20"),
    ("/text/totals", "totals"),
    ("/text/status", "status"),
    ("/text/registers", "registers"),
];

/// Why the server did not start.
#[derive(Debug)]
enum NoServer {
    Address(String, String),
    Bind(SocketAddr, String),
    Token(std::io::Error),
}

impl std::fmt::Display for NoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoServer::Address(a, why) => write!(f, "{a:?} is not an address to listen on: {why}"),
            NoServer::Bind(a, why) => write!(f, "cannot listen on {a}: {why}"),
            NoServer::Token(e) => write!(f, "cannot read /dev/urandom for the token: {e}"),
        }
    }
}

/// What the handlers share.
struct Site {
    socket: PathBuf,
    token: String,
    hosts: Hosts,
}

/// The Host headers that name the address served.
struct Hosts {
    port: u16,
    /// `127.0.0.1:8889`, the address as given (`localhost:8889`)...
    names: Vec<String>,
    /// Listening on every address: any IP written as such (a rebinding
    /// page always comes by a name), with the port served.
    any_ip: bool,
}

impl Hosts {
    fn of(given: &str, bound: SocketAddr) -> Hosts {
        let port = bound.port();
        let host = match given.rsplit_once(':') {
            Some((h, _)) => h,
            None => given,
        };
        let mut names = vec![
            format!("{host}:{port}").to_ascii_lowercase(),
            SocketAddr::new(bound.ip(), port).to_string(),
        ];
        if bound.ip().is_loopback() {
            names.push(format!("localhost:{port}"));
        }
        if port == 80 {
            let bare: Vec<String> = names
                .iter()
                .filter_map(|n| n.strip_suffix(":80").map(str::to_string))
                .collect();
            names.extend(bare);
        }
        Hosts {
            port,
            names,
            any_ip: bound.ip().is_unspecified(),
        }
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.names.contains(&host) {
            return true;
        }
        self.any_ip
            && host
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.port() == self.port)
    }
}

/// Serves until killed; the exit code when it cannot start.
pub fn serve(socket: &Path, address: &str) -> ExitCode {
    match start(socket, address) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concertctl: web: {e}");
            ExitCode::from(super::REFUSED)
        }
    }
}

fn start(socket: &Path, address: &str) -> Result<(), NoServer> {
    let addr = address
        .to_socket_addrs()
        .map_err(|e| NoServer::Address(address.into(), e.to_string()))?
        .next()
        .ok_or_else(|| NoServer::Address(address.into(), "it resolves to nothing".into()))?;
    let server = Server::http(addr).map_err(|e| NoServer::Bind(addr, e.to_string()))?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let site = Arc::new(Site {
        socket: socket.to_path_buf(),
        token: token().map_err(NoServer::Token)?,
        hosts: Hosts::of(address, bound),
    });
    // The first line says where: a test or a script reads it.
    println!(
        "concertctl web: serving http://{bound}/ for concertd at {}",
        socket.display()
    );
    let _ = std::io::stdout().flush();
    if !bound.ip().is_loopback() {
        eprintln!(
            "concertctl web: {bound} is not loopback: whoever reaches it may press the \
             terminal's keys and read its journal (concertctl(8), WEB PAGE)"
        );
    }
    let busy = Arc::new(AtomicUsize::new(0));
    for req in server.incoming_requests() {
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_REQUESTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            send(req, text(503, "too many requests at once"));
            continue;
        }
        let (site, done) = (Arc::clone(&site), Arc::clone(&busy));
        let spawned = std::thread::Builder::new()
            .name("web".into())
            .spawn(move || {
                handle(req, &site);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

/// 32 hex digits from the kernel's random source: the page's key to
/// POST, new for each process.
fn token() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// An answer: its status, type and body.
struct Reply {
    status: u16,
    kind: &'static str,
    body: Vec<u8>,
}

fn text(status: u16, body: &str) -> Reply {
    let mut body = body.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    Reply {
        status,
        kind: "text/plain; charset=utf-8",
        body: body.into_bytes(),
    }
}

fn file(kind: &'static str, body: &str) -> Reply {
    Reply {
        status: 200,
        kind,
        body: body.as_bytes().to_vec(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The head of every answer: its status, what guards the page, and
/// `Connection: close`. tiny_http parses the requests; the answers are
/// written here because tiny_http never closes a kept-alive connection,
/// and each holds one of its threads: a browser's burst of new
/// connections can then wait in its queue for one to close (minutes),
/// which the page saw as a load that never ends.
fn head(status: u16, kind: &str, length: Option<usize>) -> String {
    let length = length
        .map(|n| format!("Content-Length: {n}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {kind}\r\n{length}Connection: close\r\n\
         Cache-Control: no-store\r\nContent-Security-Policy: {CSP}\r\n\
         X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\r\n",
        reason(status)
    )
}

/// Writes the answer; a client gone meanwhile loses only it.
fn send(req: Request, r: Reply) {
    let mut out = req.into_writer();
    let _ = out
        .write_all(head(r.status, r.kind, Some(r.body.len())).as_bytes())
        .and_then(|()| out.write_all(&r.body))
        .and_then(|()| out.flush());
}

fn get<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Tokens compared without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn handle(mut req: Request, site: &Site) {
    // Every request, a page's or a script's: a name rebound to this
    // address by a hostile page is not the address served.
    let host = get(&req, "Host").unwrap_or_default().to_string();
    if !site.hosts.allows(&host) {
        send(
            req,
            text(403, "forbidden: the Host header does not name this server"),
        );
        return;
    }
    let path = req.url().split('?').next().unwrap_or_default().to_string();
    match (req.method(), path.as_str()) {
        (Method::Get, "/") => {
            let page = PAGE.replace("{{TOKEN}}", &site.token);
            send(req, file("text/html; charset=utf-8", &page));
        }
        (Method::Get, "/page.js") => {
            send(req, file("text/javascript; charset=utf-8", SCRIPT));
        }
        (Method::Get, "/page.css") => {
            send(req, file("text/css; charset=utf-8", STYLE));
        }
        (Method::Get, "/events") => events(req, site),
        (Method::Get, p) => match READS.iter().find(|(at, _)| *at == p) {
            Some((_, command)) => {
                send(req, asked(site, command));
            }
            None => {
                send(req, text(404, "no such page"));
            }
        },
        (Method::Post, "/command") => {
            let answer = match allowed(&mut req, site, &host) {
                Ok(command) => asked(site, &command),
                Err(why) => text(403, &format!("forbidden: {why}")),
            };
            send(req, answer);
        }
        _ => {
            send(req, text(405, "not here"));
        }
    }
}

/// A POST's command, when it comes from the page: its own origin, the
/// token, one of the simulator's keys.
fn allowed(req: &mut Request, site: &Site, host: &str) -> Result<String, String> {
    let origin = get(req, "Origin").unwrap_or_default();
    if origin != format!("http://{host}") {
        return Err(format!("the Origin {origin:?} is not this page's"));
    }
    if !same(get(req, "X-Concert-Token").unwrap_or_default(), &site.token) {
        return Err("no token, or not this server's".into());
    }
    let mut body = Vec::new();
    req.as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the command: {e}"))?;
    if body.len() > MAX_BODY {
        return Err(format!("a command is at most {MAX_BODY} bytes"));
    }
    let line = String::from_utf8(body).map_err(|_| "the command is not UTF-8".to_string())?;
    if line.contains(['\n', '\r']) {
        return Err("one command, one line".into());
    }
    match line.split_ascii_whitespace().next() {
        Some(w) if KEYS.contains(&w) => Ok(line),
        _ => Err(format!("the page may send {} only", KEYS.join(", "))),
    }
}

/// Asks concertd: 200 with its answer, 409 with its refusal, 502 when it
/// cannot be reached.
fn asked(site: &Site, command: &str) -> Reply {
    match super::ask(&site.socket, command) {
        Ok(Ok(t)) => text(200, &t),
        Ok(Err(why)) => text(409, &why),
        Err(why) => text(502, &format!("cannot reach concertd: {why}")),
    }
}

/// The watch stream as server-sent events, one event per line, until the
/// page or concertd goes.
fn events(req: Request, site: &Site) {
    let watch = UnixStream::connect(&site.socket).and_then(|mut c| {
        c.write_all(b"watch\n")?;
        Ok(c)
    });
    let mut lines = match watch {
        Ok(c) => BufReader::new(c),
        Err(e) => {
            send(req, text(502, &format!("cannot reach concertd: {e}")));
            return;
        }
    };
    let mut first = Vec::new();
    let _ = lines
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)));
    if lines.read_until(b'\n', &mut first).is_err() || first != b"ok\n" {
        let mut why = String::new();
        let _ = lines.read_to_string(&mut why);
        send(req, text(503, &format!("concertd refused to watch: {why}")));
        return;
    }
    let _ = lines.get_ref().set_read_timeout(Some(KEEPALIVE));
    let mut out = req.into_writer();
    // No length: the body ends when the connection does, each event
    // flushed as it comes.
    let head = head(200, "text/event-stream; charset=utf-8", None);
    if out
        .write_all(format!("{head}retry: 2000\n\n").as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return;
    }
    let mut line = Vec::new();
    loop {
        let sent = match lines.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {
                let l = String::from_utf8_lossy(&line).trim_end().to_string();
                line.clear();
                out.write_all(format!("data: {l}\n\n").as_bytes())
            }
            Ok(_) => return,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                out.write_all(b": quiet\n\n")
            }
            Err(_) => return,
        };
        if sent.and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_address_served() {
        let h = Hosts::of("127.0.0.1:0", "127.0.0.1:8890".parse().unwrap());
        assert!(h.allows("127.0.0.1:8890"));
        assert!(h.allows("localhost:8890"));
        assert!(!h.allows("evil.example:8890"));
        assert!(!h.allows("127.0.0.1:8891"));
        assert!(!h.allows(""));
        let any = Hosts::of("0.0.0.0:8889", "0.0.0.0:8889".parse().unwrap());
        assert!(any.allows("192.168.1.5:8889"));
        assert!(any.allows("[fe80::1]:8889"));
        assert!(!any.allows("rebound.example:8889"));
        assert!(!any.allows("192.168.1.5:80"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "abc"));
        let t = token().unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, token().unwrap());
    }
}

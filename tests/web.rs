//! `concertctl web`: its safety rules, through the real binaries (the
//! page in a real browser is tests/browser.rs).

use crate::util::*;

const CONTROL: &str = "control @DIR@/control.sock\n";

fn held(d: &Daemon) -> String {
    let o = d.ctl(&["status"]);
    stdout(&o)
        .lines()
        .find(|l| l.starts_with("hold: "))
        .unwrap_or_else(|| panic!("{}", stdout(&o)))
        .to_string()
}

#[test]
fn the_page_is_served_with_its_token_and_a_strict_policy() {
    let d = Daemon::start(CONTROL);
    let w = Web::start(&d);
    let (status, page) = w.request(&format!("GET / HTTP/1.1\r\nHost: {}", w.addr), "");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Content-Security-Policy: default-src 'none'; script-src 'self'"),
        "{page}"
    );
    assert!(page.contains("X-Frame-Options: DENY"), "{page}");
    assert!(!page.contains("<script>"), "inline script: {page}");
    let t = w.token();
    assert_eq!(t.len(), 32);
    assert!(t.bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
    let (status, js) = w.request(&format!("GET /page.js HTTP/1.1\r\nHost: {}", w.addr), "");
    assert_eq!(status, 200);
    assert!(js.contains("EventSource"), "{js}");
    // What the page reads is concertd's own answer.
    let (status, show) = w.request(&format!("GET /text/show HTTP/1.1\r\nHost: {}", w.addr), "");
    assert_eq!(status, 200, "{show}");
    assert!(show.contains("no transaction in the journal"), "{show}");
}

/// POST without the token, with another origin, with another Host: 403,
/// and the terminal is as it was; the same POST done right presses.
#[test]
fn a_foreign_request_cannot_press_a_key() {
    let d = Daemon::start(CONTROL);
    let w = Web::start(&d);
    let token = w.token();
    let host = w.addr.to_string();
    let origin = format!("http://{host}");
    let cases = [
        ("no token", format!("Host: {host}\r\nOrigin: {origin}")),
        (
            "another token",
            format!("Host: {host}\r\nOrigin: {origin}\r\nX-Concert-Token: {}", "0".repeat(32)),
        ),
        (
            "another origin",
            format!("Host: {host}\r\nOrigin: http://evil.example\r\nX-Concert-Token: {token}"),
        ),
        (
            "no origin",
            format!("Host: {host}\r\nX-Concert-Token: {token}"),
        ),
        (
            "a rebound name",
            format!(
                "Host: evil.example:{}\r\nOrigin: http://evil.example:{}\r\nX-Concert-Token: {token}",
                w.addr.port(),
                w.addr.port()
            ),
        ),
    ];
    assert_eq!(held(&d), "hold: off");
    for (what, headers) in &cases {
        let (status, answer) =
            w.request(&format!("POST /command HTTP/1.1\r\n{headers}"), "hold on");
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(held(&d), "hold: off", "{what} changed the terminal");
    }
    // A page with another Host cannot even be read (its token with it).
    let (status, _) = w.request("GET / HTTP/1.1\r\nHost: evil.example", "");
    assert_eq!(status, 403);
    // Only the simulator's keys, even with the token.
    let ok = format!("Host: {host}\r\nOrigin: {origin}\r\nX-Concert-Token: {token}");
    let (status, _) = w.request(&format!("POST /command HTTP/1.1\r\n{ok}"), "reload");
    assert_eq!(status, 403);
    let (status, answer) = w.request(&format!("POST /command HTTP/1.1\r\n{ok}"), "hold on");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(held(&d), "hold: on");
    // A key concertd refuses is said as such.
    let (status, answer) = w.request(&format!("POST /command HTTP/1.1\r\n{ok}"), "press red");
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer.contains("no simulated transaction is running"),
        "{answer}"
    );
}

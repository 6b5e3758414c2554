//! The terminal's page in a real browser: concertd, `concertctl web` and
//! the distribution's headless Chromium, driven over the DevTools
//! protocol. A payment from `concert` shows on the page (and on a page
//! opened while it waits), the page's red
//! key cancels it (AF06 at the register), and the page's choice for the
//! next transaction (refuse) is what the register gets next. A screenshot
//! of the page goes to the build directory (its path is printed).
//!
//! Without Chromium the test says so and how to get it, and passes:
//! `make test` says it too (see the Makefile).

#[allow(dead_code)]
mod util;

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::*;

const CONTROL: &str = "control @DIR@/control.sock\n";

/// Chromium as Debian installs it (or $CHROMIUM).
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// What a script says on the page, once `ready` holds for it (the page
/// updates from its event stream: this waits for that, not for a time).
fn wait_for(tab: &Tab, script: &str, ready: impl Fn(&str) -> bool, what: &str) -> String {
    // Generous: only a failure waits it out, and a loaded machine runs
    // Chromium slowly.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let v = tab.evaluate(script, false).expect("evaluate");
        last = v
            .value
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if ready(&last) {
            return last;
        }
        // Polling the page: each look is a round trip to the browser.
        std::thread::sleep(Duration::from_millis(50));
    }
    // What the page said and saw, to tell why.
    let page = tab
        .evaluate(
            "document.getElementById('said').textContent + '\\n---\\n' + \
             document.getElementById('events').textContent",
            false,
        )
        .ok()
        .and_then(|v| v.value)
        .unwrap_or_default();
    panic!("{what}: the page still says {last:?}; the page said and saw: {page}");
}

fn text_of(id: &str) -> String {
    format!("document.getElementById('{id}').textContent")
}

#[test]
fn the_page_shows_a_payment_cancels_it_and_refuses_the_next() {
    let Some(chrome) = chromium() else {
        eprintln!(
            "SKIPPED the browser test: Chromium not found; install it \
             (apt-get install -y chromium) or name it in $CHROMIUM"
        );
        return;
    };
    let d = Daemon::start(CONTROL);
    let web = Web::start(&d);
    let options = LaunchOptions::default_builder()
        .path(Some(chrome))
        .headless(true)
        // Root in CI and containers: Chromium's sandbox needs namespaces
        // that are not there.
        .sandbox(false)
        // A phone's screen.
        .window_size(Some((412, 1400)))
        .idle_browser_timeout(Duration::from_secs(60))
        .build()
        .expect("launch options");
    let browser = Browser::new(options).expect("start Chromium");
    let tab: Arc<Tab> = browser.new_tab().expect("a tab");
    // A loaded machine starts Chromium slowly; the page itself is quick.
    tab.set_default_timeout(Duration::from_secs(60));
    tab.navigate_to(&format!("http://{}/", web.addr))
        .expect("navigate")
        .wait_until_navigated()
        .expect("the page");
    // The page read the simulator's state: manual mode is off.
    wait_for(&tab, &text_of("hold-state"), |t| t == "off", "hold state");
    tab.find_element("#hold-on").unwrap().click().unwrap();
    wait_for(&tab, &text_of("hold-state"), |t| t == "on", "hold on");

    // A payment waits for a decision; the page shows its amount.
    let port = d.port();
    let pay = |amount: &'static str| {
        let port = port.clone();
        std::thread::spawn(move || run(CONCERT, &["-p", &port, "pay", amount]))
    };
    let paying = pay("12.34");
    let amount = wait_for(
        &tab,
        &text_of("screen-amount"),
        |t| t.contains("12,34 EUR"),
        "the amount",
    );
    assert_eq!(amount, "MONTANT 12,34 EUR");
    wait_for(
        &tab,
        "String(!document.getElementById('key-green').disabled)",
        |t| t == "true",
        "the green key, for the waiting transaction",
    );
    // A page opened now shows the waiting transaction at once.
    let other = browser.new_tab().expect("a second tab");
    other.set_default_timeout(Duration::from_secs(60));
    other
        .navigate_to(&format!("http://{}/", web.addr))
        .expect("navigate")
        .wait_until_navigated()
        .expect("the page again");
    wait_for(
        &other,
        &text_of("screen-amount"),
        |t| t == "MONTANT 12,34 EUR",
        "the waiting transaction on a page opened late",
    );
    other.close(false).expect("close the second tab");
    // The register's report card (`concertctl registers`) names it.
    wait_for(
        &tab,
        &text_of("registers"),
        |t| t.contains("register 01 at tcp 127.0.0.1"),
        "the paying register in the registers panel",
    );
    let shot = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the build directory")
        .join("web-screenshot.png");
    std::fs::write(&path, shot).expect("write the screenshot");
    println!("screenshot of the page: {}", path.display());
    eprintln!("screenshot of the page: {}", path.display());

    // The red key, pressed in the page.
    tab.find_element("#key-red").unwrap().click().unwrap();
    let o = paying.join().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("(AF 06)"), "{}", stdout(&o));
    wait_for(
        &tab,
        "document.getElementById('screen').dataset.outcome",
        |t| t == "AF06",
        "the cancel on the screen",
    );

    // The next one refused, chosen in the page.
    tab.evaluate(
        "document.getElementById('next-outcome').value = 'refuse'",
        false,
    )
    .unwrap();
    tab.find_element("#next-arm").unwrap().click().unwrap();
    wait_for(
        &tab,
        &text_of("next-state"),
        |t| t.starts_with("refuse"),
        "refuse armed",
    );
    let o = pay("5.00").join().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("refused (AF 04)"), "{}", stdout(&o));
    let screen = wait_for(
        &tab,
        &text_of("screen-amount"),
        |t| t == "PAIEMENT REFUSE",
        "the refusal on the screen",
    );
    assert_eq!(screen, "PAIEMENT REFUSE");
    // Both on the page's list of transactions, from the journal.
    wait_for(
        &tab,
        &text_of("show"),
        |t| {
            t.contains("debit 12.34 EUR: declined AF06")
                && t.contains("debit 5.00 EUR: declined AF04")
        },
        "the transaction list",
    );
}

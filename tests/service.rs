//! The Concert Service's own operations and tags (PayXpress, HiPay):
//! deferred debit, refunds by reference, PayXpert answer tags, e-receipts.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;

fn payment(cd: &str, amount: &str, extra: &str) -> String {
    format!(
        "CZ0040320CJ012247300123456CA00201CB{:03}{amount}CD001{cd}CE003978{extra}",
        amount.len()
    )
}

fn status() -> &'static [u8] {
    b"CZ0040320CJ012247300123456CA00201CD001T"
}

#[test]
fn a_deferred_debit_is_a_debit_in_every_way() {
    let d = Daemon::start("");
    // Approved by the simulator's amount table, with its ticket.
    let req = payment("7", "1000", "CK003100");
    let a = exchange(d.addr, req.as_bytes());
    assert!(
        text(&a).starts_with(&format!("{}AE00210AC006", payment("7", "1000", ""))),
        "{}",
        text(&a)
    );
    d.wait_log("deferred-debit 10.00 EUR register 01 from tcp");
    let (_, doc) = concert::ticket::decode_zt(get(&a, "ZT").unwrap().as_bytes()).unwrap();
    let doc = String::from_utf8_lossy(&doc).to_string();
    assert!(doc.contains("DEBIT DIFFERE"), "{doc}");
    // CD=T gives it again, byte for byte.
    assert_eq!(exchange(d.addr, status()), a);
    // A cancellation of the same amount undoes it, as it undoes a debit.
    let c = exchange(d.addr, payment("2", "1000", "").as_bytes());
    assert!(text(&c).contains("AE00210"), "{}", text(&c));
    // Refused by amount (..51 is AF04 in the table).
    let r = exchange(d.addr, payment("7", "1051", "").as_bytes());
    assert_eq!(
        text(&r),
        format!("{}AE00201AF00204", payment("7", "1051", ""))
    );
    assert!(
        d.journal().contains(&payment("7", "1051", "")),
        "{}",
        d.journal()
    );
    // `concert defer` sends it and names it.
    let o = d.concert(&["defer", "12.34"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("approved: deferred debit 12.34 EUR, register 01\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_deferred_debit_obeys_the_one_transaction_rule_and_reaches_exec_by_name() {
    let gate = Gate::new();
    let d = Daemon::start(&gate.terminal());
    let held = std::thread::spawn({
        let addr = d.addr;
        move || exchange(addr, payment("0", "700", "").as_bytes())
    });
    d.wait_log("held 700");
    let busy = exchange(d.addr, payment("7", "800", "").as_bytes());
    assert_eq!(text(&busy), format!("{}AE00201", payment("7", "800", "")));
    gate.release();
    assert!(text(&held.join().unwrap()).contains("AE00210"));

    let dir = temp_dir();
    let script = dir.join("pay.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nenv | grep '^CONCERT_OPERATION=' > \"$(dirname \"$0\")/op\"\necho AE=10\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = Daemon::start(&format!("terminal exec {}\n", script.display()));
    let a = exchange(e.addr, payment("7", "500", "").as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    assert_eq!(
        std::fs::read_to_string(dir.join("op")).unwrap(),
        "CONCERT_OPERATION=deferred-debit\n"
    );
}

#[test]
fn a_relay_forwards_a_deferred_debit_to_v3_and_refuses_it_toward_v2() {
    let up = Daemon::start("");
    let d = Daemon::start(&format!("terminal relay tcp {}\n", up.addr));
    let a = exchange(d.addr, payment("7", "1000", "").as_bytes());
    assert!(text(&a).contains("AE00210"), "{}", text(&a));
    up.wait_log("deferred-debit 10.00 EUR register 01 from tcp");

    // A V2 terminal has no deferred debit: AF12, and it is never called.
    let v2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let d = Daemon::start(&format!(
        "terminal relay tcp {} v2\n",
        v2.local_addr().unwrap()
    ));
    let a = exchange(d.addr, payment("7", "1000", "").as_bytes());
    assert_eq!(
        text(&a),
        format!("{}AE00201AF00212", payment("7", "1000", ""))
    );
    v2.set_nonblocking(true).unwrap();
    assert_eq!(
        v2.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

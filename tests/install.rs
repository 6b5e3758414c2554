//! `make install` and `make uninstall` into a staging directory.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn make(args: &[&str]) -> std::process::Output {
    let target = Path::new(CONCERTD).parent().unwrap();
    Command::new("make")
        .arg("-s")
        .args(args)
        .arg(format!("TARGET={}", target.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("make")
}

fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_and_uninstall_into_destdir() {
    let dest = temp_dir();
    let d = format!("DESTDIR={}", dest.display());
    let o = make(&["install", &d]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        files(&dest),
        [
            "etc/concertd.conf",
            "usr/local/bin/concert",
            "usr/local/lib/systemd/system/concertd.service",
            "usr/local/sbin/concertd",
            "usr/local/share/doc/concertd/concertd-pay.example",
            "usr/local/share/man/man1/concert.1",
            "usr/local/share/man/man5/concertd.conf.5",
            "usr/local/share/man/man8/concertd.8",
        ]
    );
    assert_eq!(mode(&dest.join("usr/local/sbin/concertd")), 0o755);
    assert_eq!(mode(&dest.join("usr/local/bin/concert")), 0o755);
    assert_eq!(
        mode(&dest.join("usr/local/share/man/man8/concertd.8")),
        0o644
    );
    assert_eq!(mode(&dest.join("etc/concertd.conf")), 0o644);
    let unit = std::fs::read_to_string(dest.join("usr/local/lib/systemd/system/concertd.service"))
        .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/sbin/concertd -d -f /etc/concertd.conf"),
        "{unit}"
    );
    assert!(!unit.contains("@SBINDIR@"), "{unit}");
    let o = make(&["uninstall", &d]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(files(&dest).is_empty(), "{:?}", files(&dest));
}

#[test]
fn install_keeps_an_existing_configuration() {
    let dest = temp_dir();
    std::fs::create_dir_all(dest.join("etc")).unwrap();
    std::fs::write(dest.join("etc/concertd.conf"), "# mine\n").unwrap();
    let d = format!("DESTDIR={}", dest.display());
    let o = make(&["install", &d, "PREFIX=/usr"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/concertd.conf")).unwrap(),
        "# mine\n"
    );
    let unit =
        std::fs::read_to_string(dest.join("usr/lib/systemd/system/concertd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/concertd -d"), "{unit}");
    let o = make(&["uninstall", &d, "PREFIX=/usr"]);
    assert!(o.status.success());
    assert_eq!(files(&dest), ["etc/concertd.conf"]);
}

//! The payment program of the exec runs: a shell script that keeps the
//! truth. It decides from the amount (the simulator's table, so that the
//! same plans mean the same on every backend), follows the contract of
//! concertd-exec.7 (ATTEMPTED=1 before money may move), and
//! appends its ledger line before it prints its outcome. The harness
//! arms a fault for the next transaction in the file `fault`.
//!
//! The gate that holds a transaction at the program is a FIFO of its
//! own, `gate-<CONCERT_ID>`, made by whichever of the program and the
//! harness comes first; the harness lets it go by writing a line into it
//! through a descriptor it keeps open, so that the line waits there for a
//! program that has not opened it yet: the release never waits for the
//! program and never misses it, however late either side is scheduled,
//! and a program killed at the gate leaves its line to nobody else.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct PayProgram {
    pub dir: PathBuf,
    /// The gates let go, each kept open until the run ends: a line
    /// written into a FIFO lasts only while a descriptor holds it open.
    released: std::sync::Mutex<Vec<std::fs::File>>,
}

const SCRIPT: &str = r#"#!/bin/sh
D='@DIR@'
f=
if [ -e "$D/fault" ]; then f=$(cat "$D/fault"); rm -f "$D/fault"; fi
echo ATTEMPTED=1
a=$CONCERT_AMOUNT
op=$CONCERT_OPERATION
r=$CONCERT_REGISTER
case "$op" in
debit|deferred-debit|credit|cancel) ;;
*) echo AE=01; echo AF=12; exit 0 ;;
esac
of=-
charged=$a
ok=yes
af=
case "$op" in
cancel)
	lid=; lamt=
	if [ -e "$D/last-$r" ]; then read lid lamt < "$D/last-$r"; fi
	if [ -z "$lid" ] || [ "$lamt" != "$a" ]; then ok=no; af=04; else of=$lid; fi ;;
*)
	case "$a" in
	*51) ok=no; af=04 ;;
	*52) ok=no; af=05 ;;
	*53) ok=no; af=06 ;;
	*55) ok=no; af=08 ;;
	*56) ok=no; af=02 ;;
	*57) if [ "$CONCERT_PARTIAL_OK" = 1 ]; then charged=$((a / 2)); else ok=no; af=04; fi ;;
	esac ;;
esac
if [ $ok = yes ]; then
	echo "performed $CONCERT_ID $op $r $charged ${CONCERT_REFUND_OF:--} $of $CONCERT_FRAME" >> "$D/ledger"
	case "$op" in
	debit|deferred-debit) echo "$CONCERT_ID $charged" > "$D/last-$r" ;;
	cancel) rm -f "$D/last-$r" ;;
	esac
else
	echo "declined $CONCERT_ID $op $r 0 ${CONCERT_REFUND_OF:--} - $CONCERT_FRAME" >> "$D/ledger"
fi
case "$f" in
die) kill -9 $$ ;;
slow) sleep 5 ;;
gate) g="$D/gate-$CONCERT_ID"; mkfifo "$g" 2>/dev/null; read go < "$g" ;;
esac
if [ $ok = yes ]; then
	case "$a" in
	# Charged, and the application itself does not know: unknown.
	*54) echo AE=01; echo AF=07; exit 0 ;;
	esac
	echo AE=10
	echo "AC=${CONCERT_ID#???????}"
	echo "AA=497010######0674"
	[ "$charged" != "$a" ] && echo "CB=$charged"
else
	echo AE=01
	echo "AF=$af"
fi
exit 0
"#;

impl PayProgram {
    pub fn new(dir: &Path) -> PayProgram {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("pay.sh");
        std::fs::write(&script, SCRIPT.replace("@DIR@", &dir.display().to_string())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        PayProgram {
            dir: dir.to_path_buf(),
            released: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn terminal(&self) -> String {
        format!("terminal exec {}\n", self.dir.join("pay.sh").display())
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// Arms a fault (die, slow, gate) for the next transaction.
    pub fn arm(&self, what: &str) {
        std::fs::write(self.dir.join("fault"), what).unwrap();
    }

    pub fn disarm(&self) {
        let _ = std::fs::remove_file(self.dir.join("fault"));
    }

    /// Lets the program of transaction `tx` held at its gate go on, now
    /// or whenever it reaches the gate (one whose concertd was killed
    /// prints to nobody). Never blocks: the FIFO is opened read-write,
    /// which Linux grants without a reader.
    pub fn release(&self, tx: u64) {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let fifo = self.dir.join(format!("gate-{tx}"));
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) on a path this harness owns; EEXIST (the
        // program made it first) is what the open below needs anyway.
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("the gate FIFO");
        f.write_all(b"go\n").expect("a line into the gate");
        self.released.lock().unwrap().push(f);
    }
}
